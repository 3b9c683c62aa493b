package failover_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// Red-team tests of issue 11 (IPv6 uplinks): a network that renumbers, and routers that change.

// routeGet6 says which device the device namespace's kernel sends a packet from src (any
// with "") to the cloud's echo through.
func (r *rig) routeGet6(src string) string {
	r.t.Helper()
	args := []string{"ip", "-6", "route", "get", testbed.Echo6Addr.String()}
	if src != "" {
		args = append(args, "from", src)
	}
	out := r.w.Device.MustRun(r.t, args...)
	if f := strings.Fields(out); len(f) > 0 {
		for i := range f[:len(f)-1] {
			if f[i] == "dev" {
				return f[i+1]
			}
		}
	}
	return out
}

// An uplink's address that went deprecated (preferred_lft 0: the network is renumbering, or
// SLAAC's preferred lifetime ran out) is still valid for the connections already using it
// (RFC 4862 5.5.4): they must keep leaving through their uplink, as the source rule of every
// other address does. Wi-Fi carries IPv6 while Ethernet is dead, gains a second address and its
// first one goes deprecated; Ethernet comes back and takes the IPv6 default route: traffic from
// the deprecated Wi-Fi address must still leave through wlan0.
func TestE2EDeprecatedAddressKeepsSourceRule(t *testing.T) {
	r := newDualRig(t)
	r.fault("eth0", testbed.Fault{Blackhole: true})
	r.waitDefault6("wlan0", 15*time.Second)
	old := r.w.MustUplink("wlan0").Addr6.String()
	r.w.Device.MustRun(t, "ip", "-6", "addr", "add", "2001:db8:20::3/64", "dev", "wlan0", "nodad")
	r.w.Device.MustRun(t, "ip", "-6", "addr", "change", old+"/64", "dev", "wlan0", "preferred_lft", "0")
	r.fault("eth0", testbed.Fault{})
	r.waitDefault6("eth0", 20*time.Second)
	time.Sleep(time.Second) // let connmgr apply whatever it applies after the switch
	if dev := r.routeGet6(old); dev != "wlan0" {
		t.Fatalf("traffic from wlan0's deprecated address %s leaves through %s, want wlan0 (its connections break)\nrules:\n%s\nlog:\n%s",
			old, dev, r.w.Device.MustRun(t, "ip", "-6", "rule"), r.p.Log())
	}
	if dev := r.routeGet6("2001:db8:20::3"); dev != "wlan0" {
		t.Fatalf("traffic from wlan0's new address leaves through %s, want wlan0", dev)
	}
}

// An admin deletes connmgr's IPv6 default route and a source rule of an uplink with 50 IPv6
// addresses (privacy addresses and further prefixes): both come back; on SIGTERM nothing of
// connmgr's is left in either family, and the kernel's own RA routes stay.
func TestE2EIPv6RoutesRestoredAndRemoved(t *testing.T) {
	r := newDualRig(t)
	ip := func(args ...string) string {
		t.Helper()
		return r.w.Device.MustRun(t, append([]string{"ip"}, args...)...)
	}
	for i := range 40 { // privacy-style addresses in the uplink's prefix
		ip("-6", "addr", "add", fmt.Sprintf("2001:db8:10::%x/64", 0x100+i), "dev", "eth0", "nodad")
	}
	for i := range 10 { // further prefixes (one subnet route each in the uplink's table)
		ip("-6", "addr", "add", fmt.Sprintf("2001:db8:10:%x::2/64", i+1), "dev", "eth0", "nodad")
	}
	countRules := func() int { return strings.Count(ip("-6", "rule", "show"), "lookup 240") }
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s\nrules:\n%s\nroutes:\n%s\nlog:\n%s", what, ip("-6", "rule", "show"),
					ip("-6", "route", "show", "table", "all", "proto", "175"), r.p.Log())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("eth0's 51 IPv6 addresses do not all get a source rule", func() bool { return countRules() == 51 })
	waitFor("eth0's 11 IPv6 subnets are not all on-link in its table", func() bool {
		return strings.Count("\n"+ip("-6", "route", "show", "table", "240", "proto", "175"), "\n2001:db8:10:") == 11
	})
	ip("-6", "route", "del", "default", "proto", "175", "metric", "1")
	waitFor("IPv6 default route not restored", func() bool {
		return strings.Contains(ip("-6", "route", "show", "default", "proto", "175"), "dev eth0")
	})
	ip("-6", "rule", "del", "from", "2001:db8:10::105", "pref", "9000")
	waitFor("IPv6 source rule not restored", func() bool { return countRules() == 51 })
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Fatalf("connmgr did not stop cleanly: %v", err)
	}
	for _, fam := range []string{"-4", "-6"} {
		if out := ip(fam, "route", "show", "table", "all", "proto", "175"); out != "" {
			t.Fatalf("%s routes left after exit:\n%s", fam, out)
		}
		if out := ip(fam, "rule", "show"); strings.Contains(out, "lookup 24") {
			t.Fatalf("%s rules left after exit:\n%s", fam, out)
		}
	}
	if out := ip("-6", "route", "show", "default"); strings.Count(out, "proto ra") != 3 {
		t.Fatalf("the kernel's RA default routes changed:\n%s", out)
	}
}

// IPv6 disabled on the in-use uplink at runtime (sysctl disable_ipv6=1: the kernel removes its
// IPv6 addresses, and its routes without a message for each): IPv6 moves to Wi-Fi at once,
// IPv4 stays, and nothing of connmgr's IPv6 state names eth0 any more.
func TestE2EDisableIPv6OnUplink(t *testing.T) {
	r := newDualRig(t)
	before := r.watch.count()
	start := time.Now()
	if err := r.w.Device.Sysctl("net.ipv6.conf.eth0.disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
	at := r.waitDefault6("wlan0", 5*time.Second)
	t.Logf("disable_ipv6 -> IPv6 switched in %v", at.Sub(start))
	r.echo6("wlan0")
	deadline := time.Now().Add(5 * time.Second)
	for {
		routes := r.w.Device.MustRun(t, "ip", "-6", "route", "show", "table", "all", "proto", "175")
		rules := r.w.Device.MustRun(t, "ip", "-6", "rule", "show")
		if !strings.Contains(routes, "eth0") && !strings.Contains(rules, "lookup 240") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connmgr's IPv6 state still names eth0:\n%s%s\nlog:\n%s", routes, rules, r.p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := dialEcho(t, r.w).works(5 * time.Second); err != nil {
		t.Fatalf("IPv4 over eth0 broken: %v", err)
	}
	if n := r.watch.count() - before; n != 0 {
		t.Fatalf("the IPv4 default route changed %d times when eth0's IPv6 was disabled\nlog:\n%s", n, r.p.Log())
	}
}

// An IPv6-only hub (every uplink without IPv4, as on IPv6-only SIMs and NAT64 networks):
// attribute 65008 and in_use follow the IPv6 selection (README: "on an IPv6-only hub it reads
// the type of the uplink carrying IPv6"), and move with it.
func TestE2EIPv6OnlyHubNetworkType(t *testing.T) {
	o := rigOptions{extra: fastProbes, args: []string{"-d"}, ubus: true, noWait: true,
		world:   testbed.Options{IPv6: testbed.V6RA, IPv6Only: []string{"eth0", "wlan0", "wwan0"}, DNS64: true},
		records: testbed.DefaultRecords6()}
	r := newRigWith(t, o)
	r.waitDefault6("eth0", 15*time.Second)
	if _, err := r.p.WaitLog(uplinkUp("ethnet", "ipv6"), 10*time.Second); err != nil {
		t.Fatalf("ethnet not proven over IPv6: %v", err)
	}
	check := func(network string, typ int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			st := r.status()
			if st.NetworkType == typ && st.InUse == network && st.InUseIPv6 == network && st.InUseIPv4 == "" {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("status: network_type %d in_use %q in_use_ipv4 %q in_use_ipv6 %q; want %d, %q, \"\", %q\nlog:\n%s",
					st.NetworkType, st.InUse, st.InUseIPv4, st.InUseIPv6, typ, network, network, r.p.Log())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	check("ethnet", 0)
	r.carrier("eth0", false)
	r.waitDefault6("wlan0", 5*time.Second)
	check("stanet", 1)
	if out, _ := r.w.Device.Run("ip", "-4", "route", "show", "table", "all", "proto", "175"); out != "" {
		t.Fatalf("IPv4 routes of connmgr's on an IPv6-only hub:\n%s", out)
	}
}

// IPv6 disabled on the whole box at runtime (net.ipv6.conf.all.disable_ipv6=1, as an admin
// does on a hub whose networks have no IPv6): connmgr drops its IPv6 routes and rules, keeps
// IPv4 where it was, and does not spin on route errors (some while the devices go one by one:
// the kernel refuses an IPv6 route with EACCES on a device whose IPv6 is off; none once settled).
func TestE2EDisableIPv6OnBox(t *testing.T) {
	r := newDualRig(t)
	before := r.watch.count()
	mark := r.p.Mark()
	for _, k := range []string{"all", "default", "eth0", "wlan0", "wwan0"} {
		if err := r.w.Device.Sysctl("net.ipv6.conf."+k+".disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		routes := r.w.Device.MustRun(t, "ip", "-6", "route", "show", "table", "all", "proto", "175")
		rules := r.w.Device.MustRun(t, "ip", "-6", "rule", "show")
		if routes == "" && !strings.Contains(rules, "lookup 24") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("connmgr's IPv6 state left with IPv6 disabled:\n%s%s\nlog:\n%s", routes, rules, r.p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	mark = r.p.Mark() // settled: from now on no route error at all
	time.Sleep(3 * time.Second)
	if err := dialEcho(t, r.w).works(5 * time.Second); err != nil {
		t.Fatalf("IPv4 broken with IPv6 disabled: %v", err)
	}
	if n := r.watch.count() - before; n != 0 {
		t.Fatalf("the IPv4 default route changed %d times when IPv6 was disabled\nlog:\n%s", n, r.p.Log())
	}
	after := strings.Join(strings.Split(r.p.Log(), "\n")[mark:], "\n")
	if n := strings.Count(after, "route update failed"); n > 0 {
		t.Fatalf("%d route update failures with IPv6 disabled\nlog since:\n%s", n, after)
	}
}

// Ethernet's router is swapped (a new CPE: new MAC address, new link-local address) without a
// word from the old one (no final RA): the new router's RA route comes while the old one's lives
// on, gatewayless in fact, until its router lifetime ends (30 minutes). connmgr must follow the
// live router, not pin Ethernet's IPv6 to the dead one and fail it over for half an hour, also
// after a re-read of the routes (an address gone, a lifetime due, a resync). fe80::9 sorts
// after fe80::1, of which netmon takes the lowest among equal routes. (The link-local address
// alone changing is harmless: the device reaches the same MAC address, and TCP's progress keeps
// confirming the neighbour.)
func TestE2EIPv6RouterSwapped(t *testing.T) {
	r := newDualRig(t)
	router := r.w.MustUplink("eth0").Router
	// fe80::9 > fe80::1: of two equal routes the old code took the lowest gateway.
	// The old one goes first (so its radvd sends no final RA from fe80::1), the new one comes.
	router.MustRun(t, "ip", "-6", "addr", "del", "fe80::1/64", "dev", "todev")
	router.MustRun(t, "ip", "link", "set", "todev", "address", "02:00:5e:10:00:09")
	router.MustRun(t, "ip", "-6", "addr", "add", "fe80::9/64", "dev", "todev")
	// radvd advertises from fe80::9 every 3-4 s; the old route's lifetime runs down.
	time.Sleep(6 * time.Second)
	// A re-read of the routes: an address of the uplink goes (a privacy address, say).
	r.w.Device.MustRun(t, "ip", "-6", "addr", "add", "2001:db8:10::77/64", "dev", "eth0", "nodad")
	time.Sleep(500 * time.Millisecond)
	r.w.Device.MustRun(t, "ip", "-6", "addr", "del", "2001:db8:10::77/64", "dev", "eth0")
	// Long enough for neighbour discovery to give fe80::1 up (5 s DELAY, 3 probes 1 s apart)
	// and fail_count probes 1 s apart to judge a route through it.
	time.Sleep(12 * time.Second)
	main := r.w.Device.MustRun(t, "ip", "-6", "route", "show", "default", "proto", "175")
	if !strings.Contains(main, "via fe80::9 dev eth0") {
		t.Fatalf("with a live router on eth0, connmgr's IPv6 default route is\n%s(want via fe80::9 dev eth0)\nkernel's:\n%s\nlog:\n%s",
			main, r.w.Device.MustRun(t, "ip", "-6", "route", "show", "default"), r.p.Log())
	}
	r.echo6("eth0")
}

// IPv6 dies on Ethernet while its IPv4 works (firewall on: conntrack tracks, as fw4 does): the
// IPv6 flush of eth0's flows deletes the IPv6 connection's entry and leaves the IPv4 one, the
// very same entry (its id), not one conntrack picked up again.
func TestE2EIPv6FlushSparesIPv4(t *testing.T) {
	o := rigOptions{extra: fastProbes, world: testbed.Options{IPv6: testbed.V6RA}, records: testbed.DefaultRecords6()}
	r := newRigWith(t, o)
	r.waitDefault6("eth0", 15*time.Second)
	c4 := dialEcho(t, r.w)
	c6 := dialEchoAt(t, r.w, testbed.Echo6URL())
	for _, c := range []echoConn{c4, c6} {
		if err := c.works(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	entry := func(fam, src string) string {
		t.Helper()
		out, _ := r.w.Device.Run("conntrack", "-L", "-f", fam, "-p", "tcp", "-s", src, "--dport", "80", "-o", "id")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); strings.Contains(l, "ESTABLISHED") && len(f) > 0 {
				return f[len(f)-1] // id=N: the entry, not a pick-up of the same flow
			}
		}
		return ""
	}
	a4, a6 := r.w.MustUplink("eth0").Addr.String(), r.w.MustUplink("eth0").Addr6.String()
	e4 := entry("ipv4", a4)
	if e4 == "" || entry("ipv6", a6) == "" {
		t.Fatalf("no conntrack entries of the connections: %q %q", e4, entry("ipv6", a6))
	}
	mark := r.p.Mark()
	r.fault("eth0", testbed.Fault{Blackhole: true, Family: 6})
	r.waitDefault6("wlan0", 15*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for entry("ipv6", a6) != "" {
		if time.Now().After(deadline) {
			t.Fatalf("eth0's IPv6 connection's entry not flushed\nlog:\n%s", strings.Join(strings.Split(r.p.Log(), "\n")[mark:], "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := entry("ipv4", a4); got != e4 {
		t.Fatalf("eth0's IPv4 connection's entry changed with the IPv6 flush:\nbefore %s\nafter  %s", e4, got)
	}
	if err := c4.works(5 * time.Second); err != nil {
		t.Fatalf("IPv4 connection over eth0 broken: %v", err)
	}
}
