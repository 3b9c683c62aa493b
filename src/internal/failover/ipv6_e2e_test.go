package failover_test

import (
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
)

// End-to-end IPv6 failover (issue 11, item 7): the real connmgr binary in dual-stack worlds
// whose routers advertise their IPv6 default routes (radvd), and a world whose cellular uplink
// is IPv6-only behind a DNS64. connmgr's IPv6 default route is the one of protocol 175 in the
// main table; the RA's own routes (metric 10/20/50 by eth0, wlan0, wwan0) stay as they are.

// newDualRig starts connmgr (-d unless args say otherwise) in a dual-stack world and waits
// until both families' default routes go through eth0.
func newDualRig(t *testing.T, args ...string) *rig {
	return newDualRigMode(t, testbed.V6RA, args...)
}

// newDualRigMode is newDualRig with the IPv6 default routes installed as mode says.
func newDualRigMode(t *testing.T, mode testbed.V6Mode, args ...string) *rig {
	if args == nil {
		args = []string{"-d"}
	}
	// probe_interval 1s, as the tests written before issue 13: their subject is each family's
	// failover, not the idle rhythm.
	r := newRigWith(t, rigOptions{extra: fastProbes, args: args, world: testbed.Options{IPv6: mode}, records: testbed.DefaultRecords6()})
	r.waitDefault6("eth0", 15*time.Second)
	return r
}

// echo6 checks that a new IPv6 connection to the cloud's echo works and leaves from the
// address of dev's uplink.
func (r *rig) echo6(dev string) {
	r.t.Helper()
	c := dialEchoAt(r.t, r.w, testbed.Echo6URL())
	defer c.Close()
	if err := c.works(5 * time.Second); err != nil {
		r.t.Fatalf("IPv6 echo: %v\nlog:\n%s", err, r.p.Log())
	}
	want := r.w.MustUplink(dev).Addr6
	if got := netip.MustParseAddrPort(c.LocalAddr().String()).Addr(); got != want {
		r.t.Fatalf("a new IPv6 connection left from %s, want %s (%s)", got, want, dev)
	}
}

// A silent upstream failure of a dual-stack Ethernet moves both families to Wi-Fi, and the
// return of Ethernet brings both back: with the IPv6 default routes of RAs, and with netifd's
// source-restricted ones.
func TestE2EDualStackSilentFailure(t *testing.T) {
	for _, mode := range []testbed.V6Mode{testbed.V6RA, testbed.V6SourceFilter} {
		t.Run(strings.ReplaceAll(mode.String(), " ", "_"), func(t *testing.T) { dualStackSilentFailure(t, mode) })
	}
}

func dualStackSilentFailure(t *testing.T, mode testbed.V6Mode) {
	r := newDualRigMode(t, mode)
	start := time.Now()
	r.fault("eth0", testbed.Fault{Blackhole: true})
	at4 := r.waitDefault("wlan0", 15*time.Second)
	at6 := r.waitDefault6("wlan0", 15*time.Second)
	t.Logf("black hole -> IPv4 switched in %v, IPv6 in %v", at4.Sub(start), at6.Sub(start))
	if err := dialEcho(t, r.w).works(5 * time.Second); err != nil {
		t.Fatalf("no IPv4 connectivity after failover: %v", err)
	}
	r.echo6("wlan0")
	start = time.Now()
	r.fault("eth0", testbed.Fault{})
	at4 = r.waitDefault("eth0", 20*time.Second)
	at6 = r.waitDefault6("eth0", 20*time.Second)
	t.Logf("restored -> IPv4 back in %v, IPv6 in %v", at4.Sub(start), at6.Sub(start))
	r.echo6("eth0")
}

// Carrier loss on a dual-stack Ethernet moves both families at once.
func TestE2EDualStackCarrierLoss(t *testing.T) {
	r := newDualRig(t)
	start := time.Now()
	r.carrier("eth0", false)
	at4 := r.waitDefault("wlan0", 5*time.Second)
	at6 := r.waitDefault6("wlan0", 5*time.Second)
	t.Logf("carrier loss -> IPv4 switched in %v, IPv6 in %v", at4.Sub(start), at6.Sub(start))
	r.echo6("wlan0")
	r.carrier("eth0", true)
	r.waitDefault("eth0", 20*time.Second)
	r.waitDefault6("eth0", 20*time.Second)
}

// IPv6 dies upstream of eth0 while its IPv4 works: eth0 keeps IPv4 and loses IPv6 to wlan0;
// when IPv6 returns it comes back to eth0. IPv4's route never moves.
func TestE2EIPv6DeadIPv4Works(t *testing.T) {
	r := newDualRig(t)
	before := r.watch.count()
	start := time.Now()
	r.fault("eth0", testbed.Fault{Blackhole: true, Family: 6})
	at := r.waitDefault6("wlan0", 15*time.Second)
	t.Logf("IPv6 black hole -> IPv6 switched in %v", at.Sub(start))
	r.echo6("wlan0")
	if err := dialEcho(t, r.w).works(5 * time.Second); err != nil {
		t.Fatalf("IPv4 over eth0 broken: %v", err)
	}
	r.fault("eth0", testbed.Fault{})
	r.waitDefault6("eth0", 20*time.Second)
	r.echo6("eth0")
	if n := r.watch.count() - before; n != 0 {
		t.Fatalf("the IPv4 default route changed %d times while only IPv6 failed\nlog:\n%s", n, r.p.Log())
	}
}

// An IPv6 connection opened over Wi-Fi while Ethernet was dead keeps working after IPv6 returns
// to Ethernet (the per-uplink IPv6 table and source rule), and a new one goes over Ethernet.
func TestE2EIPv6ConnectionSurvivesFailBack(t *testing.T) {
	r := newDualRig(t)
	r.fault("eth0", testbed.Fault{Blackhole: true})
	r.waitDefault6("wlan0", 15*time.Second)
	c := dialEchoAt(t, r.w, testbed.Echo6URL())
	if err := c.works(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got, want := netip.MustParseAddrPort(c.LocalAddr().String()).Addr(), r.w.MustUplink("wlan0").Addr6; got != want {
		t.Fatalf("connection not over Wi-Fi: local %s, want %s", got, want)
	}
	r.fault("eth0", testbed.Fault{})
	r.waitDefault6("eth0", 20*time.Second)
	for i := range 3 {
		if err := c.works(5 * time.Second); err != nil {
			t.Fatalf("Wi-Fi IPv6 connection broken by fail-back (round %d): %v\nlog:\n%s", i, err, r.p.Log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.echo6("eth0")
}

// A cellular uplink on an IPv6-only SIM behind a DNS64 is the last one left: with the lock-down
// on (the default configuration), connmgr proves it over IPv6, routes IPv6 through it, and the
// hub reaches the cloud at the DNS64's synthesized address through a pinhole its AAAA opened.
func TestE2EIPv6OnlyCellular(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { ipv6OnlyCellular(t, backend) })
	}
}

func ipv6OnlyCellular(t *testing.T, backend string) {
	o := defaultOptions(t, nil)
	o.extra = "\toption firewall_backend '" + backend + "'\n"
	o.world = testbed.Options{IPv6: testbed.V6RA, IPv6Only: []string{"wwan0"}, DNS64: true}
	r := newRigWith(t, o)
	r.waitFirewall()
	r.waitLog(`msg="firewall lock-down in force" backend=` + backend)
	r.waitDefault6("eth0", 15*time.Second)
	if out, _ := r.w.Device.Run("ip", "-4", "route", "show", "default"); strings.Contains(out, "wwan0") {
		t.Fatalf("an IPv4 default route through the IPv6-only wwan0:\n%s", out)
	}
	start := time.Now()
	r.carrier("eth0", false)
	r.carrier("wlan0", false)
	at := r.waitDefault6("wwan0", 20*time.Second)
	t.Logf("eth0 and wlan0 cables pulled -> IPv6 through wwan0 in %v", at.Sub(start))
	// Proven over IPv6 (before or after the cables went: a standby is probed too).
	if _, err := r.p.WaitLog(uplinkUp("modemnet", "ipv6"), 10*time.Second); err != nil {
		t.Fatalf("modemnet not proven: %v", err)
	}
	// The hub's own lookup, as its resolver makes it: through the kernel's routes, now wwan0.
	got, err := r.w.Resolve(testbed.DNS6Addr, "echo.afero.io", dns.TypeAAAA)
	want := testbed.Synthesize(testbed.EchoAddr)
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("AAAA echo.afero.io over wwan0: %v %v, want %s\nlog:\n%s", got, err, want, r.p.Log())
	}
	c := dialEchoAt(t, r.w, netip.AddrPortFrom(want, testbed.EchoPort).String())
	if err := c.works(5 * time.Second); err != nil {
		t.Fatalf("the cloud at %s over wwan0: %v\nlog:\n%s", want, err, r.p.Log())
	}
	if got := netip.MustParseAddrPort(c.LocalAddr().String()).Addr(); got != r.w.MustUplink("wwan0").Addr6 {
		t.Fatalf("connection left from %s, not wwan0's address", got)
	}
	t.Logf("cloud traffic over the IPv6-only uplink %v after the cables were pulled", time.Since(start))
	// The lock-down is in force there: the same cloud at an address no answer gave (every
	// address of 64:ff9b::/96 answers) stays shut.
	shut := netip.AddrPortFrom(testbed.Synthesize(netip.MustParseAddr("198.18.200.255")), testbed.EchoPort)
	if err := tryEcho(r.w, shut.String(), r.w.MustUplink("wwan0").Addr6); err == nil {
		t.Fatalf("%s, never in a DNS answer, reached over wwan0 through the lock-down", shut)
	}

	// ubus status: an IPv6-only uplink is a full uplink, up and proven, in use for IPv6.
	st := r.status()
	if st.InUseIPv6 != "modemnet" {
		t.Errorf("in_use_ipv6 %q, want modemnet", st.InUseIPv6)
	}
	for _, u := range st.Uplinks {
		if u.Network != "modemnet" {
			continue
		}
		if u.StateNum != 4 || u.IPv6 == nil || u.IPv6.State != "ITFUP_SS" || u.IPv6.Address != "2001:db8:30::2/64" ||
			u.IPv6.Gateway != "fe80::1" || !u.IPv6.InUse {
			t.Errorf("modemnet status %+v, ipv6 %+v: want ITFUP_SS (4), 2001:db8:30::2/64 via fe80::1, in use", u, u.IPv6)
		}
		if u.IPv4 != nil && u.IPv4.StateNum >= 3 {
			t.Errorf("modemnet's IPv4 %+v: it has none", u.IPv4)
		}
	}
}

// status asks the daemon for its status over ubus (connmgr status --json).
func (r *rig) status() daemon.Status {
	r.t.Helper()
	out, err := r.w.Device.Run(testbed.Connmgr(r.t), "status", "--json", "-s", r.sock)
	if err != nil {
		r.t.Fatal(err)
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		r.t.Fatalf("status %q: %v", out, err)
	}
	return st
}

// uplinkUp matches the daemon's log line of network reaching ITFUP_SS in family (ipv4, ipv6).
func uplinkUp(network, family string) *regexp.Regexp {
	return regexp.MustCompile(`msg="uplink state" network=` + network + ` .*to=ITFUP_SS\b.* family=` + family + `\b`)
}
