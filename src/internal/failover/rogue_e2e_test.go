package failover_test

import (
	"net/netip"
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

// A second router on Ethernet's link advertises itself with the RA's high router preference and
// drops everything it is given (a misconfigured CPE, a rogue box plugged into the upstream
// switch) while Ethernet's own router works. The kernel prefers the high one, and so did connmgr's
// pick of the uplink's gateway: connmgr must route Ethernet's IPv6 through the router its
// probes prove (the uplink's other one), not keep it on the black hole nor leave a working
// Ethernet for Wi-Fi.
func TestE2ERogueRouterOnUplink(t *testing.T) {
	r := newDualRig(t)
	mark := r.p.Mark()
	if _, err := r.w.AddRouter6("eth0", testbed.Router6Options{LinkLocal: rogueLL, Preference: "high", Lifetime: 1800,
		Prefix: netip.MustParsePrefix("2001:db8:bad::/64")}); err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel's IPv6 default routes:\n%s", r.w.Device.MustRun(t, "ip", "-6", "route", "show", "default"))
	// fail_count rounds through the black hole, the switch to the uplink's other router, then
	// recover_count rounds through it (and a fail-back if IPv6 left Ethernet meanwhile).
	want := "via fe80::1 dev eth0"
	deadline := time.Now().Add(25 * time.Second)
	last := ""
	for {
		cur := r.connmgrRoute6()
		if cur != last {
			t.Logf("%s connmgr's IPv6 route: %s", time.Now().Format("15:04:05.000"), cur)
			last = cur
		}
		if strings.Contains(cur, want) && time.Until(deadline) < 20*time.Second {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("with a black-holing router of high preference beside Ethernet's working one, connmgr's IPv6 route is\n%s\n(want %s)\nlog since:\n%s",
				cur, want, strings.Join(strings.Split(r.p.Log(), "\n")[mark:], "\n"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	r.echo6("eth0")
	// And it stays there: the rogue router keeps advertising every 3-4 s.
	time.Sleep(8 * time.Second)
	if cur := r.connmgrRoute6(); !strings.Contains(cur, want) {
		t.Fatalf("connmgr's IPv6 route went back to %q\nlog since:\n%s", cur, strings.Join(strings.Split(r.p.Log(), "\n")[mark:], "\n"))
	}
	r.echo6("eth0")
}
