package failover_test

import (
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// Red-team tests of issue 11 (IPv6 uplinks): a network that renumbers, and routers that change.

// routeGet6 says which device the device namespace's kernel sends a packet from src to the
// cloud's echo through.
func (r *rig) routeGet6(src string) string {
	r.t.Helper()
	out := r.w.Device.MustRun(r.t, "ip", "-6", "route", "get", testbed.Echo6Addr.String(), "from", src)
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
