package failover

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

func TestCombineStates(t *testing.T) {
	const (
		ns = uplink.ItfNotSuppSX
		du = uplink.ItfDownSU
		dx = uplink.ItfDownSX
		su = uplink.ItfUpSU
		ss = uplink.ItfUpSS
		sf = uplink.ItfUpSF
	)
	for _, tc := range []struct {
		v4, v6, want uplink.State
		why          string
	}{
		{ss, ss, ss, "dual-stack, both proven"},
		{dx, ss, ss, "IPv6-only uplink is a full uplink"},
		{ss, dx, ss, "IPv4-only uplink as before"},
		{ss, sf, ss, "IPv6 dead, IPv4 works: the uplink is proven"},
		{sf, ss, ss, "IPv4 dead, IPv6 works"},
		{sf, su, su, "one family failing, the other not judged yet"},
		{sf, sf, sf, "both failing"},
		{sf, dx, sf, "failing beats down"},
		{su, dx, su, "new uplink"},
		{dx, dx, dx, "no address in either family"},
		{du, dx, dx, "down beats not yet assessed"},
		{ns, ns, ns, "device absent or disabled"},
		{ns, du, du, "not supported is the worst"},
	} {
		if got := CombineStates(tc.v4, tc.v6); got != tc.want {
			t.Errorf("%s: CombineStates(%v, %v) = %v, want %v", tc.why, tc.v4, tc.v6, got, tc.want)
		}
		if got := CombineStates(tc.v6, tc.v4); got != tc.want {
			t.Errorf("%s: not symmetric: CombineStates(%v, %v) = %v", tc.why, tc.v6, tc.v4, got)
		}
	}
	if got := CombineStates(); got != du {
		t.Errorf("no states: %v", got)
	}
}

func TestCombineSelected(t *testing.T) {
	for _, tc := range []struct{ v4, v6, want string }{
		{"ethnet", "ethnet", "ethnet"},
		{"ethnet", "stanet", "ethnet"}, // families on different uplinks: IPv4's
		{"", "modemnet", "modemnet"},   // IPv6-only hub
		{"stanet", "", "stanet"},
		{"", "", ""},
	} {
		if got := CombineSelected(tc.v4, tc.v6); got != tc.want {
			t.Errorf("CombineSelected(%q, %q) = %q, want %q", tc.v4, tc.v6, got, tc.want)
		}
	}
}

func view(name string, f uplink.Family, st uplink.State, since time.Time, addrs ...string) View {
	v := View{Settings: UplinkSettings{Name: name, Device: name + "-dev"}, Family: f}
	v.State, v.Since = st, since
	for _, a := range addrs {
		v.Device.Addrs = append(v.Device.Addrs, netip.MustParsePrefix(a))
	}
	return v
}

func TestCombine(t *testing.T) {
	early, late := t0, t0.Add(time.Minute)
	v4 := []View{
		view("ethnet", uplink.IPv4, uplink.ItfUpSS, late, "198.18.10.2/24"),
		view("stanet", uplink.IPv4, uplink.ItfUpSS, early, "198.18.20.2/24"),
		view("modemnet", uplink.IPv4, uplink.ItfDownSX, early),
	}
	v6 := []View{
		view("ethnet", uplink.IPv6, uplink.ItfUpSS, early, "2001:db8:10::2/64"),
		view("stanet", uplink.IPv6, uplink.ItfUpSF, early, "2001:db8:20::2/64"),
		view("modemnet", uplink.IPv6, uplink.ItfUpSS, late, "2001:db8:30::2/64"),
	}
	got := Combine("ethnet", v4, v6)
	if len(got) != 3 {
		t.Fatalf("%d uplinks", len(got))
	}
	for i, want := range []struct {
		name    string
		st      uplink.State
		since   time.Time
		inUse   bool
		primary uplink.Family
	}{
		{"ethnet", uplink.ItfUpSS, early, true, uplink.IPv4},   // the longer of two SS periods
		{"stanet", uplink.ItfUpSS, early, false, uplink.IPv4},  // IPv6 dead, IPv4 works
		{"modemnet", uplink.ItfUpSS, late, false, uplink.IPv6}, // IPv6-only: proven, IPv6 stands for it
	} {
		u := got[i]
		if u.Settings.Name != want.name || u.State != want.st || !u.Since.Equal(want.since) || u.InUse != want.inUse || u.Primary != want.primary {
			t.Errorf("uplink %d = %s %v since %v in use %v primary %v, want %+v", i, u.Settings.Name, u.State, u.Since.Sub(t0), u.InUse, u.Primary, want)
		}
		if len(u.Families) != 2 || u.Families[0].Family != uplink.IPv4 || u.Families[1].Family != uplink.IPv6 {
			t.Errorf("%s: families %+v", u.Settings.Name, u.Families)
		}
		if v, ok := u.Family(uplink.IPv6); !ok || v.Settings.Name != want.name {
			t.Errorf("%s: Family(IPv6) = %+v %v", want.name, v, ok)
		}
	}
	if PrimaryFamily(view("x", uplink.IPv4, uplink.ItfDownSX, early), view("x", uplink.IPv6, uplink.ItfDownSX, early)) != uplink.IPv4 {
		t.Error("no addresses at all: the primary family is not IPv4")
	}
	if Combine("") != nil || Combine("", v4)[0].InUse {
		t.Error("nothing selected, yet an uplink is in use")
	}
}

// famSim is sim with a controller of one family; it records the probes' source addresses.
type famSim struct {
	*sim
	srcs map[string]netip.Addr
}

func (s *famSim) StartProbe(name, dev string, src netip.Addr, timeout, hedge time.Duration) {
	s.srcs[name] = src
	s.sim.StartProbe(name, dev, src, timeout, hedge)
}

func dual(v4, gw4, v6, gw6 string) uplink.Device {
	d := uplink.Device{Present: true, AdminUp: true, Carrier: true}
	if v4 != "" {
		d.Addrs, d.HasDefault, d.Gateway = append(d.Addrs, netip.MustParsePrefix(v4)), true, netip.MustParseAddr(gw4)
	}
	if v6 != "" {
		d.Addrs, d.HasDefault6, d.Gateway6 = append(d.Addrs, netip.MustParsePrefix(v6)), true, netip.MustParseAddr(gw6)
	}
	return d
}

var (
	ethDual  = dual("198.18.10.2/24", "198.18.10.1", "2001:db8:10::2/64", "fe80::10")
	wlanDual = dual("198.18.20.2/24", "198.18.20.1", "2001:db8:20::2/64", "fe80::20")
	wwanV6   = dual("", "", "2001:db8:30::2/64", "fe80::30") // IPv6-only cellular
)

func newFamSim(t *testing.T, f uplink.Family, devs map[string]uplink.Device) *famSim {
	s := &famSim{sim: &sim{t: t, now: t0, pending: map[string]pendingProbe{}, capture: map[string][]netip.Prefix{}, started: map[string]int{},
		healthy: map[string]bool{"ethnet": true, "stanet": true, "modemnet": true}}, srcs: map[string]netip.Addr{}}
	st := settings()
	st.Family = f
	s.c = New(s, s, st)
	s.c.DeviceUpdate(devs)
	s.run(s.now.Add(5 * time.Second))
	return s
}

// The IPv6 controller runs on the same dual-stack snapshots as IPv4's, and uses only IPv6:
// its probes' sources, its captures, its routes (link-local gateways) and its flushes.
func TestIPv6ControllerUsesIPv6(t *testing.T) {
	s := newFamSim(t, uplink.IPv6, map[string]uplink.Device{"eth0": ethDual, "wlan0": wlanDual, "wwan0": wwanV6})
	if s.c.Family() != uplink.IPv6 || s.c.Selected() != "ethnet" {
		t.Fatalf("family %v selected %q", s.c.Family(), s.c.Selected())
	}
	for _, v := range s.c.Views() {
		if v.State != uplink.ItfUpSS || v.Family != uplink.IPv6 || len(v.Device.Addrs) != 1 || !v.Device.Addrs[0].Addr().Is6() {
			t.Errorf("%s: %v family %v addrs %v", v.Settings.Name, v.State, v.Family, v.Device.Addrs)
		}
		if src := s.srcs[v.Settings.Name]; src != v.Device.Addrs[0].Addr() {
			t.Errorf("%s probed from %v", v.Settings.Name, src)
		}
		if p := s.capture[v.Settings.Name]; len(p) != 1 || !p[0].Addr().Is6() {
			t.Errorf("%s captured on %v", v.Settings.Name, p)
		}
	}
	want := []string{"ethnet 2001:db8:10::2/64 via fe80::10", "stanet 2001:db8:20::2/64 via fe80::20", "modemnet 2001:db8:30::2/64 via fe80::30"}
	var got []string
	for _, u := range s.routes.Uplinks {
		got = append(got, u.Name+" "+u.Addr.String()+" via "+u.Gateway.String())
	}
	if !slices.Equal(got, want) || s.routes.Selected != "ethnet" {
		t.Fatalf("IPv6 routes %q selected %q, want %q", got, s.routes.Selected, want)
	}
	down := ethDual
	down.Carrier = false
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": down})
	if s.routes.Selected != "stanet" || !slices.Equal(s.flushed, []netip.Addr{netip.MustParseAddr("2001:db8:10::2")}) {
		t.Fatalf("carrier loss: selected %q, flushed %v (want only eth0's IPv6 address)", s.routes.Selected, s.flushed)
	}
}

// The IPv4 controller on the same snapshots: the IPv6-only cellular uplink is down for IPv4
// and left out of its routes, while the IPv6 controller proves and uses it.
func TestIPv6OnlyUplink(t *testing.T) {
	noCarrier := func(d uplink.Device) uplink.Device { d.Carrier = false; return d }
	devs := map[string]uplink.Device{"eth0": noCarrier(ethDual), "wlan0": noCarrier(wlanDual), "wwan0": wwanV6}
	s4, s6 := newFamSim(t, uplink.IPv4, devs), newFamSim(t, uplink.IPv6, devs)
	if st := s4.c.Views()[2].State; st != uplink.ItfDownSX || s4.c.Selected() != "" || len(s4.routes.Uplinks) != 0 {
		t.Fatalf("IPv4 view of the IPv6-only uplink: %v, selected %q, routes %+v", st, s4.c.Selected(), s4.routes)
	}
	if s6.c.Selected() != "modemnet" || s6.routes.Selected != "modemnet" || s6.srcs["modemnet"] != netip.MustParseAddr("2001:db8:30::2") {
		t.Fatalf("IPv6: selected %q routes %+v probe source %v", s6.c.Selected(), s6.routes, s6.srcs["modemnet"])
	}
	u := Combine(CombineSelected(s4.c.Selected(), s6.c.Selected()), s4.c.Views(), s6.c.Views())[2]
	if u.State != uplink.ItfUpSS || !u.InUse || u.Primary != uplink.IPv6 {
		t.Fatalf("combined: %v in use %v primary %v", u.State, u.InUse, u.Primary)
	}
	if s4.c.NetworkType() != -1 || s6.c.NetworkType() != int(uplink.Cellular) {
		t.Fatalf("network types %d %d", s4.c.NetworkType(), s6.c.NetworkType())
	}
}

// Ethernet's IPv6 dies silently while its IPv4 works: Ethernet keeps IPv4, IPv6 moves to
// Wi-Fi, only Ethernet's IPv6 flows are flushed, and Ethernet stays proven and in use.
func TestIPv6DeadIPv4Works(t *testing.T) {
	devs := map[string]uplink.Device{"eth0": ethDual, "wlan0": wlanDual, "wwan0": wwanV6}
	s4, s6 := newFamSim(t, uplink.IPv4, devs), newFamSim(t, uplink.IPv6, devs)
	s6.healthy["ethnet"] = false
	took := s6.until(10*time.Second, "IPv6 fails over", func() bool { return s6.routes.Selected == "stanet" })
	s4.run(s6.now)
	if took > 2600*time.Millisecond {
		t.Errorf("IPv6 silent failure took %v", took)
	}
	if s4.routes.Selected != "ethnet" || s4.c.Counters().Switches != 1 || len(s4.flushed) != 0 {
		t.Fatalf("IPv4 moved: selected %q after %d switches, flushed %v", s4.routes.Selected, s4.c.Counters().Switches, s4.flushed)
	}
	if !slices.Equal(s6.flushed, []netip.Addr{netip.MustParseAddr("2001:db8:10::2")}) {
		t.Fatalf("IPv6 flushed %v", s6.flushed)
	}
	sel := CombineSelected(s4.c.Selected(), s6.c.Selected())
	eth := Combine(sel, s4.c.Views(), s6.c.Views())[0]
	v6, _ := eth.Family(uplink.IPv6)
	if sel != "ethnet" || eth.State != uplink.ItfUpSS || !eth.InUse || v6.State != uplink.ItfUpSF || v6.InUse {
		t.Fatalf("combined: in use %q, ethnet %v (IPv6 %v, in use %v)", sel, eth.State, v6.State, v6.InUse)
	}
	// IPv6 comes back: it fails back by the same hysteresis as IPv4.
	s6.healthy["ethnet"] = true
	s6.until(10*time.Second, "IPv6 fails back", func() bool { return s6.routes.Selected == "ethnet" })
	if got := s6.switches[len(s6.switches)-1]; got != "stanet>ethnet:failback" {
		t.Fatalf("IPv6 fail-back announced as %q", got)
	}
}

// An uplink with several addresses of the family (SLAAC next to DHCPv6): the lowest is the
// probes' and the route's Addr, the others ride along in OtherAddrs (their source rules), and
// a dead uplink's flows of every one of them are flushed.
func TestIPv6SeveralAddresses(t *testing.T) {
	eth := ethDual
	eth.Addrs = append(slices.Clone(eth.Addrs), netip.MustParsePrefix("2001:db8:11::9/64"))
	s := newFamSim(t, uplink.IPv6, map[string]uplink.Device{"eth0": eth, "wlan0": wlanDual, "wwan0": wwanV6})
	u := s.routes.Uplinks[0]
	if u.Name != "ethnet" || u.Addr != netip.MustParsePrefix("2001:db8:10::2/64") ||
		!slices.Equal(u.OtherAddrs, []netip.Prefix{netip.MustParsePrefix("2001:db8:11::9/64")}) || s.srcs["ethnet"] != u.Addr.Addr() {
		t.Fatalf("route uplink %+v, probed from %v", u, s.srcs["ethnet"])
	}
	down := eth
	down.Carrier = false
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": down})
	if want := []netip.Addr{netip.MustParseAddr("2001:db8:10::2"), netip.MustParseAddr("2001:db8:11::9")}; !slices.Equal(s.flushed, want) {
		t.Fatalf("flushed %v, want %v", s.flushed, want)
	}
}

// An uplink with IPv6 addresses in several prefixes (an RA's, a delegated one, a ULA): the
// capture is given every one of the family's subnets (once each, at most
// MaxCapturePrefixes), so traffic from or to any of them counts as the neighbourhood; when
// the addresses change it is given the new set; the IPv4 controller gives only IPv4's.
func TestCaptureGetsEveryPrefix(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	eth := ethDual
	eth.Addrs = append(slices.Clone(eth.Addrs), pfx("2001:db8:11::5/64", "2001:db8:10::99/64", "fd00:db8::2/48")...)
	devs := map[string]uplink.Device{"eth0": eth, "wlan0": wlanDual, "wwan0": wwanV6}
	s6, s4 := newFamSim(t, uplink.IPv6, devs), newFamSim(t, uplink.IPv4, devs)
	if got, want := s6.capture["ethnet"], pfx("2001:db8:10::2/64", "2001:db8:11::5/64", "fd00:db8::2/48"); !slices.Equal(got, want) {
		t.Errorf("IPv6 capture on %v, want %v", got, want)
	}
	if got, want := s4.capture["ethnet"], pfx("198.18.10.2/24"); !slices.Equal(got, want) {
		t.Errorf("IPv4 capture on %v, want %v", got, want)
	}
	// Twelve prefixes: the first eight.
	many := ethDual
	var want []netip.Prefix
	for i := range 12 {
		p := netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::2/64", 0x100+i))
		many.Addrs = append(many.Addrs, p)
		if i < MaxCapturePrefixes-1 {
			want = append(want, p)
		}
	}
	want = append(want, netip.MustParsePrefix("2001:db8:10::2/64"))
	slices.SortFunc(want, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	s6.c.DeviceUpdate(map[string]uplink.Device{"eth0": many})
	if got := s6.capture["ethnet"]; !slices.Equal(got, want) {
		t.Errorf("12 prefixes: capture on %v, want %v", got, want)
	}
}
