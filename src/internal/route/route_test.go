package route

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/testbed"
)

func setup(t *testing.T) (*testbed.NS, *Manager) {
	ns := testbed.NewNS(t, "route")
	for _, d := range []struct{ dev, addr, gw, metric string }{
		{"eth0", "198.18.1.2/24", "198.18.1.1", "10"},
		{"wlan0", "198.18.2.2/24", "198.18.2.1", "20"},
	} {
		upVeth(t, ns, d.dev)
		ipc(t, ns, "addr", "add", d.addr, "dev", d.dev)
		ipc(t, ns, "route", "add", "default", "via", d.gw, "dev", d.dev, "metric", d.metric)
	}
	h := ns.Handle(t)
	m, err := New(Config{Namespace: &h})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return ns, m
}

// ipc runs ip inside the namespace and returns its output.
func ipc(t *testing.T, ns *testbed.NS, args ...string) string {
	t.Helper()
	out, err := ns.Run("ip", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// upVeth makes dev, a veth with its peer in the same namespace, both up
// (this kernel has no dummy devices).
func upVeth(t *testing.T, ns *testbed.NS, dev string) {
	ipc(t, ns, "link", "add", dev, "type", "veth", "peer", "name", dev+"p")
	ipc(t, ns, "link", "set", dev+"p", "up")
	ipc(t, ns, "link", "set", dev, "up")
}

var (
	eth  = Uplink{Name: "ethnet", Slot: 0, Device: "eth0", Addr: netip.MustParsePrefix("198.18.1.2/24"), Gateway: netip.MustParseAddr("198.18.1.1")}
	wlan = Uplink{Name: "stanet", Slot: 1, Device: "wlan0", Addr: netip.MustParsePrefix("198.18.2.2/24"), Gateway: netip.MustParseAddr("198.18.2.1")}
)

func mustApply(t *testing.T, m *Manager, d Desired) {
	t.Helper()
	if err := m.Apply(d); err != nil {
		t.Fatalf("Apply(%+v): %v", d, err)
	}
}

// routeGet asks the kernel where a packet would go.
func routeGet(t *testing.T, ns *testbed.NS, args ...string) string {
	return strings.TrimSpace(ipc(t, ns, append([]string{"-4", "route", "get"}, args...)...))
}

func TestApplySwitchRestoreCleanup(t *testing.T) {
	ns, m := setup(t)
	mustApply(t, m, Desired{Uplinks: []Uplink{eth, wlan}, Selected: "ethnet"})
	if got := routeGet(t, ns, "198.19.0.1"); !strings.Contains(got, "via 198.18.1.1 dev eth0") {
		t.Fatalf("default goes %q, want via eth0", got)
	}
	main := ipc(t, ns, "-4", "route", "show", "default", "metric", "0")
	if !strings.Contains(main, "proto 175") || strings.Count(main, "default") != 1 {
		t.Fatalf("main default routes:\n%s", main)
	}
	// Source rule: traffic from Wi-Fi's address stays on Wi-Fi.
	if got := routeGet(t, ns, "198.19.0.1", "from", "198.18.2.2"); !strings.Contains(got, "via 198.18.2.1 dev wlan0") {
		t.Fatalf("from wlan address goes %q", got)
	}
	if got := ipc(t, ns, "-4", "route", "show", "table", "241"); !strings.Contains(got, "198.18.2.0/24 dev wlan0") || !strings.Contains(got, "default via 198.18.2.1") {
		t.Fatalf("table 241:\n%s", got)
	}

	// Switch: exactly one metric-0 default, now via Wi-Fi.
	mustApply(t, m, Desired{Uplinks: []Uplink{eth, wlan}, Selected: "stanet"})
	main = ipc(t, ns, "-4", "route", "show", "default", "metric", "0")
	if strings.Count(main, "default") != 1 || !strings.Contains(main, "dev wlan0") {
		t.Fatalf("after switch:\n%s", main)
	}
	if got := routeGet(t, ns, "198.19.0.1", "from", "198.18.1.2"); !strings.Contains(got, "dev eth0") {
		t.Fatalf("from eth address after switch goes %q, want eth0", got)
	}

	// Someone deletes our route and our rule: Apply restores them.
	ipc(t, ns, "route", "del", "default", "metric", "0")
	ipc(t, ns, "rule", "del", "pref", "9000")
	mustApply(t, m, Desired{Uplinks: []Uplink{eth, wlan}, Selected: "stanet"})
	if got := routeGet(t, ns, "198.19.0.1"); !strings.Contains(got, "dev wlan0") {
		t.Fatalf("not restored: %q", got)
	}
	if got := ipc(t, ns, "-4", "rule", "show"); !strings.Contains(got, "9000:\tfrom 198.18.1.2 lookup 240") {
		t.Fatalf("rule not restored:\n%s", got)
	}

	// A changed gateway (DHCP) replaces the routes in place.
	wlan2 := wlan
	wlan2.Gateway = netip.MustParseAddr("198.18.2.254")
	mustApply(t, m, Desired{Uplinks: []Uplink{eth, wlan2}, Selected: "stanet"})
	if got := ipc(t, ns, "-4", "route", "show", "default", "metric", "0"); !strings.Contains(got, "via 198.18.2.254") || strings.Count(got, "default") != 1 {
		t.Fatalf("after gateway change:\n%s", got)
	}

	// Wi-Fi gone: its table and rule go, no default route remains.
	mustApply(t, m, Desired{Uplinks: []Uplink{eth}})
	if got := ipc(t, ns, "-4", "route", "show", "table", "241"); got != "" {
		t.Fatalf("table 241 left:\n%s", got)
	}
	if got := ipc(t, ns, "-4", "route", "show", "default", "metric", "0"); got != "" {
		t.Fatalf("default left:\n%s", got)
	}
	if got := ipc(t, ns, "-4", "rule", "show"); strings.Contains(got, "9001") {
		t.Fatalf("rule left:\n%s", got)
	}

	// keep_route: Cleanup(true) leaves only the main default route.
	mustApply(t, m, Desired{Uplinks: []Uplink{eth, wlan}, Selected: "ethnet"})
	if err := m.Cleanup(true); err != nil {
		t.Fatal(err)
	}
	if got := ipc(t, ns, "-4", "route", "show", "table", "all", "proto", "175"); strings.Count(strings.TrimSpace(got), "\n") != 0 || !strings.Contains(got, "default via 198.18.1.1 dev eth0") {
		t.Fatalf("after Cleanup(true):\n%s", got)
	}
	if err := m.Cleanup(false); err != nil {
		t.Fatal(err)
	}
	if got := ipc(t, ns, "-4", "route", "show", "table", "all", "proto", "175"); got != "" {
		t.Fatalf("after Cleanup(false):\n%s", got)
	}
	if got := ipc(t, ns, "-4", "rule", "show"); strings.Contains(got, "lookup 24") {
		t.Fatalf("rules left:\n%s", got)
	}
	// The uplinks' own routes were never touched.
	if got := ipc(t, ns, "-4", "route", "show", "default"); strings.Count(got, "default") != 2 {
		t.Fatalf("netifd's routes changed:\n%s", got)
	}
}

func TestApplyRejectsBadInput(t *testing.T) {
	_, m := setup(t)
	if err := m.Apply(Desired{Uplinks: []Uplink{eth}, Selected: "stanet"}); err == nil || !strings.Contains(err.Error(), "stanet") {
		t.Fatalf("unknown selected: %v", err)
	}
	bad := eth
	bad.Device = "nosuch0"
	if err := m.Apply(Desired{Uplinks: []Uplink{bad}}); err == nil || !strings.Contains(err.Error(), "nosuch0") {
		t.Fatalf("missing device: %v", err)
	}
	bad = eth
	bad.Slot = 99
	if err := m.Apply(Desired{Uplinks: []Uplink{bad}}); err == nil || !strings.Contains(err.Error(), "slot") {
		t.Fatalf("bad slot: %v", err)
	}
	// Nothing was half-applied.
	if rs, err := m.ours(); err != nil || len(rs) != 0 {
		t.Fatalf("routes after rejected input: %v %v", rs, err)
	}
}

func TestPointToPointUplink(t *testing.T) {
	ns, m := setup(t)
	upVeth(t, ns, "wwan0")
	ipc(t, ns, "addr", "add", "198.18.3.2/32", "dev", "wwan0")
	wwan := Uplink{Name: "modemnet", Slot: 2, Device: "wwan0", Addr: netip.MustParsePrefix("198.18.3.2/32")}
	mustApply(t, m, Desired{Uplinks: []Uplink{wwan}, Selected: "modemnet"})
	if got := routeGet(t, ns, "198.19.0.1"); !strings.Contains(got, "dev wwan0") {
		t.Fatalf("p2p default goes %q", got)
	}
}

// TestFlushConntrack removes the entries of flows through an address of
// either family: originated from it, or masqueraded to it (the reply
// comes back to it); other flows stay.
func TestFlushConntrack(t *testing.T) {
	ns, m := setup(t)
	// The entries are made and listed with vishvananda/netlink, a netlink
	// implementation independent of the one under test.
	h, err := netlink.NewHandleAt(ns.Handle(t), unix.NETLINK_NETFILTER)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	mk := func(src, dst, rdst string, sport uint16) {
		s, d, r := net.ParseIP(src), net.ParseIP(dst), net.ParseIP(rdst)
		family := netlink.InetFamily(unix.AF_INET6)
		if s.To4() != nil {
			s, d, r, family = s.To4(), d.To4(), r.To4(), unix.AF_INET
		}
		f := &netlink.ConntrackFlow{FamilyType: uint8(family), Forward: netlink.IPTuple{
			SrcIP: s, DstIP: d, Protocol: unix.IPPROTO_UDP, SrcPort: sport, DstPort: 7,
		}, Reverse: netlink.IPTuple{
			SrcIP: d, DstIP: r, Protocol: unix.IPPROTO_UDP, SrcPort: 7, DstPort: sport,
		}, TimeOut: 100}
		if err := h.ConntrackCreate(netlink.ConntrackTable, family, f); err != nil {
			t.Fatalf("create conntrack entry: %v", err)
		}
	}
	mk("198.18.1.2", "198.19.0.1", "198.18.1.2", 1000)           // local flow over eth
	mk("198.18.9.5", "198.19.0.1", "198.18.1.2", 1001)           // LAN client masqueraded over eth
	mk("198.18.2.2", "198.19.0.1", "198.18.2.2", 1002)           // local flow over Wi-Fi: kept
	mk("2001:db8:1::2", "2001:db8:ff::1", "2001:db8:1::2", 1003) // IPv6 over eth
	mk("2001:db8:9::5", "2001:db8:ff::1", "2001:db8:1::2", 1004) // IPv6 LAN client, NAT66 over eth
	mk("2001:db8:2::2", "2001:db8:ff::1", "2001:db8:2::2", 1005) // IPv6 over Wi-Fi: kept
	mk("2001:db8:9::6", "2001:db8:ff::1", "2001:db8:9::6", 1006) // IPv6 LAN client, routed: kept
	n, err := m.FlushConntrack(netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("2001:db8:1::2"))
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("removed %d entries, want 4", n)
	}
	left4, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(left4) != 1 || !left4[0].Forward.SrcIP.Equal(net.ParseIP("198.18.2.2")) {
		t.Fatalf("IPv4 left: %v", left4)
	}
	left6, err := h.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V6)
	if err != nil {
		t.Fatal(err)
	}
	var srcs []string
	for _, f := range left6 {
		srcs = append(srcs, f.Forward.SrcIP.String())
	}
	slices.Sort(srcs)
	if !slices.Equal(srcs, []string{"2001:db8:2::2", "2001:db8:9::6"}) {
		t.Fatalf("IPv6 left: %v", left6)
	}
}
