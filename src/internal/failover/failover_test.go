package failover

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/route"
	"github.com/afero/af-conn/internal/uplink"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// sim is a fake world: a clock, uplinks whose probes succeed or fail,
// and a router that records the routing state.
type sim struct {
	t        *testing.T
	now      time.Time
	wake     time.Time
	pending  map[string]pendingProbe
	healthy  map[string]bool
	c        *Controller
	routes   route.Desired
	applies  int
	flushed  []netip.Addr
	capture  map[string][]netip.Prefix
	log      []string
	started  map[string]int // rounds started per uplink
	states   []string       // StateChanged calls, network:state
	switches []string       // Switched calls, from>to
	// deadRouters are gateways through which every probe fails (a black hole on the link).
	deadRouters map[netip.Addr]bool
}

type pendingProbe struct {
	start, done time.Time
	ok          bool
}

func (s *sim) Now() time.Time { return s.now }
func (s *sim) StartProbe(name, dev string, src netip.Addr, timeout, hedge time.Duration) {
	if _, dup := s.pending[name]; dup {
		s.t.Fatalf("two rounds at once on %s", name)
	}
	s.started[name]++
	p := pendingProbe{start: s.now, done: s.now.Add(timeout)}
	if s.healthy[name] && !s.deadRouters[s.gateway(name)] {
		p.done, p.ok = s.now.Add(20*time.Millisecond), true
	}
	s.pending[name] = p
}

// gateway is the router uplink name is routed through now.
func (s *sim) gateway(name string) netip.Addr {
	for _, u := range s.routes.Uplinks {
		if u.Name == name {
			return u.Gateway
		}
	}
	return netip.Addr{}
}
func (s *sim) Capture(name, dev string, p []netip.Prefix) { s.capture[name] = p }
func (s *sim) WakeAt(t time.Time)                         { s.wake = t }
func (s *sim) Log(msg string, args ...any) {
	s.log = append(s.log, fmt.Sprint(s.now.Sub(t0).Round(time.Millisecond), " ", msg, " ", args))
}
func (s *sim) StateChanged(u UplinkSettings, from, to uplink.State, reason string) {
	s.states = append(s.states, u.Name+":"+to.String())
}
func (s *sim) Switched(from, to UplinkSettings, kind, reason string) {
	s.switches = append(s.switches, from.Name+">"+to.Name+":"+kind)
}
func (s *sim) Apply(d route.Desired) error {
	s.routes = d
	s.applies++
	return nil
}
func (s *sim) FlushConntrack(as ...netip.Addr) (uint, error) {
	s.flushed = append(s.flushed, as...)
	return uint(len(as)), nil
}

// run advances time to until, delivering probe results and ticks.
func (s *sim) run(until time.Time) {
	for {
		next, name := s.wake, ""
		for n, p := range s.pending {
			if next.IsZero() || p.done.Before(next) {
				next, name = p.done, n
			}
		}
		if next.IsZero() || next.After(until) {
			s.now = until
			return
		}
		if next.After(s.now) {
			s.now = next
		}
		if name != "" {
			p := s.pending[name]
			delete(s.pending, name)
			r := uplink.ProbeResult{Started: p.start, OK: p.ok}
			if p.ok {
				r.RTT = p.done.Sub(p.start)
			} else {
				r.Err = "timeout"
			}
			s.c.ProbeDone(name, r)
			continue
		}
		s.wake = time.Time{}
		s.c.Tick()
	}
}

// until runs until cond holds, returning how long it took.
func (s *sim) until(limit time.Duration, what string, cond func() bool) time.Duration {
	s.t.Helper()
	start := s.now
	for s.now.Sub(start) < limit {
		if cond() {
			return s.now.Sub(start)
		}
		s.run(s.now.Add(10 * time.Millisecond))
	}
	s.t.Fatalf("%s not within %v; routes %+v\nlog:\n%s", what, limit, s.routes, strings.Join(s.log, "\n"))
	return 0
}

func dev(addr, gw string) uplink.Device {
	return uplink.Device{Present: true, AdminUp: true, Carrier: true, Addrs: []netip.Prefix{netip.MustParsePrefix(addr)},
		HasDefault: true, Gateway: netip.MustParseAddr(gw)}
}

var (
	ethDev  = dev("198.18.10.2/24", "198.18.10.1")
	wlanDev = dev("198.18.20.2/24", "198.18.20.1")
	wwanDev = dev("198.18.30.2/24", "198.18.30.1")
)

func settings() Settings {
	return Settings{
		Uplinks: []UplinkSettings{
			{Name: "ethnet", Device: "eth0", Kind: uplink.Ethernet, Priority: 10, Enabled: true},
			{Name: "stanet", Device: "wlan0", Kind: uplink.WiFi, Priority: 20, Enabled: true},
			{Name: "modemnet", Device: "wwan0", Kind: uplink.Cellular, Priority: 50, Enabled: true},
		},
		Params:       uplink.Params{FailCount: 3, RecoverCount: 3},
		Intervals:    uplink.Intervals{InUse: time.Second, Standby: 5 * time.Second, Failing: 250 * time.Millisecond, Cellular: 60 * time.Second},
		ProbeTimeout: 500 * time.Millisecond, ProbeTimeoutMax: 5 * time.Second,
	}
}

func newSim(t *testing.T) *sim {
	s := &sim{t: t, now: t0, pending: map[string]pendingProbe{}, capture: map[string][]netip.Prefix{}, started: map[string]int{},
		healthy: map[string]bool{"ethnet": true, "stanet": true, "modemnet": true}}
	s.c = New(s, s, settings())
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethDev, "wlan0": wlanDev, "wwan0": wwanDev})
	s.until(5*time.Second, "all proven", func() bool {
		for _, v := range s.c.Views() {
			if v.State != uplink.ItfUpSS {
				return false
			}
		}
		return s.c.Selected() == "ethnet"
	})
	return s
}

func TestStartupSelectsEthernet(t *testing.T) {
	s := newSim(t)
	if s.routes.Selected != "ethnet" || len(s.routes.Uplinks) != 3 {
		t.Fatalf("routes %+v", s.routes)
	}
	if len(s.capture["ethnet"]) != 1 || len(s.capture["modemnet"]) != 1 {
		t.Fatalf("captures %v", s.capture)
	}
	if got := s.c.NetworkType(); got != 0 {
		t.Fatalf("network type %d", got)
	}
	if s.switches[0] != ">ethnet:start" {
		t.Fatalf("first switch %q", s.switches[0])
	}
}

func TestCarrierLossSwitchesAtOnce(t *testing.T) {
	s := newSim(t)
	s.run(s.now.Add(3 * time.Second))
	down := ethDev
	down.Carrier = false
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": down})
	if s.routes.Selected != "stanet" {
		t.Fatalf("carrier loss: selected %q", s.routes.Selected)
	}
	if got := s.switches[len(s.switches)-1]; got != "ethnet>stanet:failover" {
		t.Fatalf("last switch announced %q", got)
	}
	if got := s.states[len(s.states)-1]; got != "ethnet:ITFDOWN_SX" {
		t.Fatalf("last state announced %q", got)
	}
	if len(s.flushed) != 1 || s.flushed[0] != netip.MustParseAddr("198.18.10.2") {
		t.Fatalf("flushed %v", s.flushed)
	}
	if len(s.capture["ethnet"]) > 0 {
		t.Fatal("capture still running on a down uplink")
	}
}

func TestSilentFailureWithinThreeSeconds(t *testing.T) {
	for _, offset := range []time.Duration{0, 300 * time.Millisecond, 999 * time.Millisecond} {
		s := newSim(t)
		s.run(s.now.Add(10*time.Second + offset))
		s.healthy["ethnet"] = false
		took := s.until(10*time.Second, "switch to wifi", func() bool { return s.routes.Selected == "stanet" })
		t.Logf("failure at +%v: switched after %v", offset, took)
		if took > 2600*time.Millisecond {
			t.Fatalf("silent failure took %v", took)
		}
	}
}

func TestFailBackAfterRecoverCount(t *testing.T) {
	s := newSim(t)
	s.healthy["ethnet"] = false
	s.until(10*time.Second, "fail over", func() bool { return s.routes.Selected == "stanet" })
	s.run(s.now.Add(30 * time.Second)) // a while dead
	s.healthy["ethnet"] = true
	took := s.until(10*time.Second, "fail back", func() bool { return s.routes.Selected == "ethnet" })
	t.Logf("fail-back after %v", took)
	if took > 3*time.Second {
		t.Fatalf("fail-back took %v", took)
	}
}

func TestAllDeadThenOneReturns(t *testing.T) {
	s := newSim(t)
	for _, n := range []string{"ethnet", "stanet", "modemnet"} {
		s.healthy[n] = false
	}
	s.run(s.now.Add(2 * time.Minute))
	for _, v := range s.c.Views() {
		if v.State != uplink.ItfUpSF {
			t.Fatalf("%s is %v", v.Settings.Name, v.State)
		}
	}
	sel := s.routes.Selected
	if sel == "" || s.c.Counters().Switches > 3 {
		t.Fatalf("all failing: selected %q after %d switches (must keep a route, not flap)\n%s", sel, s.c.Counters().Switches, strings.Join(s.log, "\n"))
	}
	s.healthy["stanet"] = true
	s.until(10*time.Second, "wifi back", func() bool { return s.routes.Selected == "stanet" })
}

func TestCellularProbedSparingly(t *testing.T) {
	s := newSim(t)
	clear(s.started)
	s.run(s.now.Add(10 * time.Minute))
	if s.started["modemnet"] > 11 {
		t.Fatalf("cellular standby probed %d times in 10 minutes", s.started["modemnet"])
	}
	if s.started["stanet"] > 121 || s.started["stanet"] < 100 {
		t.Fatalf("wifi standby probed %d times in 10 minutes (every 5 s)", s.started["stanet"])
	}
	if s.started["ethnet"] < 590 {
		t.Fatalf("in-use ethernet probed only %d times in 10 minutes", s.started["ethnet"])
	}
}

func TestTrafficDefersProbes(t *testing.T) {
	s := newSim(t)
	eth, applies := s.started["ethnet"], s.applies
	// Replies arrive on Ethernet every 200 ms for 12 s.
	for range 60 {
		prev := s.now
		s.run(s.now.Add(200 * time.Millisecond))
		s.c.Alive("ethnet", prev, s.now)
	}
	// The in-use uplink (probe_interval 1 s) was probed, but only every
	// 4 s: replies defer its routine probes by at most three intervals.
	if got := s.started["ethnet"] - eth; got < 2 || got > 4 {
		t.Fatalf("in-use Ethernet probed %d times in 12 s of replies, want 3 (every 4 s)", got)
	}
	// Nothing changed, so the routes were not touched again.
	if n := s.applies; n != applies {
		t.Fatalf("%d route applications for traffic that changed nothing", n-applies)
	}
}

func TestPreferenceAndSwitch(t *testing.T) {
	s := newSim(t)
	if err := s.c.SetPreference(1); err != nil || s.routes.Selected != "stanet" {
		t.Fatalf("prefer wifi: %v %q", err, s.routes.Selected)
	}
	if err := s.c.SetPreference(7); err == nil {
		t.Fatal("bad preference accepted")
	}
	if err := s.c.SetPreference(2); err != nil || s.routes.Selected != "modemnet" {
		t.Fatalf("prefer cellular: %v %q", err, s.routes.Selected)
	}
	if err := s.c.SetPreference(-1); err != nil {
		t.Fatal(err)
	}
	// Back to automatic: Ethernet is taken back once it has recover_count
	// successes (gathered at the fast interval).
	s.until(2*time.Second, "back to ethernet", func() bool { return s.routes.Selected == "ethnet" })
	if got := s.switches[len(s.switches)-1]; got != "modemnet>ethnet:failback" {
		t.Fatalf("last switch %q", got)
	}
}

func TestRoutesReappliedWhenChangedOutside(t *testing.T) {
	s := newSim(t)
	n := s.applies
	s.c.RoutesChanged()
	if s.applies != n+1 {
		t.Fatal("routes not re-applied after an outside change")
	}
}

func TestGatewayChangeReappliesRoutes(t *testing.T) {
	s := newSim(t)
	moved := dev("198.18.10.2/24", "198.18.10.254")
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": moved})
	if s.routes.Selected != "ethnet" || s.routes.Uplinks[0].Gateway != netip.MustParseAddr("198.18.10.254") {
		t.Fatalf("routes %+v", s.routes)
	}
}

func TestReloadKeepsState(t *testing.T) {
	s := newSim(t)
	st := settings()
	st.Uplinks = st.Uplinks[:2] // cellular removed
	s.c.Configure(st)
	if s.routes.Selected != "ethnet" || len(s.c.Views()) != 2 || s.c.Views()[0].State != uplink.ItfUpSS {
		t.Fatalf("after reload: %+v", s.c.Views())
	}
	if len(s.capture["modemnet"]) > 0 {
		t.Fatal("capture of removed uplink still running")
	}
	st.Uplinks[0].Enabled = false
	s.c.Configure(st)
	if s.routes.Selected != "stanet" {
		t.Fatalf("ethernet disabled: selected %q", s.routes.Selected)
	}
}

func TestHoldRouteLoss(t *testing.T) {
	noRoute := ethDev
	noRoute.HasDefault, noRoute.Gateway = false, netip.Addr{}
	noCarrier, noAddr, absent, adminDown := noRoute, noRoute, noRoute, noRoute
	noCarrier.Carrier = false
	noAddr.Addrs = nil
	absent.Present = false
	adminDown.AdminUp = false
	for _, tc := range []struct {
		name string
		st   uplink.State
		d    uplink.Device
		want bool
	}{
		{"up, only the default route gone", uplink.ItfUpSS, noRoute, true},
		{"unknown, only the default route gone", uplink.ItfUpSU, noRoute, true},
		{"failing, only the default route gone", uplink.ItfUpSF, noRoute, true},
		{"route still there", uplink.ItfUpSS, ethDev, false},
		{"carrier gone too", uplink.ItfUpSS, noCarrier, false},
		{"address gone too", uplink.ItfUpSS, noAddr, false},
		{"device gone", uplink.ItfUpSS, absent, false},
		{"set down", uplink.ItfUpSS, adminDown, false},
		{"was not up", uplink.ItfDownSX, noRoute, false},
	} {
		if got := holdRouteLoss(tc.st, tc.d); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// graceSim is newSim with the daemon's route grace.
func graceSim(t *testing.T) *sim {
	s := newSim(t)
	st := settings()
	st.RouteGrace = DefaultRouteGrace
	s.c.Configure(st)
	s.run(s.now.Add(3 * time.Second))
	return s
}

// A DHCP renew that changes the gateway, as netifd makes it: the old default route goes,
// the new one comes a few hundred microseconds later. Not a fault: no switch, no flush,
// no state change; the routes follow the new gateway.
func TestRenewWithinGraceIsNoFault(t *testing.T) {
	s := graceSim(t)
	states, switches := len(s.states), len(s.switches)
	gone := ethDev
	gone.HasDefault, gone.Gateway = false, netip.Addr{}
	for i := range 20 {
		gw := fmt.Sprintf("198.18.10.%d", 100+i)
		s.c.DeviceUpdate(map[string]uplink.Device{"eth0": gone})
		s.now = s.now.Add(300 * time.Microsecond)
		s.c.DeviceUpdate(map[string]uplink.Device{"eth0": dev("198.18.10.2/24", gw)})
		s.run(s.now.Add(2 * time.Second))
		if s.routes.Selected != "ethnet" || s.routes.Uplinks[0].Gateway != netip.MustParseAddr(gw) {
			t.Fatalf("renew %d: routes %+v", i, s.routes)
		}
	}
	if len(s.states) != states || len(s.switches) != switches || len(s.flushed) != 0 {
		t.Fatalf("renews changed states %q, switched %q, flushed %v\n%s", s.states[states:], s.switches[switches:], s.flushed, strings.Join(s.log, "\n"))
	}
}

// A default route that stays away counts once the grace is over; a carrier lost meanwhile
// counts at once.
func TestRouteLossAfterGrace(t *testing.T) {
	gone := ethDev
	gone.HasDefault, gone.Gateway = false, netip.Addr{}
	s := graceSim(t)
	start := s.now
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": gone})
	took := s.until(5*time.Second, "switch after the grace", func() bool { return s.routes.Selected == "stanet" })
	if took < DefaultRouteGrace || took > DefaultRouteGrace+20*time.Millisecond {
		t.Fatalf("switched %v after the route went (grace %v)", s.now.Sub(start), DefaultRouteGrace)
	}
	if got := s.states[len(s.states)-1]; got != "ethnet:ITFDOWN_SX" || len(s.flushed) != 1 {
		t.Fatalf("state %q, flushed %v", got, s.flushed)
	}

	s = graceSim(t)
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": gone})
	s.run(s.now.Add(500 * time.Millisecond))
	if s.routes.Selected != "ethnet" {
		t.Fatalf("switched within the grace: %q", s.routes.Selected)
	}
	down := gone
	down.Carrier = false
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": down})
	if s.routes.Selected != "stanet" {
		t.Fatalf("carrier loss during the grace: selected %q", s.routes.Selected)
	}
}

// Ethernet's default route keeps going and coming (spoofed RAs of router lifetime 0 at one a
// second, the router's own every 4 s): the first loss fails over and back as before; from the
// second within routeFlapWindow Ethernet is not failed back to, however well it probes while
// its route is there, until the window after the last-but-one loss passes.
func TestRouteFlapHoldsFailBack(t *testing.T) {
	gone := ethDev
	gone.HasDefault, gone.Gateway = false, netip.Addr{}
	s := graceSim(t)
	flap := func() {
		s.c.DeviceUpdate(map[string]uplink.Device{"eth0": gone})
		s.run(s.now.Add(3 * time.Second))
		s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethDev})
		s.run(s.now.Add(time.Second))
	}
	switches := len(s.switches)
	flap()
	if s.c.Selected() != "ethnet" {
		t.Fatalf("after one route loss and 1 s back: selected %q, want ethnet (fail-back as before)", s.c.Selected())
	}
	secondLoss := s.now
	for range 10 {
		flap()
	}
	if got := s.switches[switches:]; len(got) != 3 || s.c.Selected() != "stanet" {
		t.Fatalf("switches %q, selected %q: want ethnet>stanet, stanet>ethnet, ethnet>stanet and no more", got, s.c.Selected())
	}
	// The flaps end; Ethernet stays: the fail-back comes once the window after the last-but-one
	// loss is over.
	lastButOne := secondLoss.Add(8*4*time.Second + DefaultRouteGrace) // each flap's loss counts after the grace
	s.until(2*routeFlapWindow, "fail-back after the flaps", func() bool { return s.c.Selected() == "ethnet" })
	if early := lastButOne.Add(routeFlapWindow); s.now.Before(early) {
		t.Fatalf("failed back at %v, before the hold's end %v", s.now.Sub(t0), early.Sub(t0))
	}
	if late := lastButOne.Add(routeFlapWindow + 4*time.Second); s.now.After(late) {
		t.Fatalf("failed back at %v, long after the hold's end %v\n%s", s.now.Sub(t0), lastButOne.Add(routeFlapWindow).Sub(t0), strings.Join(s.log, "\n"))
	}
}
