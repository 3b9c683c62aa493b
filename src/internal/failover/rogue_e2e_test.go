package failover_test

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// Red-team tests of router advertisements nobody asked for: a second router on an uplink's
// link that claims to be the best one and forwards nothing.

var rogueLL = netip.MustParseAddr("fe80::bad")

// connmgrRoute6 is connmgr's IPv6 default route in the main table ("" for none).
func (r *rig) connmgrRoute6() string {
	r.t.Helper()
	return strings.TrimSpace(r.w.Device.MustRun(r.t, "ip", "-6", "route", "show", "default", "proto", "175"))
}

// rogueRouter6 is a second router on eth0's link that advertises itself with the RA's high
// router preference (and a prefix of its own) and drops everything it is given.
var rogueRouter6 = testbed.Router6Options{LinkLocal: rogueLL, Preference: "high", Lifetime: 1800,
	Prefix: netip.MustParsePrefix("2001:db8:bad::/64")}

// waitRoute6Via waits until connmgr's IPv6 default route is via want (after at least settle:
// what it is at once proves nothing), within timeout, then checks that it stays there for stay
// while the rogue router keeps advertising, and that an IPv6 connection works over Ethernet.
func (r *rig) waitRoute6Via(want string, settle, timeout, stay time.Duration, mark int) {
	r.t.Helper()
	start := time.Now()
	last := ""
	for {
		cur := r.connmgrRoute6()
		if cur != last {
			r.t.Logf("%6.1fs connmgr's IPv6 route: %s", time.Since(start).Seconds(), cur)
			last = cur
		}
		if strings.Contains(cur, want) && time.Since(start) >= settle {
			break
		}
		if time.Since(start) > timeout {
			r.t.Fatalf("connmgr's IPv6 route is\n%s\n(want %s)\nkernel's:\n%s\nlog since:\n%s", cur, want,
				r.w.Device.MustRun(r.t, "ip", "-6", "route", "show", "default"), r.logSince(mark))
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.echo6("eth0")
	time.Sleep(stay)
	if cur := r.connmgrRoute6(); !strings.Contains(cur, want) {
		r.t.Fatalf("connmgr's IPv6 route went to %q\nlog since:\n%s", cur, r.logSince(mark))
	}
	r.echo6("eth0")
}

// logSince is the daemon's log from mark on.
func (r *rig) logSince(mark int) string {
	return strings.Join(strings.Split(r.p.Log(), "\n")[mark:], "\n")
}

// The rogue router comes while Ethernet works (a misconfigured CPE, a box plugged into the
// upstream switch). The kernel prefers it, and so did connmgr's pick of the uplink's gateway:
// connmgr routed Ethernet's IPv6 into the black hole, failed it over to Wi-Fi and left it there
// for as long as the rogue advertised. It must keep routing through the router its probes
// proved.
func TestE2ERogueRouterOnUplink(t *testing.T) {
	r := newDualRig(t)
	mark := r.p.Mark()
	if _, err := r.w.AddRouter6("eth0", rogueRouter6); err != nil {
		t.Fatal(err)
	}
	r.waitRoute6Via("via fe80::1 dev eth0", 5*time.Second, 25*time.Second, 8*time.Second, mark)
	if n := r.watch6.count(); n != 1 {
		t.Errorf("connmgr's IPv6 default route changed %d times after its first (want none)\nlog since:\n%s", n-1, r.logSince(mark))
	}
}

// The rogue router is there when connmgr starts: Ethernet's IPv6 is first routed through it
// (the best-ranked router), fails fail_count rounds, and is then routed through the link's
// other router, which its probes prove: IPv6 back on Ethernet, through fe80::1.
func TestE2ERogueRouterBeforeStart(t *testing.T) {
	r := newRigWith(t, rigOptions{extra: fastProbes, args: []string{"-d"}, world: testbed.Options{IPv6: testbed.V6RA},
		records: testbed.DefaultRecords6(), before: func(w *testbed.World) {
			if _, err := w.AddRouter6("eth0", rogueRouter6); err != nil {
				t.Fatal(err)
			}
		}})
	r.waitRoute6Via("via fe80::1 dev eth0", 0, 25*time.Second, 8*time.Second, 0)
	if _, err := r.p.WaitLog(regexp.MustCompile(`msg="router failed: trying the link's next one" network=ethnet .*failed=fe80::bad router=fe80::1 .*family=ipv6`), time.Second); err != nil {
		t.Errorf("no sign of the rogue router failed: %v", err)
	}
}

// lanRA is what a LAN host advertises to the hub: the best default router (high preference,
// the longest lifetime), a prefix for SLAAC and its own resolver.
var lanRA = testbed.RA{Src: netip.MustParseAddr("fe80::66"), Preference: "high", Lifetime: 9000,
	Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8:66::/64")}, RDNSS: []netip.Addr{netip.MustParseAddr("2001:db8:66::53")}}

// A host on the hub's LAN (the access point's client network) sends router advertisements to
// the hub. The lock-down is on (the default configuration). The hub must take no default route
// and no address from its LAN; connmgr must not treat the LAN as an uplink nor route through it,
// and its firewall must not open for anything the RA names. With OpenWrt's IPv6 forwarding
// (on, everywhere) the kernel ignores RAs on the LAN; a hub whose LAN accepts them all the same
// (accept_ra 2, a misconfiguration) still sends its IPv6 through the uplink connmgr chose, as
// connmgr's route of metric 1 precedes the RA's of 1024.
func TestE2ERogueRAFromLAN(t *testing.T) {
	for _, c := range []struct {
		name     string
		acceptRA string // the LAN device's accept_ra
	}{{"openwrt", "1"}, {"lan-accepts-ra", "2"}} {
		t.Run(c.name, func(t *testing.T) { rogueRAFromLAN(t, c.acceptRA) })
	}
}

func rogueRAFromLAN(t *testing.T, acceptRA string) {
	o := defaultOptions(t, nil)
	o.extra = fastProbes
	o.world = testbed.Options{IPv6: testbed.V6RA}
	o.records = testbed.DefaultRecords6()
	var lan *testbed.LAN
	o.before = func(w *testbed.World) {
		var err error
		if lan, err = w.AddLAN("wlan0-1"); err != nil {
			t.Fatal(err)
		}
		// OpenWrt forwards IPv6 (its sysctl defaults); the uplinks take RAs all the same
		// (accept_ra 2, set by the world).
		for k, v := range map[string]string{"net.ipv6.conf.all.forwarding": "1", "net.ipv6.conf.wlan0-1.accept_ra": acceptRA} {
			if err := w.Device.Sysctl(k, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Device.IP("addr add 2001:db8:100::1/64 dev wlan0-1 nodad"); err != nil {
			t.Fatal(err)
		}
	}
	r := newRigWith(t, o)
	r.waitFirewall()
	r.waitDefault6("eth0", 15*time.Second)
	mark, changes, changes6 := r.p.Mark(), r.watch.count(), r.watch6.count()
	elements := func() string {
		out, _ := r.w.Device.Run("nft", "list", "table", "inet", "afconn")
		return out
	}
	// Three RAs over 7 s: the first and a repeat after the hub's probes ran.
	for range 3 {
		if err := lan.NS.SendRAs("eth0", []testbed.RA{lanRA}, 0); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3500 * time.Millisecond)
	}
	routes := r.w.Device.MustRun(t, "ip", "-6", "route", "show", "table", "all", "default")
	took := strings.Contains(routes, "dev wlan0-1")
	t.Logf("accept_ra %s on the LAN: the kernel took the RA: %v\n%s", acceptRA, took, routes)
	if acceptRA == "1" && took {
		t.Fatalf("the hub took a default route from its LAN:\n%s", routes)
	}
	if acceptRA == "2" && !took {
		t.Fatalf("premise: a LAN with accept_ra 2 takes the RA, but no default route through wlan0-1:\n%s", routes)
	}
	if addrs := r.w.Device.MustRun(t, "ip", "-6", "addr", "show"); strings.Contains(addrs, "2001:db8:66:") && acceptRA == "1" {
		t.Fatalf("the hub took an address from its LAN's RA:\n%s", addrs)
	}
	if strings.Contains(r.w.Device.MustRun(t, "ip", "-6", "route", "show", "table", "all", "proto", "175"), "wlan0-1") {
		t.Fatalf("connmgr routes through the LAN:\n%s", r.w.Device.MustRun(t, "ip", "-6", "route", "show", "table", "all", "proto", "175"))
	}
	// The hub's own IPv6, unbound, leaves through Ethernet.
	if got := r.routeGet6(""); got != "eth0" {
		t.Fatalf("the hub's IPv6 to the cloud leaves through %s, want eth0", got)
	}
	r.echo6("eth0")
	if n, n6 := r.watch.count()-changes, r.watch6.count()-changes6; n != 0 || n6 != 0 {
		t.Fatalf("default routes changed (IPv4 %d, IPv6 %d times) after the LAN's RAs\nlog since:\n%s", n, n6, r.logSince(mark))
	}
	st := r.status()
	if st.InUseIPv6 != "ethnet" || st.InUseIPv4 != "ethnet" {
		t.Fatalf("in use: IPv4 %q, IPv6 %q; want ethnet", st.InUseIPv4, st.InUseIPv6)
	}
	for _, u := range st.Uplinks {
		if u.Device == "wlan0-1" || (u.IPv6 != nil && strings.HasPrefix(u.IPv6.Address, "2001:db8:66:")) {
			t.Fatalf("the LAN shows as an uplink: %+v", u)
		}
	}
	if fw := elements(); strings.Contains(fw, "2001:db8:66:") || strings.Contains(fw, "wlan0-1") {
		t.Fatalf("the lock-down opened for the LAN's RA:\n%s", fw)
	}
	if log := r.logSince(mark); strings.Contains(log, "wlan0-1") || strings.Contains(log, "2001:db8:66:") {
		t.Fatalf("connmgr acted on the LAN's RA:\n%s", log)
	}
}

// floodRAs are n RAs from n routers on a link (fe80::1:0 up), each of medium preference with
// the longest router lifetime (so that each ranks above the world's router, whose lifetime is
// shorter) and a prefix of its own (2001:db8:4000::/64 up).
func floodRAs(n int) []testbed.RA {
	ras := make([]testbed.RA, n)
	for i := range ras {
		a := netip.MustParseAddr("fe80::1:0").As16()
		a[14], a[15] = byte(i>>8), byte(i)
		p := netip.MustParseAddr("2001:db8:4000::").As16()
		p[4], p[5] = byte(0x40+i>>8), byte(i)
		ras[i] = testbed.RA{Src: netip.AddrFrom16(a), Preference: "medium", Lifetime: 9000,
			Prefixes: []netip.Prefix{netip.PrefixFrom(netip.AddrFrom16(p), 64)}}
	}
	return ras
}

// An RA flood on Ethernet's link: 1,000 routers that do not exist (no address, nobody answers
// for them), each with a prefix, each advertised twice. connmgr must not crash nor grow, and its
// IPv6 must stay on Ethernet's own router, not on a random one of the flood (each ranks above
// it by its lifetime). The figures: the daemon's CPU during the flood and after, its peak RSS.
func TestE2ERAFlood(t *testing.T) {
	r := newRigWith(t, rigOptions{extra: fastProbes, args: []string{"-d"}, ubus: true, world: testbed.Options{IPv6: testbed.V6RA},
		records: testbed.DefaultRecords6()})
	r.waitDefault6("eth0", 15*time.Second)
	host, err := r.w.AddLinkHost("eth0", net.HardwareAddr{0x02, 0, 0x5f, 0xff, 0xff, 0xfe})
	if err != nil {
		t.Fatal(err)
	}
	hwm0 := procStatus(t, r.p.Pid())["VmHWM"]
	mark, changes6 := r.p.Mark(), r.watch6.count()
	cpu := r.cpuClock()
	start := time.Now()
	ras := floodRAs(1000)
	for range 2 {
		if err := host.SendRAs(testbed.LinkHostDev, ras, 500*time.Microsecond); err != nil {
			t.Fatal(err)
		}
	}
	during, took := cpu(), time.Since(start)
	routes := strings.Count(r.w.Device.MustRun(t, "ip", "-6", "route", "show", "default", "dev", "eth0", "proto", "ra"), "\n")
	if routes < 500 {
		t.Fatalf("premise: the flood left %d RA default routes on eth0", routes)
	}
	after := r.cpuOver(5 * time.Second)
	st := procStatus(t, r.p.Pid())
	t.Logf("2,000 RAs from 1,000 routers in %v: the kernel holds %d default routes on eth0; connmgr CPU %.1f%% of a core during, %.1f%% in the 5 s after; VmHWM %.1f -> %.1f MB, VmRSS %.1f MB",
		took.Round(time.Millisecond), routes, during, after, hwm0, st["VmHWM"], st["VmRSS"])
	if st["VmHWM"]-hwm0 > 8 {
		t.Errorf("connmgr's peak RSS grew by %.1f MB with the flood", st["VmHWM"]-hwm0)
	}
	if cur := r.connmgrRoute6(); !strings.Contains(cur, "via fe80::1 dev eth0") {
		t.Fatalf("connmgr's IPv6 route after the flood: %s\nlog since:\n%s", cur, r.logSince(mark))
	}
	r.echo6("eth0")
	if n := r.watch6.count() - changes6; n != 0 {
		t.Fatalf("connmgr's IPv6 default route changed uplink %d times with the flood\nlog since:\n%s", n, r.logSince(mark))
	}
	if s := r.status(); s.InUseIPv6 != "ethnet" {
		t.Fatalf("in_use_ipv6 %q after the flood", s.InUseIPv6)
	}
	// Ethernet's own router dies now: IPv6 must leave for Wi-Fi, not linger on a flood router
	// (each fails; connmgr tries the next ones only while Ethernet is failed).
	r.fault("eth0", testbed.Fault{Blackhole: true, Family: 6})
	r.waitDefault6("wlan0", 15*time.Second)
	r.echo6("wlan0")
	time.Sleep(5 * time.Second)
	if cur := r.connmgrRoute6(); !strings.Contains(cur, "dev wlan0") {
		t.Fatalf("connmgr's IPv6 route with Ethernet dead and the flood's routers on its link: %s", cur)
	}
	t.Logf("CPU with Ethernet failed among 1,000 dead routers: %.1f%% of a core", r.cpuOver(5*time.Second))
	// Its upstream returns: the router proven before is tried again within 30 s of its
	// failure, not after the 1,000 others.
	r.fault("eth0", testbed.Fault{})
	r.waitRoute6Via("via fe80::1 dev eth0", 0, 45*time.Second, 0, mark)
}

// A box on Ethernet's link sends RAs in the name of Ethernet's router (its address and MAC
// address) with router lifetime 0, once a second: the kernel deletes the router's default route
// at each, and the router's own RAs (every 3-4 s) add it back. Ethernet's IPv6 is unusable most
// of the time; connmgr must carry IPv6 on Wi-Fi and not flap between the two (it failed back to
// Ethernet within a second of each return: 15 switches in 30 s), and leave IPv4 alone.
func TestE2ESpoofedRouterLifetimeZero(t *testing.T) {
	r := newDualRig(t)
	u := r.w.MustUplink("eth0")
	mac, err := net.ParseMAC(strings.TrimSpace(u.Router.MustRun(t, "cat", "/sys/class/net/todev/address")))
	if err != nil {
		t.Fatal(err)
	}
	host, err := r.w.AddLinkHost("eth0", net.HardwareAddr{0x02, 0, 0x5f, 0xff, 0xff, 0xfd})
	if err != nil {
		t.Fatal(err)
	}
	mark, changes, changes6 := r.p.Mark(), r.watch.count(), r.watch6.count()
	spoof := []testbed.RA{{Src: u.Gateway6, SrcMAC: mac, Lifetime: 0}}
	for stop := time.Now().Add(30 * time.Second); time.Now().Before(stop); time.Sleep(time.Second) {
		if err := host.SendRAs(testbed.LinkHostDev, spoof, 0); err != nil {
			t.Fatal(err)
		}
	}
	n := r.watch6.count() - changes6
	t.Logf("30 s of spoofed lifetime-0 RAs: connmgr's IPv6 route changed uplink %d times; now %s", n, r.connmgrRoute6())
	// Away, back once (a single loss is no flapping), away again: no more.
	if n > 3 {
		t.Errorf("connmgr's IPv6 route changed uplink %d times in 30 s (want at most 3)\nlog since:\n%s", n, r.logSince(mark))
	}
	if cur := r.connmgrRoute6(); !strings.Contains(cur, "dev wlan0") {
		t.Fatalf("connmgr's IPv6 route with Ethernet's route flapping: %s", cur)
	}
	r.echo6("wlan0")
	if n := r.watch.count() - changes; n != 0 {
		t.Errorf("the IPv4 default route changed %d times", n)
	}
}
