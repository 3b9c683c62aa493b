package daemon

import (
	"net/netip"
	"time"

	"github.com/afero/af-conn/internal/capture"
	"github.com/afero/af-conn/internal/uplink"
)

// sentBound is how long the far end may take to answer a segment the hub
// sent before the silence starts a probe round: well above a delayed ACK
// (40-200 ms) and a slow link's RTT, well within the 3 s in which a dead
// upstream must be left after the hub's next send.
const sentBound = 500 * time.Millisecond

// watchSent runs the sent-traffic watch (capture.WatchSent) beside an
// uplink's passive liveness of one family (key); the capture's stop
// function stops both.
func (u *uplinks) watchSent(key captureKey, dev string, prefixes []netip.Prefix) {
	name := key.name
	w, ok := u.net.(sentWatcher)
	if !ok {
		return // a test's fake network
	}
	closeSent, err := w.watchSent(capture.SentConfig{Device: dev, Prefixes: prefixes, Bound: sentBound, Period: capturePeriod,
		OnUnanswered: func(sent, _ time.Time) {
			select {
			case u.d.events <- unansweredEvent{fam: key.fam, name: name, sent: sent}:
			default: // the loop is busy: the next unanswered segment comes soon
			}
		}})
	if err != nil {
		u.d.log.Warn("unanswered traffic not watched; probes at the idle rhythm only", "network", name, "family", key.fam.String(), "err", err)
		return
	}
	stop := u.captures[key]
	u.captures[key] = func() {
		closeSent()
		stop()
	}
}

// sentWatcher is the kernel side of the sent-traffic watch (kernelNet).
type sentWatcher interface {
	watchSent(cfg capture.SentConfig) (stop func(), err error)
}

func (kernelNet) watchSent(cfg capture.SentConfig) (func(), error) {
	s, err := capture.WatchSent(cfg)
	if err != nil {
		return nil, err
	}
	return s.Close, nil
}

// unansweredEvent goes to the controller of the family the segment was of.
type unansweredEvent struct {
	fam  uplink.Family
	name string
	sent time.Time
}

func (e unansweredEvent) apply(d *Daemon) {
	if fc := d.uplinks.family(e.fam); fc != nil {
		fc.ctrl.Unanswered(e.name, e.sent)
	}
}
