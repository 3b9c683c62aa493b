package failover

import (
	"strings"
	"testing"
	"time"
)

// Unanswered traffic behind which there is no fault (an application
// retrying a server that is down, a LAN client sending SYNs to dead hosts
// on purpose) starts rounds that all succeed. They must not come one per
// unanswered segment: at most about as many as the routine rounds. And once
// the false alarms stop, a silent death is caught at the next send again.
func TestUnansweredFalseAlarmsHeld(t *testing.T) {
	s := newSimWith(t, idleSettings())
	s.run(s.now.Add(20 * time.Second))
	clear(s.started)
	end := s.now.Add(10 * time.Minute)
	for s.now.Before(end) {
		// A segment every 100 ms, each unanswered 500 ms later (the watcher's bound).
		s.c.Unanswered("ethnet", s.now.Add(-500*time.Millisecond))
		s.run(s.now.Add(100 * time.Millisecond))
	}
	// Routine rounds every 15 s: 40 in 10 minutes; the held false alarms
	// at most as many again, and a few more while the hold grows.
	if got := s.started["ethnet"]; got > 90 {
		t.Fatalf("%d rounds in 10 minutes of unanswered traffic to a dead host on a healthy uplink (routine: 40)", got)
	}
	if s.routes.Selected != "ethnet" {
		t.Fatalf("switched to %q on false alarms", s.routes.Selected)
	}
	// While the false alarms go on, a real death is still caught within the
	// longest hold (15 s) and the rounds.
	s.healthy["ethnet"] = false
	dead := s.now
	for s.routes.Selected == "ethnet" && s.now.Sub(dead) < time.Minute {
		s.c.Unanswered("ethnet", s.now.Add(-500*time.Millisecond))
		s.run(s.now.Add(100 * time.Millisecond))
	}
	if took := s.now.Sub(dead); took > 18*time.Second {
		t.Fatalf("death amid false alarms switched after %v\n%s", took, strings.Join(s.log, "\n"))
	}
	// Back on Ethernet, quiet for a while: the next unanswered send is taken at once.
	s.healthy["ethnet"] = true
	s.until(time.Minute, "back on ethernet", func() bool { return s.routes.Selected == "ethnet" })
	s.run(s.now.Add(time.Minute + 5*time.Second)) // between two routine rounds
	s.healthy["ethnet"] = false
	sent := s.now
	s.run(s.now.Add(500 * time.Millisecond))
	s.c.Unanswered("ethnet", sent)
	s.run(sent.Add(3 * time.Second))
	if s.routes.Selected != "stanet" {
		t.Fatalf("after the false alarms stopped, no switch within 3 s of an unanswered send (now %v, selected %q, views %+v)\n%s", s.now, s.routes.Selected, s.c.Views()[0].Snapshot, strings.Join(s.log, "\n"))
	}
}
