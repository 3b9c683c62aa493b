package uplink

import (
	"testing"
	"time"
)

func TestNextProbe(t *testing.T) {
	ms := time.Millisecond
	iv := Intervals{InUse: time.Second, Standby: 5 * time.Second, Failing: 250 * ms, Cellular: time.Minute}
	p := Params{FailCount: 3, RecoverCount: 3}
	upAt := t0.Add(time.Second)
	last := t0.Add(10 * time.Second)
	type setup func(m *Machine)
	proven := func(m *Machine) { m.Handle(upAt.Add(ms), ok(time.Second)) }
	cases := []struct {
		name  string
		setup setup
		role  Role
		want  time.Time
		ok    bool
	}{
		{"down: never", func(m *Machine) { m.Handle(t0, DeviceEvent{Device{}}) }, Role{}, time.Time{}, false},
		{"just up: at once", nil, Role{InUse: true}, upAt, true},
		{"unknown: failing interval", func(m *Machine) { m.Handle(last, fail(2*time.Second)) }, Role{InUse: true}, last.Add(250 * ms), true},
		{"in use, proven", proven, Role{InUse: true}, last.Add(time.Second), true},
		{"standby, proven", proven, Role{}, last.Add(5 * time.Second), true},
		{"cellular standby", proven, Role{Kind: Cellular}, last.Add(time.Minute), true},
		{"cellular in use", proven, Role{Kind: Cellular, InUse: true}, last.Add(time.Second), true},
		{"suspect: fast", func(m *Machine) { proven(m); m.Handle(last, fail(9*time.Second)) }, Role{InUse: true}, last.Add(250 * ms), true},
		{"failing standby", func(m *Machine) {
			for i := 2; i < 5; i++ {
				m.Handle(t0.Add(time.Duration(i)*time.Second), fail(time.Duration(i)*time.Second-ms))
			}
		}, Role{}, last.Add(time.Second), true},
		{"failing, one success: fast", func(m *Machine) {
			for i := 2; i < 5; i++ {
				m.Handle(t0.Add(time.Duration(i)*time.Second), fail(time.Duration(i)*time.Second-ms))
			}
			m.Handle(t0.Add(6*time.Second), ok(6*time.Second-ms))
		}, Role{}, last.Add(250 * ms), true},
		{"wanted back, gathering successes", proven, Role{WantsBack: true}, last.Add(250 * ms), true},
		{"busy link: replies defer the probe", func(m *Machine) { proven(m); m.Handle(last.Add(700*ms), AliveEvent{Since: last}) }, Role{InUse: true}, last.Add(1700 * ms), true},
		{"busy link: by at most three intervals", func(m *Machine) {
			proven(m)
			m.Handle(last.Add(30*time.Second), AliveEvent{Since: last.Add(29 * time.Second)})
		}, Role{InUse: true}, last.Add(4 * time.Second), true},
		{"idle in use: the budget's floor", proven, Role{InUse: true, Floor: 41 * time.Second}, last.Add(41 * time.Second), true},
		{"idle in use: interval above the floor", proven, Role{InUse: true, Floor: 500 * ms}, last.Add(time.Second), true},
		// probe_budget '1/month' (a careless "never"), or an uplink over its monthly limit
		// as a last resort: a floor of about a century. Replies on the link defer by at most
		// three floors, and three centuries overflowed a Duration: the bound fell in the
		// past, and every reply started a round.
		{"busy link, a century's floor: not at once", func(m *Machine) { proven(m); m.Handle(last.Add(700*ms), AliveEvent{Since: last}) },
			Role{InUse: true, Floor: maxFloor}, last.Add(700 * ms).Add(maxFloor), true},
		{"cellular standby: the budget's floor", proven, Role{Kind: Cellular, Floor: 30 * time.Minute}, last.Add(30 * time.Minute), true},
		{"unanswered traffic after the last round: at once", proven, Role{InUse: true, Unanswered: last.Add(300 * ms)}, last.Add(300 * ms), true},
		{"unanswered traffic: not bound by the floor", proven, Role{InUse: true, Floor: time.Hour, Unanswered: last.Add(300 * ms)}, last.Add(300 * ms), true},
		{"unanswered traffic before the last round: routine", proven, Role{InUse: true, Unanswered: last.Add(-ms)}, last.Add(time.Second), true},
		{"unanswered traffic, replies since: routine", func(m *Machine) { proven(m); m.Handle(last.Add(700*ms), AliveEvent{Since: last.Add(600 * ms)}) },
			Role{InUse: true, Unanswered: last.Add(500 * ms)}, last.Add(1700 * ms), true},
		{"unanswered traffic on a standby: at once", proven, Role{Unanswered: last.Add(2 * time.Second)}, last.Add(2 * time.Second), true},
		{"recheck of a standby after its last round", proven, Role{Floor: time.Hour, Recheck: last.Add(time.Second)}, last.Add(time.Second), true},
		{"recheck older than the last round: routine", proven, Role{Recheck: last.Add(-time.Second)}, last.Add(5 * time.Second), true},
		{"failing standby: at most a second, even with a long interval", func(m *Machine) {
			for i := 2; i < 5; i++ {
				m.Handle(t0.Add(time.Duration(i)*time.Second), fail(time.Duration(i)*time.Second-ms))
			}
		}, Role{}, last.Add(time.Second), true},
		{"suspect: replies do not defer the confirming probe", func(m *Machine) {
			proven(m)
			m.Handle(last, fail(9*time.Second))
			m.Handle(last.Add(100*ms), AliveEvent{Since: last.Add(-50 * ms)})
		}, Role{InUse: true}, last.Add(250 * ms), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := New(t0, p)
			m.Handle(upAt, DeviceEvent{up()})
			if c.setup != nil {
				c.setup(m)
			}
			l := last
			if c.name == "just up: at once" {
				l = time.Time{}
			}
			at, ok := m.NextProbe(l, c.role, iv)
			if ok != c.ok || !at.Equal(c.want) {
				t.Fatalf("NextProbe = %v %v, want %v %v (state %v)", at.Sub(t0), ok, c.want.Sub(t0), c.ok, m.State())
			}
		})
	}
}

func TestNextProbeIdleIntervals(t *testing.T) {
	// The failing standby case above with the new defaults' long in-use
	// and standby intervals: a dead standby is still probed every second
	// (fail-back within 5 s needs it), not every 15 s.
	iv := Intervals{InUse: 15 * time.Second, Standby: 10 * time.Minute, Failing: 250 * time.Millisecond, Cellular: 5 * time.Minute}
	m := New(t0, Params{FailCount: 1, RecoverCount: 3})
	m.Handle(t0, DeviceEvent{up()})
	m.Handle(t0.Add(time.Second), fail(900*time.Millisecond))
	last := t0.Add(2 * time.Second)
	if at, _ := m.NextProbe(last, Role{}, iv); !at.Equal(last.Add(time.Second)) {
		t.Fatalf("dead standby probed at +%v, want +1s", at.Sub(last))
	}
}

func TestBudgetFloor(t *testing.T) {
	for _, c := range []struct {
		cost    int
		perHour float64
		want    time.Duration
	}{
		{565, 50_000, 41 * time.Second},
		{565, 1_000_000.0 / 720, 1465 * time.Second}, // 1464.48 s: up, within the budget
		{870, 25_000, 126 * time.Second},             // 125.28 s: 125 would spend 25,056 bytes an hour
		{565, 0, 0},
		{0, 100, 0},
		{1000, 1e-12, maxFloor},
		// A generous budget (probe_budget '100M/h', probe_interval '200ms'): 31.3 ms, not
		// a whole second that would hold rounds to one a second whatever the interval.
		{870, 100e6, 32 * time.Millisecond},
	} {
		if got := BudgetFloor(c.cost, c.perHour); got != c.want {
			t.Errorf("BudgetFloor(%d, %v) = %v, want %v", c.cost, c.perHour, got, c.want)
		}
	}
}

func TestProbeHedge(t *testing.T) {
	m := New(t0, Params{FailCount: 1, RecoverCount: 1})
	m.Handle(t0, DeviceEvent{up()})
	if h := m.ProbeHedge(600 * time.Millisecond); h != 100*time.Millisecond {
		t.Fatalf("hedge %v", h)
	}
	m.Handle(t0.Add(time.Second), ProbeEvent{ProbeResult{Started: t0, OK: true, RTT: 200 * time.Millisecond}})
	if h := m.ProbeHedge(600 * time.Millisecond); h != 300*time.Millisecond {
		t.Fatalf("hedge on slow link %v", h)
	}
}
