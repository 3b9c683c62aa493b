package daemon

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/ubus"
)

func readNetifdSample(t testing.TB) ubus.Table {
	t.Helper()
	j, err := os.ReadFile("testdata/netifd-status.json")
	if err != nil {
		t.Fatal(err)
	}
	tab, err := ubus.FromJSON(j)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestParseNetifdStatus(t *testing.T) {
	got, err := ParseNetifdStatus("ethnet", readNetifdSample(t))
	if err != nil {
		t.Fatal(err)
	}
	want := NetifdInterface{
		Network: "ethnet", Up: true, Device: "eth0", L3Device: "eth0", Proto: "dhcp",
		Addresses: []netip.Prefix{netip.MustParsePrefix("198.18.1.2/24"), netip.MustParsePrefix("2001:db8::2/64")},
		// The on-link route (mask 24, nexthop 0.0.0.0) is not a default route; the inactive
		// DNS server is not in use.
		Gateways: []netip.Addr{netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("fe80::1")},
		DNS:      []netip.Addr{netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.0.53")},
	}
	if !got.equal(&want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

func TestParseNetifdStatusOddInput(t *testing.T) {
	for _, tc := range []struct {
		name, json string
		want       NetifdInterface
		err        string
	}{
		{"not a status", `{"interface": []}`, NetifdInterface{}, `no boolean "up"`},
		{"up as string", `{"up": "yes"}`, NetifdInterface{}, `no boolean "up"`},
		{"down, nothing else", `{"up": false}`, NetifdInterface{Network: "x"}, ""},
		{"device without l3_device", `{"up": true, "device": "wwan0"}`, NetifdInterface{Network: "x", Up: true, Device: "wwan0"}, ""},
		{"3g: the ppp device, not the serial port", `{"up": true, "proto": "3g", "device": "/dev/ttyUSB2", "l3_device": "3g-x"}`,
			NetifdInterface{Network: "x", Up: true, Proto: "3g", Device: "3g-x", L3Device: "3g-x"}, ""},
		{"qmi down: a control node is no device", `{"up": false, "proto": "qmi", "device": "/dev/cdc-wdm0"}`,
			NetifdInterface{Network: "x", Proto: "qmi"}, ""},
		{"pppoe: l3_device over its carrier", `{"up": true, "proto": "pppoe", "device": "eth0.2", "l3_device": "pppoe-x"}`,
			NetifdInterface{Network: "x", Up: true, Proto: "pppoe", Device: "pppoe-x", L3Device: "pppoe-x"}, ""},
		{"an l3_device no firewall can match", `{"up": true, "device": "eth0", "l3_device": "bad name"}`,
			NetifdInterface{Network: "x", Up: true, Device: "eth0"}, ""},
		{"bad entries skipped", `{"up": true,
			"ipv4-address": [1, {"address": "nope", "mask": 24}, {"address": "198.18.1.2", "mask": 33},
				{"address": "198.18.1.2"}, {"address": "198.18.1.3", "mask": 32}],
			"route": [{"target": "0.0.0.0", "mask": 0}, {"target": "0.0.0.0", "mask": 0, "nexthop": "0.0.0.0"},
				{"target": "0.0.0.0", "mask": "0", "nexthop": "198.18.1.1"},
				{"target": "0.0.0.0", "mask": 0, "nexthop": "198.18.1.9"}, {"target": "0.0.0.0", "mask": 0, "nexthop": "198.18.1.9"}],
			"dns-server": [7, "x", "::ffff:198.18.0.53"]}`,
			NetifdInterface{Network: "x", Up: true,
				Addresses: []netip.Prefix{netip.MustParsePrefix("198.18.1.3/32")},
				Gateways:  []netip.Addr{netip.MustParseAddr("198.18.1.9")},
				DNS:       []netip.Addr{netip.MustParseAddr("198.18.0.53")}}, ""},
		{"arrays of the wrong type", `{"up": true, "ipv4-address": {"a": 1}, "route": "x", "dns-server": {"a": "198.18.0.1"}}`,
			NetifdInterface{Network: "x", Up: true}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab, err := ubus.FromJSON([]byte(tc.json))
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseNetifdStatus("x", tab)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "x") {
					t.Fatalf("err = %v, want one naming x and %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !got.equal(&tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseNetifdStatus feeds hostile blobmsg (what a rogue ubus peer could answer) through
// the decoder and the netifd reader: neither may panic, and what they return is usable.
func FuzzParseNetifdStatus(f *testing.F) {
	sample, err := ubus.MarshalTable(readNetifdSample(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample)
	f.Add([]byte{})
	small, _ := ubus.MarshalTable(ubus.Table{{Name: "up", Value: true}, {Name: "route", Value: []any{ubus.Table{{Name: "mask", Value: int32(0)}}}}})
	f.Add(small)
	f.Fuzz(func(t *testing.T, b []byte) {
		tab, err := ubus.UnmarshalTable(b)
		if err != nil {
			return
		}
		n, err := ParseNetifdStatus("ethnet", tab)
		if err != nil {
			return
		}
		for _, p := range n.Addresses {
			if !p.IsValid() {
				t.Fatalf("invalid prefix %v from %x", p, b)
			}
		}
		for _, a := range append(n.Gateways, n.DNS...) {
			if !a.IsValid() {
				t.Fatalf("invalid address from %x", b)
			}
		}
	})
}

// An uplink's dynamic interfaces (a modem's modemnet_4/_6, odhcp6c's 464XLAT modemnet_6_4) are
// found by netifd's dump at connection and by their events, and their devices are locked down
// with the uplink; other networks' are not.
func TestBusNetifdDynamic(t *testing.T) {
	bt := startBus(t, busOpts{noServer: true})
	entry := func(name, l3 string) ubus.Table {
		return ubus.Table{{Name: "interface", Value: name}, {Name: "up", Value: true}, {Name: "l3_device", Value: l3}}
	}
	bt.startServerWith(func() {
		obj := &ubus.Object{Name: "network.interface", Methods: []ubus.Method{{Name: "dump",
			Handler: func(context.Context, *ubus.Request) (ubus.Table, error) {
				return ubus.Table{{Name: "interface", Value: []any{
					entry("modemnet_6_4", "464-modemnet"), entry("lan_4", "br-lan"), entry("modemnet_guest", "wlan9"),
				}}}, nil
			}}}}
		if _, err := bt.conn.AddObject(bt.ctx, obj); err != nil {
			t.Fatal(err)
		}
		bt.publishNetifd("modemnet_4", func() (ubus.Table, error) {
			return ubus.Table{{Name: "up", Value: true}, {Name: "l3_device", Value: "wwan0"}}, nil
		})
	})
	bt.waitObject()
	devs := func() []string { return bt.d.lockdownDevices(bt.d.cur.Config) } // on the loop

	bt.eventually("the clat device from the dump", func() bool { return slices.Contains(devs(), "464-modemnet") })
	if err := bt.conn.Send(bt.ctx, "network.interface", args("action", "ifup", "interface", "modemnet_4")); err != nil {
		t.Fatal(err)
	}
	bt.eventually("modemnet_4's device from its event", func() bool { return slices.Contains(devs(), "wwan0") })
	var d []string
	bt.loop(func() { d = devs() })
	if slices.Contains(d, "br-lan") || slices.Contains(d, "wlan9") {
		t.Errorf("locked down another network's device: %v", d)
	}
}

// OpenWrt's IPv6 network of its own on the uplink's device (ethnet6 on '@ethnet', proto dhcpv6)
// and its 464XLAT interface ethnet6_4, as netifd's dump reports them: found at connection and
// attributed to uplink ethnet (the clat device locked down and carrying its IPv4); the LAN's
// IPv6 network is not.
func TestBusNetifdAliasNetwork(t *testing.T) {
	bt := startBus(t, busOpts{noServer: true})
	entry := func(name, proto, dev, l3 string) ubus.Table {
		return ubus.Table{{Name: "interface", Value: name}, {Name: "up", Value: true}, {Name: "proto", Value: proto},
			{Name: "device", Value: dev}, {Name: "l3_device", Value: l3}}
	}
	bt.startServerWith(func() {
		obj := &ubus.Object{Name: "network.interface", Methods: []ubus.Method{{Name: "dump",
			Handler: func(context.Context, *ubus.Request) (ubus.Table, error) {
				return ubus.Table{{Name: "interface", Value: []any{
					entry("ethnet", "dhcp", "eth0", "eth0"), entry("ethnet6", "dhcpv6", "@ethnet", "eth0"),
					entry("ethnet6_4", "464xlat", "464-ethnet6_4", "464-ethnet6_4"),
					entry("lan", "static", "br-lan", "br-lan"), entry("lan6", "dhcpv6", "@lan", "br-lan"),
				}}}, nil
			}}}}
		if _, err := bt.conn.AddObject(bt.ctx, obj); err != nil {
			t.Fatal(err)
		}
	})
	bt.waitObject()
	devs := func() []string { return bt.d.lockdownDevices(bt.d.cur.Config) } // on the loop
	bt.eventually("ethnet6_4's clat device locked down", func() bool { return slices.Contains(devs(), "464-ethnet6_4") })
	var clat string
	var d []string
	bt.loop(func() { clat, d = bt.d.clatDevice(*bt.d.cur.Config.Uplink("ethnet")), devs() })
	if clat != "464-ethnet6_4" || slices.Contains(d, "br-lan") {
		t.Errorf("ethnet's clat device %q; locked down %v", clat, d)
	}
}
