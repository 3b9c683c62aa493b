package rtnl_test

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/rtnl"
	"github.com/afero/af-conn/internal/testbed"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ipv6NS is a fresh namespace with eth0 (peer eth0p), both up, and a slow
// duplicate address detection on eth0 (an address added with DAD stays
// tentative for 10 s).
func ipv6NS(t *testing.T) (*testbed.NS, *rtnl.Conn, int) {
	ns := testbed.NewNS(t, "rtnl")
	must(t, ns.IP("link add eth0 type veth peer name eth0p"))
	must(t, ns.Sysctl("net.ipv6.conf.eth0.accept_dad", "1"))
	must(t, ns.Sysctl("net.ipv6.conf.eth0.dad_transmits", "1"))
	must(t, ns.Sysctl("net.ipv6.neigh.eth0.retrans_time_ms", "10000"))
	must(t, ns.IP("link set eth0 up", "link set eth0p up"))
	c, err := rtnl.Dial(unix.NETLINK_ROUTE, ns.Handle(t))
	must(t, err)
	t.Cleanup(func() { c.Close() })
	l, err := c.LinkByName("eth0")
	must(t, err)
	return ns, c, l.Index
}

// The address dump carries IPv6 addresses with their flags: only a global
// address whose DAD passed and whose preferred lifetime runs is usable.
func TestAddrsIPv6Flags(t *testing.T) {
	ns, c, idx := ipv6NS(t)
	must(t, ns.IP(
		"addr add 198.18.1.2/24 dev eth0",
		"addr add 2001:db8:1::2/64 dev eth0 nodad",                              // usable
		"addr add 2001:db8:1::3/64 dev eth0",                                    // tentative for 10 s
		"addr add 2001:db8:1::5/64 dev eth0 nodad preferred_lft 0 valid_lft 99", // deprecated
		"addr add 2001:db8:1::4/64 dev eth0p nodad",                             // the peer has it ...
		"addr add 2001:db8:1::4/64 dev eth0",                                    // ... so DAD fails here
	))
	want := map[string]bool{"198.18.1.2/24": true, "2001:db8:1::2/64": true, "2001:db8:1::3/64": false,
		"2001:db8:1::4/64": false, "2001:db8:1::5/64": false}
	var got map[string]rtnl.Addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		addrs, err := c.Addrs()
		must(t, err)
		got = map[string]rtnl.Addr{}
		linkLocal := false
		for _, a := range addrs {
			if a.Index != idx {
				continue
			}
			got[a.Prefix.String()] = a
			if a.Prefix.Addr().IsLinkLocalUnicast() {
				linkLocal = true
				if a.Usable() {
					t.Errorf("link-local %v (scope %d) usable", a.Prefix, a.Scope)
				}
			}
		}
		// DAD of ::4 fails within about a second (rtr_solicit_delay).
		if got["2001:db8:1::4/64"].Flags&unix.IFA_F_DADFAILED != 0 && linkLocal {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("DAD of 2001:db8:1::4 did not fail, or no link-local address: %+v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for p, usable := range want {
		a, ok := got[p]
		if !ok {
			t.Errorf("%s not dumped: %+v", p, got)
			continue
		}
		if a.Usable() != usable {
			t.Errorf("%s (flags %#x, scope %d): usable %v, want %v", p, a.Flags, a.Scope, a.Usable(), usable)
		}
	}
	if f := got["2001:db8:1::3/64"].Flags; f&unix.IFA_F_TENTATIVE == 0 {
		t.Errorf("2001:db8:1::3 flags %#x: not tentative", f)
	}
	if f := got["2001:db8:1::5/64"].Flags; f&unix.IFA_F_DEPRECATED == 0 {
		t.Errorf("2001:db8:1::5 flags %#x: not deprecated", f)
	}
}

// IPv6 routes (from RA, with a link-local gateway) are dumped per family,
// and ours are replaced and deleted through a link-local gateway.
func TestRoutesIPv6(t *testing.T) {
	ns, c, idx := ipv6NS(t)
	must(t, ns.IP("addr add 198.18.1.2/24 dev eth0", "route add default via 198.18.1.1 dev eth0 metric 10",
		"addr add 2001:db8:1::2/64 dev eth0 nodad",
		"route add default via fe80::1 dev eth0 proto ra metric 1024",
		"route add default via fe80::9 dev eth0 metric 512 table 300 pref high"))
	isDefault6 := func(r rtnl.Route) bool { return r.Family == unix.AF_INET6 && r.IsDefault() && r.LinkIndex == idx }
	v6, err := c.Routes(unix.AF_INET6)
	must(t, err)
	ra := slices.IndexFunc(v6, func(r rtnl.Route) bool { return isDefault6(r) && r.Table == unix.RT_TABLE_MAIN })
	if ra < 0 || v6[ra].Gw != netip.MustParseAddr("fe80::1") || v6[ra].Protocol != unix.RTPROT_RA || v6[ra].Priority != 1024 {
		t.Fatalf("RA default route not dumped right: %+v", v6)
	}
	if !slices.ContainsFunc(v6, func(r rtnl.Route) bool {
		return isDefault6(r) && r.Table == 300 && r.Gw == netip.MustParseAddr("fe80::9") && r.Pref == rtnl.PrefHigh
	}) {
		t.Fatalf("table 300's default route (router preference high) missing: %+v", v6)
	}
	for _, r := range v6 {
		if r.Family != unix.AF_INET6 {
			t.Fatalf("IPv4 route in the IPv6 dump: %+v", r)
		}
	}
	v4, err := c.Routes(unix.AF_INET)
	must(t, err)
	if slices.ContainsFunc(v4, func(r rtnl.Route) bool { return r.Family != unix.AF_INET }) ||
		!slices.ContainsFunc(v4, func(r rtnl.Route) bool { return r.IsDefault() && r.Gw == netip.MustParseAddr("198.18.1.1") }) {
		t.Fatalf("IPv4 dump: %+v", v4)
	}
	all, err := c.Routes(unix.AF_UNSPEC)
	must(t, err)
	if len(all) != len(v4)+len(v6) {
		t.Fatalf("both families: %d routes, want %d + %d", len(all), len(v4), len(v6))
	}

	// Ours: metric 1 (the lowest IPv6 has), via a link-local gateway.
	own := &rtnl.Route{Gw: netip.MustParseAddr("fe80::7"), LinkIndex: idx, Priority: 1, Table: unix.RT_TABLE_MAIN, Protocol: 175}
	must(t, c.RouteReplace(own))
	own2 := *own
	own2.Gw = netip.MustParseAddr("fe80::8")
	must(t, c.RouteReplace(&own2)) // in place: same table, destination, metric
	out, err := ns.Run("ip", "-6", "route", "show", "default", "proto", "175")
	must(t, err)
	if out != "default via fe80::8 dev eth0 metric 1 pref medium\n" {
		t.Fatalf("our route after replace:\n%s", out)
	}
	must(t, c.RouteDel(&own2))
	if err := c.RouteDel(&own2); !errors.Is(err, unix.ESRCH) {
		t.Fatalf("second delete: %v, want ESRCH", err)
	}
}

// IPv6 rules are added, listed per family and removed.
func TestRulesIPv6(t *testing.T) {
	ns, c, _ := ipv6NS(t)
	r := &rtnl.Rule{Priority: 9001, Src: netip.MustParsePrefix("2001:db8:1::2/128"), Table: 241}
	must(t, c.RuleAdd(r))
	if err := c.RuleAdd(r); !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second add: %v, want EEXIST", err)
	}
	out, err := ns.Run("ip", "-6", "rule", "show", "pref", "9001")
	must(t, err)
	if out != "9001:\tfrom 2001:db8:1::2 lookup 241\n" {
		t.Fatalf("ip -6 rule:\n%s", out)
	}
	v6, err := c.Rules(unix.AF_INET6)
	must(t, err)
	want := rtnl.Rule{Family: unix.AF_INET6, Priority: 9001, Src: r.Src, Table: 241, Action: unix.FR_ACT_TO_TBL}
	if !slices.Contains(v6, want) {
		t.Fatalf("IPv6 rules %+v lack %+v", v6, want)
	}
	v4, err := c.Rules(unix.AF_INET)
	must(t, err)
	if slices.ContainsFunc(v4, func(r rtnl.Rule) bool { return r.Family != unix.AF_INET || r.Priority == 9001 }) {
		t.Fatalf("IPv4 rules: %+v", v4)
	}
	must(t, c.RuleDel(r))
	if err := c.RuleDel(r); !errors.Is(err, unix.ENOENT) {
		t.Fatalf("second delete: %v, want ENOENT", err)
	}
}

// A subscription to the IPv6 groups gets IPv6 address (with flags), route
// and rule changes.
func TestSubscribeIPv6(t *testing.T) {
	ns, _, idx := ipv6NS(t)
	s, err := rtnl.Subscribe(ns.Handle(t), rtnl.GroupAddr6|rtnl.GroupRoute6|rtnl.GroupRule6, 0)
	must(t, err)
	defer s.Close()
	must(t, ns.IP("addr add 2001:db8:1::3/64 dev eth0",
		"route add default via fe80::1 dev eth0 proto ra metric 1024"))
	_, err = ns.Run("ip", "-6", "rule", "add", "from", "2001:db8:1::3", "lookup", "241", "pref", "9001")
	must(t, err)
	var addr, route, rule bool
	deadline := time.Now().Add(5 * time.Second)
	for !(addr && route && rule) && time.Now().Before(deadline) {
		msgs, err := s.Receive()
		must(t, err)
		for _, m := range msgs {
			u, err := rtnl.Parse(m)
			must(t, err)
			switch u := u.(type) {
			case rtnl.AddrUpdate:
				if u.Prefix == netip.MustParsePrefix("2001:db8:1::3/64") && u.Index == idx && u.Flags&unix.IFA_F_TENTATIVE != 0 && !u.Usable() {
					addr = true
				}
			case rtnl.RouteUpdate:
				if u.Family == unix.AF_INET6 && u.IsDefault() && u.Gw == netip.MustParseAddr("fe80::1") && u.Protocol == unix.RTPROT_RA && u.LinkIndex == idx {
					route = true
				}
			case rtnl.RuleUpdate:
				rule = true
			}
		}
	}
	if !addr || !route || !rule {
		t.Fatalf("seen: tentative address %v, RA route %v, rule %v", addr, route, rule)
	}
}
