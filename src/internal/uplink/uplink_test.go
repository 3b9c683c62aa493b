package uplink

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func up() Device {
	return Device{Present: true, AdminUp: true, Carrier: true,
		Addrs:      []netip.Prefix{netip.MustParsePrefix("198.18.1.2/24")},
		HasDefault: true, Gateway: netip.MustParseAddr("198.18.1.1")}
}

func with(f func(*Device)) Device { d := up(); f(&d); return d }

// step is one event at an offset from t0 and what must follow.
type step struct {
	at     time.Duration
	ev     Event
	want   State
	reason string // substring of the transition's reason ("" = don't care)
	gw     bool   // GatewayChanged expected
}

func ok(started time.Duration) Event {
	return ProbeEvent{ProbeResult{Started: t0.Add(started), OK: true, RTT: 20 * time.Millisecond}}
}
func alive(since time.Duration) Event { return AliveEvent{Since: t0.Add(since)} }
func fail(started time.Duration) Event {
	return ProbeEvent{ProbeResult{Started: t0.Add(started), Err: "timeout"}}
}

// intercepted is a failed probe whose connection something accepted in
// the probe host's name without giving its answer (a portal).
func intercepted(started time.Duration) Event {
	return ProbeEvent{ProbeResult{Started: t0.Add(started), Err: "no byte back", Intercepted: true}}
}

func TestTransitions(t *testing.T) {
	p := Params{FailCount: 3, RecoverCount: 2}
	ms := time.Millisecond
	cases := []struct {
		name  string
		steps []step
	}{
		{"init to down: device exists without carrier", []step{
			{0, DeviceEvent{with(func(d *Device) { d.Carrier = false })}, ItfDownSX, "no carrier", false},
		}},
		{"init to not supported: no device", []step{
			{0, DeviceEvent{Device{}}, ItfNotSuppSX, "device absent", false},
		}},
		{"up needs an address", []step{
			{0, DeviceEvent{with(func(d *Device) { d.Addrs = nil })}, ItfDownSX, "no address", false},
			{ms, DeviceEvent{up()}, ItfUpSU, "carrier, address", true},
		}},
		{"up needs a default route", []step{
			{0, DeviceEvent{with(func(d *Device) { d.HasDefault = false; d.Gateway = netip.Addr{} })}, ItfDownSX, "no default route", false},
		}},
		{"admin down", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{ms, DeviceEvent{with(func(d *Device) { d.AdminUp = false })}, ItfDownSX, "administratively down", true},
		}},
		{"first success proves", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "proven", false},
		}},
		{"passive traffic proves", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, alive(5 * ms), ItfUpSS, "received replies: proven", false},
		}},
		{"replies from before the uplink came up prove nothing", []step{
			{10 * ms, DeviceEvent{up()}, ItfUpSU, "", true},
			{20 * ms, alive(5 * ms), ItfUpSU, "predate the uplink", false},
		}},
		{"unknown fails after fail_count", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{600 * ms, fail(100 * ms), ItfUpSU, "1 of 3", false},
			{1200 * ms, fail(700 * ms), ItfUpSU, "2 of 3", false},
			{1800 * ms, fail(1300 * ms), ItfUpSF, "3 of 3", false},
		}},
		{"proven survives fewer than fail_count failures; success resets", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{600 * ms, fail(100 * ms), ItfUpSS, "1 of 3", false},
			{1200 * ms, fail(700 * ms), ItfUpSS, "2 of 3", false},
			{1300 * ms, ok(1250 * ms), ItfUpSS, "probe succeeded", false},
			{1900 * ms, fail(1400 * ms), ItfUpSS, "1 of 3", false},
			{2500 * ms, fail(2000 * ms), ItfUpSS, "2 of 3", false},
			{3100 * ms, fail(2600 * ms), ItfUpSF, "3 of 3", false},
		}},
		{"traffic during the probe does not outvote its failure", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{600 * ms, fail(100 * ms), ItfUpSS, "1 of 3", false},
			{1200 * ms, fail(700 * ms), ItfUpSS, "2 of 3", false},
			{1400 * ms, alive(1100 * ms), ItfUpSS, "do not outvote", false},
			{1410 * ms, alive(1200 * ms), ItfUpSS, "do not outvote", false},
			{1900 * ms, fail(1300 * ms), ItfUpSF, "3 of 3", false},
		}},
		{"replies after a failed probe clear it", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{600 * ms, fail(100 * ms), ItfUpSS, "1 of 3", false},
			{1200 * ms, fail(700 * ms), ItfUpSS, "2 of 3", false},
			{1500 * ms, alive(1250 * ms), ItfUpSS, "received replies", false},
			{1900 * ms, fail(1300 * ms), ItfUpSS, "1 of 3", false},
		}},
		{"replies do not clear a probe a portal intercepted", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{600 * ms, intercepted(100 * ms), ItfUpSS, "1 of 3", false},
			{900 * ms, alive(700 * ms), ItfUpSS, "intercepted", false},
			{1200 * ms, fail(700 * ms), ItfUpSS, "2 of 3", false},
			{1500 * ms, alive(1250 * ms), ItfUpSS, "intercepted", false},
			{1900 * ms, intercepted(1300 * ms), ItfUpSF, "3 of 3", false},
		}},
		{"a probe success ends what an intercepted probe left", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{600 * ms, intercepted(100 * ms), ItfUpSS, "1 of 3", false},
			{1200 * ms, ok(700 * ms), ItfUpSS, "probe succeeded", false},
			{1800 * ms, fail(1300 * ms), ItfUpSS, "1 of 3", false},
			{2100 * ms, alive(1900 * ms), ItfUpSS, "received replies", false},
		}},
		{"replies never recover a failing uplink", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{500 * ms, fail(0), ItfUpSU, "", false},
			{1000 * ms, fail(500 * ms), ItfUpSU, "", false},
			{1500 * ms, fail(1000 * ms), ItfUpSF, "", false},
			{2000 * ms, alive(1600 * ms), ItfUpSF, "recovery is for the probes", false},
			{2500 * ms, alive(2000 * ms), ItfUpSF, "recovery is for the probes", false},
			{3000 * ms, alive(2500 * ms), ItfUpSF, "recovery is for the probes", false},
		}},
		{"failing recovers after recover_count successes", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{500 * ms, fail(0), ItfUpSU, "", false},
			{1000 * ms, fail(500 * ms), ItfUpSU, "", false},
			{1500 * ms, fail(1000 * ms), ItfUpSF, "", false},
			{1600 * ms, ok(1550 * ms), ItfUpSF, "1 of 2", false},
			{2100 * ms, fail(1700 * ms), ItfUpSF, "1 of 3", false},
			{2200 * ms, ok(2150 * ms), ItfUpSF, "1 of 2", false},
			{2300 * ms, ok(2250 * ms), ItfUpSS, "2 consecutive", false},
		}},
		{"carrier loss while proven", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{20 * ms, DeviceEvent{with(func(d *Device) { d.Carrier = false })}, ItfDownSX, "no carrier", true},
			{30 * ms, ok(15 * ms), ItfDownSX, "stale", false},
			{40 * ms, alive(35 * ms), ItfDownSX, "ignored", false},
		}},
		{"address lost while up", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{20 * ms, DeviceEvent{with(func(d *Device) { d.Addrs = nil })}, ItfDownSX, "no address", true},
		}},
		{"address replaced while up keeps state", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{20 * ms, DeviceEvent{with(func(d *Device) { d.Addrs = []netip.Prefix{netip.MustParsePrefix("198.18.1.77/24")} })}, ItfUpSS, "addresses changed", false},
		}},
		{"gateway changed by DHCP keeps state and says so", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{20 * ms, DeviceEvent{with(func(d *Device) { d.Gateway = netip.MustParseAddr("198.18.1.254") })}, ItfUpSS, "gateway changed from 198.18.1.1 to 198.18.1.254", true},
		}},
		{"device removed and re-added starts unproven", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{20 * ms, DeviceEvent{Device{}}, ItfNotSuppSX, "device absent", true},
			{30 * ms, DeviceEvent{with(func(d *Device) { d.Addrs = nil; d.HasDefault = false })}, ItfDownSX, "no address", false},
			{40 * ms, DeviceEvent{up()}, ItfUpSU, "", true},
			// A probe begun in the previous up period does not count.
			{50 * ms, ok(15 * ms), ItfUpSU, "stale", false},
			{60 * ms, ok(45 * ms), ItfUpSS, "proven", false},
		}},
		{"probe from before a carrier flap is stale", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, DeviceEvent{with(func(d *Device) { d.Carrier = false })}, ItfDownSX, "", true},
			{20 * ms, DeviceEvent{up()}, ItfUpSU, "", true},
			{30 * ms, fail(5 * ms), ItfUpSU, "stale", false},
		}},
		{"disabled and re-enabled", []step{
			{0, DeviceEvent{up()}, ItfUpSU, "", true},
			{10 * ms, ok(ms), ItfUpSS, "", false},
			{20 * ms, SupportEvent{Supported: false}, ItfNotSuppSX, "disabled by configuration", false},
			{30 * ms, DeviceEvent{up()}, ItfNotSuppSX, "disabled", false},
			{40 * ms, SupportEvent{Supported: true}, ItfUpSU, "enabled by configuration", true},
		}},
		{"point-to-point default route without gateway is up", []step{
			{0, DeviceEvent{with(func(d *Device) { d.Gateway = netip.Addr{} })}, ItfUpSU, "", true},
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := New(t0, p)
			for i, s := range c.steps {
				tr := m.Handle(t0.Add(s.at), s.ev)
				if tr.To != s.want || m.State() != s.want {
					t.Fatalf("step %d (%T): state %v, want %v (reason %q)", i, s.ev, tr.To, s.want, tr.Reason)
				}
				if !strings.Contains(tr.Reason, s.reason) {
					t.Errorf("step %d: reason %q lacks %q", i, tr.Reason, s.reason)
				}
				if s.gw && !tr.GatewayChanged {
					t.Errorf("step %d: GatewayChanged not set", i)
				}
				if !s.gw && tr.GatewayChanged {
					t.Errorf("step %d: GatewayChanged set unexpectedly", i)
				}
			}
		})
	}
}

// Two uplinks failing at once are independent machines: both reach SF.
func TestBothFailingAtOnce(t *testing.T) {
	p := Params{FailCount: 2, RecoverCount: 2}
	a, b := New(t0, p), New(t0, p)
	for _, m := range []*Machine{a, b} {
		m.Handle(t0, DeviceEvent{up()})
		m.Handle(t0.Add(time.Millisecond), ok(0))
	}
	for i := 1; i <= 2; i++ {
		at := time.Duration(i) * time.Second
		a.Handle(t0.Add(at), fail(at-500*time.Millisecond))
		b.Handle(t0.Add(at), fail(at-500*time.Millisecond))
	}
	if a.State() != ItfUpSF || b.State() != ItfUpSF {
		t.Fatalf("states %v %v, want both ITFUP_SF", a.State(), b.State())
	}
}

func TestSinceAndCounters(t *testing.T) {
	m := New(t0, Params{FailCount: 1, RecoverCount: 1})
	m.Handle(t0.Add(time.Second), DeviceEvent{up()})
	m.Handle(t0.Add(2*time.Second), ok(1500*time.Millisecond))
	m.Handle(t0.Add(3*time.Second), fail(2500*time.Millisecond))
	s := m.Snapshot()
	if s.State != ItfUpSF || !s.Since.Equal(t0.Add(3*time.Second)) {
		t.Fatalf("state %v since %v", s.State, s.Since)
	}
	if s.ProbesOK != 1 || s.ProbesFailed != 1 || s.Transitions != 3 {
		t.Fatalf("counters ok=%d failed=%d transitions=%d", s.ProbesOK, s.ProbesFailed, s.Transitions)
	}
	if s.LastProbe.OK || s.LastProbe.Err != "timeout" {
		t.Fatalf("last probe %+v", s.LastProbe)
	}
}

func TestProbeTimeoutFollowsRTT(t *testing.T) {
	m := New(t0, Params{FailCount: 3, RecoverCount: 3})
	m.Handle(t0, DeviceEvent{up()})
	if got := m.ProbeTimeout(500*time.Millisecond, 5*time.Second); got != 500*time.Millisecond {
		t.Fatalf("no RTT yet: %v", got)
	}
	m.Handle(t0.Add(time.Second), ProbeEvent{ProbeResult{Started: t0, OK: true, RTT: 400 * time.Millisecond}})
	if got := m.ProbeTimeout(500*time.Millisecond, 5*time.Second); got != 1600*time.Millisecond {
		t.Fatalf("slow link: %v", got)
	}
	if got := m.ProbeTimeout(500*time.Millisecond, time.Second); got != time.Second {
		t.Fatalf("capped: %v", got)
	}
}

func TestStateNames(t *testing.T) {
	want := map[State]string{0: "ITFDOWN_SU", 1: "ITFDOWN_SX", 2: "ITFNOTSUPP_SX", 3: "ITFUP_SU", 4: "ITFUP_SS", 5: "ITFUP_SF", 9: "State(9)"}
	for s, n := range want {
		if s.String() != n {
			t.Errorf("%d: %q, want %q", int(s), s.String(), n)
		}
	}
}

func TestDeviceOfFamily(t *testing.T) {
	d := Device{Present: true, AdminUp: true, Carrier: true,
		Addrs:      []netip.Prefix{netip.MustParsePrefix("198.18.1.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")},
		HasDefault: true, Gateway: netip.MustParseAddr("198.18.1.1"),
		HasDefault6: true, Gateway6: netip.MustParseAddr("fe80::1")}
	v4, v6 := d.OfFamily(IPv4), d.OfFamily(IPv6)
	if len(v4.Addrs) != 1 || !v4.Addrs[0].Addr().Is4() || v4.Gateway != d.Gateway || !v4.HasDefault || v4.HasDefault6 {
		t.Errorf("IPv4 view = %+v", v4)
	}
	if len(v6.Addrs) != 1 || !v6.Addrs[0].Addr().Is6() || v6.Gateway != d.Gateway6 || !v6.HasDefault || v6.Gateway6.IsValid() {
		t.Errorf("IPv6 view = %+v", v6)
	}
	d.HasDefault6 = false
	if d.OfFamily(IPv6).missing() != "no default route" {
		t.Errorf("IPv6 without default route: missing = %q", d.OfFamily(IPv6).missing())
	}
	if FamilyOf(netip.MustParseAddr("::ffff:198.18.0.1")) != IPv4 || FamilyOf(netip.MustParseAddr("fe80::1")) != IPv6 {
		t.Error("FamilyOf")
	}
}
