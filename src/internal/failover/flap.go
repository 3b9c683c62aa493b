package failover

import (
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

// A default route that keeps going and coming (a box on the uplink's link sending RAs in its
// router's name with router lifetime 0, which the kernel obeys; a router whose RAs outlive
// their lifetime; a netifd restarting in a loop) takes the uplink down each time it stays away
// past RouteGrace, and the uplink is proven again within a second of its return: without a
// hold, connmgr failed back to it each time and away again (15 switches in 30 s of spoofed RAs
// at one a second). An uplink that lost its default route routeFlapLosses times within
// routeFlapWindow (carrier and address there) is not failed back to until fewer than that many
// losses fall in the window; it still carries traffic when nothing better is up. One loss (a
// DHCP renew slower than the grace, an admin's mistake) fails back as fast as ever.
const (
	routeFlapLosses = 2
	routeFlapWindow = 60 * time.Second
)

// noteRouteLoss records that transition tr, caused by snapshot d, took the uplink down for lack
// of its default route.
func (l *link) noteRouteLoss(now time.Time, tr uplink.Transition, d uplink.Device) {
	if !tr.From.Up() || tr.To.Up() || !holdRouteLoss(tr.From, d) {
		return
	}
	l.routeLosses = append(l.routeLosses, now)
	if n := len(l.routeLosses); n > routeFlapLosses {
		l.routeLosses = l.routeLosses[n-routeFlapLosses:]
	}
}

// flapHeldUntil is when the uplink's fail-back hold ends (zero: it is not held at now).
func (l *link) flapHeldUntil(now time.Time) time.Time {
	if len(l.routeLosses) < routeFlapLosses {
		return time.Time{}
	}
	end := l.routeLosses[len(l.routeLosses)-routeFlapLosses].Add(routeFlapWindow)
	if !now.Before(end) {
		return time.Time{}
	}
	return end
}
