package route

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/rtnl"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
)

// setup6 is setup's namespace made dual-stack as netifd leaves it: eth0
// with two IPv6 prefixes and a static default route (metric 10), wlan0
// with an RA's (proto ra, metric 1024), both via link-local gateways. It
// returns the IPv4 Manager too.
func setup6(t *testing.T) (*testbed.NS, *Manager, *Manager) {
	ns, m4 := setup(t)
	for _, c := range [][]string{
		{"addr", "add", "2001:db8:1::2/64", "dev", "eth0", "nodad"},
		{"addr", "add", "2001:db8:11::2/64", "dev", "eth0", "nodad"},
		{"addr", "add", "2001:db8:2::2/64", "dev", "wlan0", "nodad"},
		{"-6", "route", "add", "default", "via", "fe80::1", "dev", "eth0", "metric", "10"},
		{"-6", "route", "add", "default", "via", "fe80::2", "dev", "wlan0", "proto", "ra", "metric", "1024"},
	} {
		ipc(t, ns, c...)
	}
	h := ns.Handle(t)
	m6, err := New(Config{Family: uplink.IPv6, Namespace: &h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m6.Close)
	return ns, m4, m6
}

var (
	// The gateway as a caller may have it, with its zone.
	eth6 = Uplink{Name: "ethnet", Slot: 0, Device: "eth0", Addr: netip.MustParsePrefix("2001:db8:1::2/64"),
		OtherAddrs: []netip.Prefix{netip.MustParsePrefix("2001:db8:11::2/64")}, Gateway: netip.MustParseAddr("fe80::1%eth0")}
	wlan6 = Uplink{Name: "stanet", Slot: 1, Device: "wlan0", Addr: netip.MustParsePrefix("2001:db8:2::2/64"), Gateway: netip.MustParseAddr("fe80::2")}
)

func routeGet6(t *testing.T, ns *testbed.NS, args ...string) string {
	return strings.TrimSpace(ipc(t, ns, append([]string{"-6", "route", "get"}, args...)...))
}

// quiet says no route of ours nor rule of either family changes for a
// while (an Apply with nothing to do must change nothing).
func quiet(t *testing.T, ns *testbed.NS, f func()) {
	t.Helper()
	s, err := rtnl.Subscribe(ns.Handle(t), rtnl.GroupRoute|rtnl.GroupRule|rtnl.GroupRoute6|rtnl.GroupRule6, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan int, 1)
	go func() {
		n := 0
		defer func() { got <- n }()
		for {
			msgs, err := s.Receive()
			if err != nil {
				return
			}
			for _, m := range msgs {
				// The kernel's own (link-local addresses finishing DAD
				// add local routes) are not Apply's.
				u, _ := rtnl.Parse(m)
				if r, ok := u.(rtnl.RouteUpdate); !ok || r.Protocol == DefaultProto {
					n++
				}
			}
		}
	}()
	f()
	time.Sleep(200 * time.Millisecond)
	s.Close()
	if n := <-got; n != 0 {
		t.Fatalf("%d messages of our routes or of rules, want none", n)
	}
}

// IPv6: the default route of the lowest metric (1) via the selected
// uplink's link-local gateway and device, per-uplink tables and a source
// rule per address, restored when deleted, switched in place, removed by
// Cleanup; the IPv4 Manager's state in the same namespace is untouched.
func TestApplyIPv6(t *testing.T) {
	ns, m4, m6 := setup6(t)
	mustApply(t, m4, Desired{Uplinks: []Uplink{eth, wlan}, Selected: "ethnet"})
	v4rules := ipc(t, ns, "-4", "rule", "show")
	v4routes := ipc(t, ns, "-4", "route", "show", "table", "all", "proto", "175")

	d := Desired{Uplinks: []Uplink{eth6, wlan6}, Selected: "ethnet"}
	mustApply(t, m6, d)
	if got := ipc(t, ns, "-6", "route", "show", "default", "proto", "175"); got != "default via fe80::1 dev eth0 metric 1 pref medium\n" {
		t.Fatalf("main IPv6 default routes:\n%s", got)
	}
	if got := routeGet6(t, ns, "2001:db8:ff::1"); !strings.Contains(got, "via fe80::1 dev eth0") {
		t.Fatalf("default goes %q, want via eth0", got)
	}
	// Each address of an uplink keeps its traffic on that uplink.
	for _, c := range []struct{ src, want string }{
		{"2001:db8:2::2", "via fe80::2 dev wlan0"},
		{"2001:db8:1::2", "via fe80::1 dev eth0"},
		{"2001:db8:11::2", "via fe80::1 dev eth0"},
	} {
		if got := routeGet6(t, ns, "2001:db8:ff::1", "from", c.src); !strings.Contains(got, c.want) {
			t.Fatalf("from %s goes %q, want %s", c.src, got, c.want)
		}
	}
	if got := ipc(t, ns, "-6", "route", "show", "table", "241"); !strings.Contains(got, "2001:db8:2::/64 dev wlan0") || !strings.Contains(got, "default via fe80::2 dev wlan0") {
		t.Fatalf("table 241:\n%s", got)
	}
	if got := ipc(t, ns, "-6", "route", "show", "table", "240"); strings.Count(got, "dev eth0 proto 175 src") != 2 {
		t.Fatalf("table 240 lacks an on-link prefix of eth0:\n%s", got)
	}
	// Nothing to do (and a zoned gateway) changes nothing.
	quiet(t, ns, func() { mustApply(t, m6, d) })

	// Switch: one default route of ours, now via Wi-Fi's router.
	d.Selected = "stanet"
	mustApply(t, m6, d)
	if got := ipc(t, ns, "-6", "route", "show", "default", "proto", "175"); got != "default via fe80::2 dev wlan0 metric 1 pref medium\n" {
		t.Fatalf("after switch:\n%s", got)
	}
	if got := routeGet6(t, ns, "2001:db8:ff::1", "from", "2001:db8:1::2"); !strings.Contains(got, "dev eth0") {
		t.Fatalf("from eth's address after switch goes %q, want eth0", got)
	}

	// Someone deletes our route and a rule: Apply restores them.
	ipc(t, ns, "-6", "route", "del", "default", "proto", "175", "metric", "1")
	ipc(t, ns, "-6", "rule", "del", "from", "2001:db8:11::2", "pref", "9000")
	if got := routeGet6(t, ns, "2001:db8:ff::1"); !strings.Contains(got, "dev eth0") {
		t.Fatalf("after deletion the kernel's own default should win: %q", got)
	}
	mustApply(t, m6, d)
	if got := routeGet6(t, ns, "2001:db8:ff::1"); !strings.Contains(got, "via fe80::2 dev wlan0") {
		t.Fatalf("not restored: %q", got)
	}
	if got := ipc(t, ns, "-6", "rule", "show"); !strings.Contains(got, "9000:\tfrom 2001:db8:11::2 lookup 240") || !strings.Contains(got, "9000:\tfrom 2001:db8:1::2 lookup 240") {
		t.Fatalf("rule not restored:\n%s", got)
	}

	// A new router (gateway) replaces the routes in place.
	wlan6b := wlan6
	wlan6b.Gateway = netip.MustParseAddr("fe80::22")
	mustApply(t, m6, Desired{Uplinks: []Uplink{eth6, wlan6b}, Selected: "stanet"})
	if got := ipc(t, ns, "-6", "route", "show", "default", "proto", "175"); got != "default via fe80::22 dev wlan0 metric 1 pref medium\n" {
		t.Fatalf("after gateway change:\n%s", got)
	}
	if got := ipc(t, ns, "-6", "route", "show", "table", "241", "default"); !strings.Contains(got, "via fe80::22") || strings.Count(got, "default") != 1 {
		t.Fatalf("table 241 after gateway change:\n%s", got)
	}

	// An address gone: its rule goes.
	eth6b := eth6
	eth6b.OtherAddrs = nil
	mustApply(t, m6, Desired{Uplinks: []Uplink{eth6b, wlan6b}, Selected: "stanet"})
	if got := ipc(t, ns, "-6", "rule", "show"); strings.Contains(got, "2001:db8:11::2") || !strings.Contains(got, "from 2001:db8:1::2 lookup 240") {
		t.Fatalf("rules after an address went:\n%s", got)
	}

	// IPv4's state was never touched by the IPv6 Manager.
	if got := ipc(t, ns, "-4", "rule", "show"); got != v4rules {
		t.Fatalf("IPv4 rules changed:\n%s\nwas:\n%s", got, v4rules)
	}
	if got := ipc(t, ns, "-4", "route", "show", "table", "all", "proto", "175"); got != v4routes {
		t.Fatalf("IPv4 routes changed:\n%s\nwas:\n%s", got, v4routes)
	}

	// keep_route: Cleanup(true) leaves only the main default route; then
	// nothing of ours is left in IPv6, and IPv4's is still there.
	if err := m6.Cleanup(true); err != nil {
		t.Fatal(err)
	}
	if got := ipc(t, ns, "-6", "route", "show", "table", "all", "proto", "175"); got != "default via fe80::22 dev wlan0 metric 1 pref medium\n" {
		t.Fatalf("after Cleanup(true):\n%s", got)
	}
	if err := m6.Cleanup(false); err != nil {
		t.Fatal(err)
	}
	if got := ipc(t, ns, "-6", "route", "show", "table", "all", "proto", "175"); got != "" {
		t.Fatalf("after Cleanup(false):\n%s", got)
	}
	if got := ipc(t, ns, "-6", "rule", "show"); strings.Contains(got, "lookup 24") {
		t.Fatalf("IPv6 rules left:\n%s", got)
	}
	if got := ipc(t, ns, "-4", "rule", "show"); got != v4rules {
		t.Fatalf("IPv6 Cleanup changed IPv4 rules:\n%s", got)
	}
	// The uplinks' own routes were never touched.
	if got := ipc(t, ns, "-6", "route", "show", "default"); got != "default via fe80::1 dev eth0 metric 10 pref medium\ndefault via fe80::2 dev wlan0 proto ra metric 1024 pref medium\n" {
		t.Fatalf("netifd's routes changed:\n%s", got)
	}
}

// Addresses of the other family are refused before anything changes.
func TestApplyIPv6RejectsIPv4(t *testing.T) {
	_, m4, m6 := setup6(t)
	for _, u := range []Uplink{eth, func() Uplink { u := eth6; u.Gateway = netip.MustParseAddr("198.18.1.1"); return u }(),
		func() Uplink {
			u := eth6
			u.OtherAddrs = []netip.Prefix{netip.MustParsePrefix("::ffff:198.18.1.2/120")}
			return u
		}()} {
		if err := m6.Apply(Desired{Uplinks: []Uplink{wlan6, u}, Selected: "stanet"}); err == nil || !strings.Contains(err.Error(), "ethnet") {
			t.Fatalf("%+v: %v", u, err)
		}
	}
	if rs, err := m6.ours(); err != nil || len(rs) != 0 {
		t.Fatalf("routes after rejected input: %v %v", rs, err)
	}
	if err := m4.Apply(Desired{Uplinks: []Uplink{eth6}}); err == nil || !strings.Contains(err.Error(), "not an ipv4") {
		t.Fatalf("IPv6 uplink to the IPv4 Manager: %v", err)
	}
	if _, err := New(Config{Family: 5}); err == nil {
		t.Fatal("family 5 accepted")
	}
}

// A point-to-point IPv6 uplink (a modem's wwan0 without a gateway): the
// default route goes via the device.
func TestPointToPointUplinkIPv6(t *testing.T) {
	ns, _, m6 := setup6(t)
	upVeth(t, ns, "wwan0")
	ipc(t, ns, "addr", "add", "2001:db8:3::2/128", "dev", "wwan0", "nodad")
	wwan := Uplink{Name: "modemnet", Slot: 2, Device: "wwan0", Addr: netip.MustParsePrefix("2001:db8:3::2/128")}
	mustApply(t, m6, Desired{Uplinks: []Uplink{wwan}, Selected: "modemnet"})
	if got := routeGet6(t, ns, "2001:db8:ff::1"); !strings.Contains(got, "dev wwan0") || strings.Contains(got, "via") {
		t.Fatalf("p2p default goes %q", got)
	}
}
