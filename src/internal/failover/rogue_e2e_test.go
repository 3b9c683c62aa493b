package failover_test

import (
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
