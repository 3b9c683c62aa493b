package failover

import (
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

// idleSettings are the issue-13 defaults: an idle in-use uplink every
// 15 s, standbys every 10 minutes, cellular by its budgets.
func idleSettings() Settings {
	st := settings()
	st.Intervals = uplink.Intervals{InUse: 15 * time.Second, Standby: 10 * time.Minute, Failing: 250 * time.Millisecond, Cellular: 5 * time.Minute}
	for i := range st.Uplinks {
		st.Uplinks[i].ProbeCost = 565
	}
	st.Uplinks[2].ProbeBudget, st.Uplinks[2].ProbeBudgetStandby = 50_000, 1_000_000.0/720
	return st
}

func newSimWith(t *testing.T, st Settings) *sim {
	s := newSim(t)
	s.c.Configure(st)
	s.run(s.now.Add(time.Second))
	return s
}

// The hub sends on a silently dead in-use uplink: the unanswered segment
// starts the rounds at once, and the switch comes within 3 s of the send,
// where the idle rhythm alone would take up to 15 s more.
func TestUnansweredTrafficStartsRound(t *testing.T) {
	for _, offset := range []time.Duration{0, 3 * time.Second, 7 * time.Second, 14 * time.Second} {
		for _, evidence := range []bool{true, false} {
			s := newSimWith(t, idleSettings())
			s.run(s.now.Add(20*time.Second + offset))
			s.healthy["ethnet"] = false
			sent := s.now
			s.run(s.now.Add(500 * time.Millisecond)) // the watcher's bound
			if evidence {
				s.c.Unanswered("ethnet", sent)
			}
			s.run(sent.Add(3 * time.Second))
			switched := s.routes.Selected == "stanet"
			if evidence && !switched {
				t.Fatalf("offset %v: no switch within 3 s of the unanswered send\n%s", offset, strings.Join(s.log, "\n"))
			}
			if !evidence && switched && offset < 12*time.Second {
				t.Fatalf("offset %v: switched within 3 s without evidence: the idle rhythm is not 15 s", offset)
			}
		}
	}
}

// A round's own segments are no evidence: on a dead standby each round's
// SYN goes unanswered, and that must not start the next round at once.
func TestOwnProbeSegmentsIgnored(t *testing.T) {
	s := newSimWith(t, idleSettings())
	s.healthy["stanet"] = false
	s.until(15*time.Minute, "wifi failing", func() bool { return s.c.Views()[1].State == uplink.ItfUpSF })
	start, end := s.started["stanet"], s.now.Add(10*time.Second)
	for s.now.Before(end) {
		round, ok := s.pending["stanet"]
		if !ok {
			s.run(s.now.Add(10 * time.Millisecond))
			continue
		}
		s.run(round.done.Add(50 * time.Millisecond))
		s.c.Unanswered("stanet", round.start.Add(10*time.Millisecond))
	}
	// A dead standby is probed every second: 10 rounds in 10 s; rounds
	// started back to back (0.5 s timeout) would be about 18.
	if got := s.started["stanet"] - start; got > 11 {
		t.Fatalf("%d rounds on the dead standby in 10 s: its own segments started rounds", got)
	}
	// Real traffic after a round still counts.
	s.until(2*time.Second, "round over", func() bool { _, out := s.pending["stanet"]; return !out })
	s.run(s.now.Add(200 * time.Millisecond))
	s.c.Unanswered("stanet", s.now.Add(-50*time.Millisecond))
	if r, ok := s.pending["stanet"]; !ok || !r.start.Equal(s.now) {
		t.Fatal("traffic sent after the round, unanswered: no round at once")
	}
}

// Idle rhythm: the in-use Ethernet every 15 s, cellular in use within
// 50 KB an hour, cellular standby within 1 MB a month.
func TestIdleProbeRates(t *testing.T) {
	s := newSimWith(t, idleSettings())
	s.run(s.now.Add(time.Minute))
	clear(s.started)
	s.run(s.now.Add(time.Hour))
	if got := s.started["ethnet"]; got < 239 || got > 241 {
		t.Fatalf("in-use Ethernet: %d rounds in an hour, want 240 (every 15 s)", got)
	}
	if got := s.started["stanet"]; got > 7 {
		t.Fatalf("Wi-Fi standby: %d rounds in an hour", got)
	}
	if got := s.started["modemnet"] * 565; got > 1_000_000/720*2 {
		t.Fatalf("cellular standby: %d bytes of probes in an hour (%d a month), budget 1 MB a month", got, got*720)
	}
	v := s.c.Views()[2]
	if v.ProbeFloor < 24*time.Minute || v.ProbeBytes != v.ProbeRounds*565 {
		t.Fatalf("cellular standby view: floor %v, %d bytes for %d rounds", v.ProbeFloor, v.ProbeBytes, v.ProbeRounds)
	}

	// Only cellular left: in use, within 50 KB an hour.
	s.healthy["ethnet"], s.healthy["stanet"] = false, false
	s.until(time.Minute, "cellular in use", func() bool { return s.routes.Selected == "modemnet" })
	s.run(s.now.Add(5 * time.Minute))
	clear(s.started)
	s.run(s.now.Add(time.Hour))
	if got := s.started["modemnet"] * 565; got > 50_000 {
		t.Fatalf("cellular in use: %d bytes of probes in an hour, budget 50 KB", got)
	}
	if s.started["modemnet"] < 80 {
		t.Fatalf("cellular in use: %d rounds in an hour, want about 88 (the budget's rhythm)", s.started["modemnet"])
	}
}

// A standby probed every 10 minutes is proven afresh once the in-use
// uplink fails a round, before the failover goes to it.
func TestStandbyRecheckedWhenInUseSuspect(t *testing.T) {
	s := newSimWith(t, idleSettings())
	s.run(s.now.Add(2 * time.Minute))
	wifi := s.started["stanet"]
	s.healthy["ethnet"] = false
	s.c.Unanswered("ethnet", s.now.Add(-500*time.Millisecond))
	before := wifi // Wi-Fi's rounds until the switch (once in use, it is probed at once)
	s.until(3*time.Second, "switch to wifi", func() bool {
		if s.routes.Selected == "stanet" {
			return true
		}
		before = s.started["stanet"]
		return false
	})
	if before == wifi {
		t.Fatal("Wi-Fi standby not probed before the failover went to it")
	}
	if got := before - wifi; got > 1 {
		t.Fatalf("Wi-Fi standby probed %d times while Ethernet was suspect, want once", got)
	}
}

// Over its monthly limit, a cellular standby kept as last resort gets no
// routine rounds, and is still failed over to; with limit_action off it is
// not used at all.
func TestMonthlyLimit(t *testing.T) {
	for _, off := range []bool{false, true} {
		st := idleSettings()
		st.Uplinks[2].LimitOff = off
		s := newSimWith(t, st)
		s.c.SetLimited("modemnet", true)
		s.run(s.now.Add(time.Minute))
		clear(s.started)
		s.run(s.now.Add(3 * time.Hour))
		if got := s.started["modemnet"]; got != 0 {
			t.Fatalf("off=%v: cellular over its limit probed %d times in 3 h while standby", off, got)
		}
		if v := s.c.Views()[2]; !v.Limited || (v.State == uplink.ItfNotSuppSX) != off {
			t.Fatalf("off=%v: view %+v", off, v)
		}
		s.healthy["ethnet"], s.healthy["stanet"] = false, false
		s.c.Unanswered("ethnet", s.now.Add(-500*time.Millisecond))
		s.run(s.now.Add(time.Minute))
		if got := s.routes.Selected == "modemnet"; got == off {
			t.Fatalf("off=%v: everything else dead, selected %q", off, s.routes.Selected)
		}
		// A new month: the limit lifts.
		s.c.SetLimited("modemnet", false)
		s.until(10*time.Second, "cellular in use", func() bool { return s.routes.Selected == "modemnet" })
	}
}
