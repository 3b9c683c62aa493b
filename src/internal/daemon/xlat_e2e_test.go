package daemon_test

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
)

// 464XLAT (issue 11 item 4), with the real binary on both backends: the cellular uplink
// modemnet is configured on wwan0, which does not exist here, and netifd reports its dynamic
// interface modemnet_6_4 of proto 464xlat on the clat device 464-xlat (here a veth to a
// router: what matters is that the uplink's IPv4 goes through that device). connmgr must watch,
// probe, route and lock down the uplink's IPv4 on 464-xlat: with Ethernet's and Wi-Fi's cables
// pulled, its own default route goes through 464-xlat, the lock-down holds there, and a
// whitelisted name's answer opens its address before the client sees it.
func TestE2EUplink464XLAT(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			records := append(slices.Clone(e2eRecords), testbed.Record{Name: "xlat.afero.io", TTL: 30, Addr: netip.MustParseAddr("198.18.200.6")})
			e := newE2EWith(t, backend, testbed.Options{Uplinks: []string{"eth0", "wlan0", "464-xlat"}}, records, map[string]string{
				"network":   e2eNetwork,
				"connmgr":   e2eConnmgr(backend, "1"),
				"whitelist": "*.afero.io\n",
			}, func(w *testbed.World, dir string) {
				if err := w.Cloud.IP("addr add 198.18.200.6/32 dev lo"); err != nil {
					t.Fatal(err)
				}
				publishNetifdDump(t, filepath.Join(dir, "ubus.sock"), ubus.Table{
					{Name: "interface", Value: "modemnet_6_4"}, {Name: "up", Value: true}, {Name: "proto", Value: "464xlat"},
					{Name: "l3_device", Value: "464-xlat"}, {Name: "device", Value: "464-xlat"},
				})
			})
			e.waitLog(0, `msg="uplink state" network=modemnet device=464-xlat .*to=ITFUP_SS .*family=ipv4`)
			e.waitLog(0, `msg="firewall lock-down follows the uplink devices" uplinks="\[464-xlat eth0 wlan0 wwan0\]"`)

			for _, dev := range []string{"eth0", "wlan0"} {
				if err := e.w.SetCarrier(dev, false); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				out, _ := e.w.Device.Run("ip", "-4", "route", "show", "default", "table", "main", "proto", "175")
				if strings.Contains(out, "dev 464-xlat") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("connmgr's default route does not go through the clat device: %q\nlog:\n%s", out, e.p.Log())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := e.connect("198.18.200.3", 1500*time.Millisecond); err == nil {
				t.Error("a new connection to 198.18.200.3 (not whitelisted) got through the clat device")
			}
			if got := e.resolve("xlat.afero.io"); !slices.Equal(got, []string{"198.18.200.6"}) {
				t.Fatalf("xlat.afero.io answered %v", got)
			}
			if l := e.learned(); !slices.Contains(l, "198.18.200.6") {
				t.Errorf("the answer reached the client before its address was in the set (learned %v)", l)
			}
			if err := e.connect("198.18.200.6", 5*time.Second); err != nil {
				t.Errorf("device -> learned 198.18.200.6 over the clat device: %v", err)
			}

			st := e.status()
			i := slices.IndexFunc(st.Uplinks, func(u daemon.UplinkStatus) bool { return u.Network == "modemnet" })
			if i < 0 || st.InUse != "modemnet" || st.InUseDevice != "464-xlat" || st.NetworkType != 2 {
				t.Fatalf("status: in use %q on %q, type %d; uplinks %+v", st.InUse, st.InUseDevice, st.NetworkType, st.Uplinks)
			}
			if m := st.Uplinks[i]; m.StateNum != 4 || m.Device != "wwan0" || m.IPv4 == nil || m.IPv4.Device != "464-xlat" ||
				m.IPv4.Address != "198.18.30.2/24" || !m.IPv4.InUse || m.IPv6 == nil || m.IPv6.Device != "wwan0" || m.IPv6.StateNum != 2 {
				t.Errorf("status of modemnet: %+v (ipv4 %+v, ipv6 %+v)", m, m.IPv4, m.IPv6)
			}
		})
	}
}

// publishNetifdDump plays netifd's `network.interface dump` on the test's ubusd, answering
// with the given interfaces.
func publishNetifdDump(t *testing.T, sock string, ifaces ...ubus.Table) {
	t.Helper()
	list := make([]any, len(ifaces))
	for i, x := range ifaces {
		list[i] = x
	}
	publishObject(t, sock, "network.interface", ubus.Method{Name: "dump", Handler: func(context.Context, *ubus.Request) (ubus.Table, error) {
		return ubus.Table{{Name: "interface", Value: list}}, nil
	}})
}
