package daemon

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/uplink"
)

func TestParentUplink(t *testing.T) {
	uplinks := []string{"ethnet", "modemnet", "wan"}
	for _, tc := range []struct{ network, want string }{
		{"modemnet", "modemnet"},
		{"modemnet_4", "modemnet"},
		{"modemnet_6", "modemnet"},
		{"modemnet_6_4", "modemnet"},
		{"modemnet_464xlat", "modemnet"},
		{"modemnet_", ""},
		{"modemnet_xlat", ""},
		{"modemnet_guest", ""},
		{"modemnet6", ""},
		{"wan6", ""}, // a network of its own, not a dynamic interface of wan
		{"wan_6", "wan"},
		{"lan", ""},
		{"", ""},
	} {
		if got := parentUplink(tc.network, uplinks); got != tc.want {
			t.Errorf("parentUplink(%q) = %q, want %q", tc.network, got, tc.want)
		}
	}
}

// The devices each concern watches as netifd's reports come and go.
func TestUplinkDevices(t *testing.T) {
	d := &Daemon{log: logline.Discard(), l3: map[string]string{}}
	cfg := &config.Config{Uplinks: []config.Uplink{
		{Name: "ethnet", Device: "eth0", Enabled: true},
		{Name: "stanet", Device: "wlan0", Enabled: false},
		{Name: "modemnet", Device: "", Enabled: true}, // qmi on /dev/cdc-wdm0
	}}
	check := func(step string, lock []string, monitor map[string]string) {
		t.Helper()
		if got := d.lockdownDevices(cfg); !slices.Equal(got, lock) {
			t.Errorf("%s: lock-down %v, want %v", step, got, lock)
		}
		l3 := d.withL3Devices(cfg)
		for _, u := range l3.Uplinks {
			if u.Device != monitor[u.Name] {
				t.Errorf("%s: monitor watches %s on %q, want %q", step, u.Name, u.Device, monitor[u.Name])
			}
		}
	}
	check("before netifd", []string{"eth0"}, map[string]string{"ethnet": "eth0", "stanet": "wlan0"})

	d.noteL3("modemnet", &NetifdInterface{Network: "modemnet", Up: true, L3Device: "wwan0"})
	d.noteL3("ethnet", &NetifdInterface{Network: "ethnet", Up: true, L3Device: "pppoe-ethnet"})
	d.noteL3("stanet", &NetifdInterface{Network: "stanet", Up: true, L3Device: "phy0-sta0"}) // disabled: not locked down
	check("up", []string{"eth0", "pppoe-ethnet", "wwan0"}, map[string]string{"ethnet": "pppoe-ethnet", "stanet": "phy0-sta0", "modemnet": "wwan0"})
	if cfg.Uplinks[0].Device != "eth0" {
		t.Fatalf("withL3Devices changed the configuration: %+v", cfg.Uplinks)
	}

	// 464XLAT: the clat device of the dynamic interface is locked down with the uplink.
	d.noteL3("modemnet_6_4", &NetifdInterface{Network: "modemnet_6_4", Up: true, L3Device: "464-modemnet"})
	check("clat", []string{"464-modemnet", "eth0", "pppoe-ethnet", "wwan0"}, map[string]string{"ethnet": "pppoe-ethnet", "stanet": "phy0-sta0", "modemnet": "wwan0"})

	// Down: netifd leaves l3_device out; the last device stays watched.
	d.noteL3("modemnet", &NetifdInterface{Network: "modemnet", Proto: "qmi"})
	check("down", []string{"464-modemnet", "eth0", "pppoe-ethnet", "wwan0"}, map[string]string{"ethnet": "pppoe-ethnet", "stanet": "phy0-sta0", "modemnet": "wwan0"})

	// Changed: the new device replaces the old one.
	d.noteL3("modemnet", &NetifdInterface{Network: "modemnet", Up: true, L3Device: "wwan1"})
	check("changed", []string{"464-modemnet", "eth0", "pppoe-ethnet", "wwan1"}, map[string]string{"ethnet": "pppoe-ethnet", "stanet": "phy0-sta0", "modemnet": "wwan1"})

	// Gone from netifd: back to the configuration.
	d.noteL3("modemnet", nil)
	d.noteL3("modemnet_6_4", nil)
	d.noteL3("ethnet", nil)
	check("gone", []string{"eth0"}, map[string]string{"ethnet": "eth0", "stanet": "phy0-sta0"})
}

// 464XLAT: IPv4's controller runs on the clat device of the uplink's 464xlat interface, IPv6's
// on the uplink's own device; other dynamic interfaces (the modem's _4 and _6) change nothing.
func TestFamilyDevicesClat(t *testing.T) {
	d := &Daemon{log: logline.Discard(), l3: map[string]string{}}
	cfg := &config.Config{Uplinks: []config.Uplink{
		{Name: "ethnet", Device: "eth0", Enabled: true},
		{Name: "modemnet", Device: "", Enabled: true},
	}}
	check := func(step, v4, v6 string) {
		t.Helper()
		if got := d.familyDevices(cfg, uplink.IPv4).Uplinks[1].Device; got != v4 {
			t.Errorf("%s: IPv4 on %q, want %q", step, got, v4)
		}
		if got := d.familyDevices(cfg, uplink.IPv6).Uplinks[1].Device; got != v6 {
			t.Errorf("%s: IPv6 on %q, want %q", step, got, v6)
		}
		if got := d.familyDevices(cfg, uplink.IPv4).Uplinks[0].Device; got != "eth0" {
			t.Errorf("%s: Ethernet's IPv4 on %q", step, got)
		}
	}
	d.noteL3("modemnet", &NetifdInterface{Network: "modemnet", Up: true, Proto: "qmi", L3Device: "wwan0"})
	d.noteL3("modemnet_4", &NetifdInterface{Network: "modemnet_4", Up: true, Proto: "dhcp", L3Device: "wwan0"})
	d.noteL3("modemnet_6", &NetifdInterface{Network: "modemnet_6", Up: true, Proto: "dhcpv6", L3Device: "wwan0"})
	check("modem up", "wwan0", "wwan0")
	d.noteL3("modemnet_6_4", &NetifdInterface{Network: "modemnet_6_4", Up: true, Proto: "464xlat", L3Device: "464-modemnet_6_4"})
	check("clat", "464-modemnet_6_4", "wwan0")
	if cfg.Uplinks[1].Device != "" {
		t.Fatalf("familyDevices changed the configuration: %+v", cfg.Uplinks)
	}
	// Down: netifd leaves l3_device out; the clat device stays the IPv4 one (its machine sees
	// the device go).
	d.noteL3("modemnet_6_4", &NetifdInterface{Network: "modemnet_6_4", Proto: "464xlat"})
	check("clat down", "464-modemnet_6_4", "wwan0")
	// A 464xlat interface of another network is not this uplink's.
	d.noteL3("ethnet6_4", &NetifdInterface{Network: "ethnet6_4", Up: true, Proto: "464xlat", L3Device: "464-ethnet6_4"})
	check("other network's clat", "464-modemnet_6_4", "wwan0")
	d.noteL3("modemnet_6_4", nil)
	check("clat gone", "wwan0", "wwan0")
}

// A modem's resolvers are spread over its dynamic interfaces (qmi: IPv4 ones on modemnet_4,
// IPv6 ones on modemnet_6): the probes of the uplink use all of them, its own first.
func TestNetifdServersOfDynamicInterfaces(t *testing.T) {
	u := &uplinks{netifdDNS: map[string][]netip.Addr{
		"modemnet":     {netip.MustParseAddr("198.18.30.53")},
		"modemnet_6":   {netip.MustParseAddr("2001:db8:30::53"), netip.MustParseAddr("198.18.30.53")},
		"modemnet_4":   {netip.MustParseAddr("198.18.31.53")},
		"modemnetwork": {netip.MustParseAddr("198.18.99.53")}, // another network
		"ethnet":       {netip.MustParseAddr("198.18.10.53")},
	}}
	want := []netip.Addr{netip.MustParseAddr("198.18.30.53"), netip.MustParseAddr("198.18.31.53"), netip.MustParseAddr("2001:db8:30::53")}
	if got := u.netifdServers("modemnet"); !slices.Equal(got, want) {
		t.Errorf("modemnet's servers %v, want %v", got, want)
	}
	if got := u.netifdServers("stanet"); len(got) != 0 {
		t.Errorf("stanet's servers %v, want none", got)
	}
}

// OpenWrt's usual layout (netifd's dump, as `ubus call network.interface dump` gives it): IPv6
// on a network of its own, wan6 (proto dhcpv6) on device '@wan' (an alias) or on wan's own
// device, and odhcp6c's 464XLAT interface wan6_4 on its clat device. All belong to uplink wan;
// the LAN's networks and another uplink's do not.
func TestNetifdAliases(t *testing.T) {
	uplinks := []string{"wan", "wwan"}
	cases := []struct {
		name   string
		ifaces map[string]netifdDevice
		want   map[string]string // network -> uplink, for each network of ifaces
	}{
		{"wan6 on @wan", map[string]netifdDevice{
			"wan": {"eth0", "eth0"}, "wan6": {"@wan", "eth0"}, "wan6_4": {"464-wan6_4", "464-wan6_4"},
			"lan": {"br-lan", "br-lan"}, "wwan": {"wwan0", "wwan0"}, "wwan_6": {"wwan0", "wwan0"},
		}, map[string]string{"wan": "wan", "wan6": "wan", "wan6_4": "wan", "lan": "", "wwan": "wwan", "wwan_6": "wwan"}},
		{"wan6 on wan's device", map[string]netifdDevice{
			"wan": {"eth0", "eth0"}, "wan6": {"eth0", "eth0"}, "wan6_4": {"464-wan6_4", "464-wan6_4"}, "lan6": {"br-lan", "br-lan"},
		}, map[string]string{"wan6": "wan", "wan6_4": "wan", "lan6": ""}},
		{"PPPoE: wan6 on @wan, both on pppoe-wan", map[string]netifdDevice{
			"wan": {"eth0", "pppoe-wan"}, "wan6": {"@wan", "pppoe-wan"},
		}, map[string]string{"wan6": "wan"}},
		{"wan6 down: no l3_device, its alias still says whose", map[string]netifdDevice{
			"wan6": {"@wan", ""}, "wan6_4": {"", ""},
		}, map[string]string{"wan6": "wan", "wan6_4": "wan"}},
		{"an alias of a network that is no uplink", map[string]netifdDevice{
			"guest6": {"@guest", "br-guest"}, "guest": {"br-guest", "br-guest"},
		}, map[string]string{"guest6": "", "guest": ""}},
	}
	for _, tc := range cases {
		devices := map[string][]string{"wan": {"eth0"}, "wwan": {"wwan0"}}
		for _, u := range uplinks {
			if nd, ok := tc.ifaces[u]; ok {
				devices[u] = append(devices[u], nd.device, nd.l3)
			}
		}
		aliases := netifdAliases(tc.ifaces, devices)
		for network, want := range tc.want {
			if got := uplinkOf(network, uplinks, aliases); got != want {
				t.Errorf("%s: %s belongs to %q, want %q (aliases %v)", tc.name, network, got, want, aliases)
			}
		}
	}
}

// An uplink's resolvers and clat device from its IPv6 network wan6 (and wan6_4): the probes use
// wan6's DNS servers, IPv4 goes through wan6_4's clat device, and both devices are locked down.
func TestNetifdAliasedUplink(t *testing.T) {
	d := &Daemon{log: logline.Discard(), l3: map[string]string{}, aliases: map[string]string{"wan6": "wan"}}
	u := &uplinks{d: d, netifdDNS: map[string][]netip.Addr{
		"wan":  {netip.MustParseAddr("198.18.10.53")},
		"wan6": {netip.MustParseAddr("2001:db8:10::53")},
		"lan6": {netip.MustParseAddr("2001:db8:99::53")},
	}}
	want := []netip.Addr{netip.MustParseAddr("198.18.10.53"), netip.MustParseAddr("2001:db8:10::53")}
	if got := u.netifdServers("wan"); !slices.Equal(got, want) {
		t.Errorf("wan's servers %v, want %v", got, want)
	}
	cfg := &config.Config{Uplinks: []config.Uplink{{Name: "wan", Device: "eth0", Enabled: true}}}
	d.noteL3("wan", &NetifdInterface{Network: "wan", Up: true, L3Device: "eth0"})
	d.noteL3("wan6", &NetifdInterface{Network: "wan6", Up: true, L3Device: "eth0", Proto: "dhcpv6"})
	d.noteL3("wan6_4", &NetifdInterface{Network: "wan6_4", Up: true, L3Device: "464-wan6_4", Proto: "464xlat"})
	if got := d.clatDevice(cfg.Uplinks[0]); got != "464-wan6_4" {
		t.Errorf("wan's clat device %q, want 464-wan6_4", got)
	}
	if got, want := d.lockdownDevices(cfg), []string{"464-wan6_4", "eth0"}; !slices.Equal(got, want) {
		t.Errorf("locked down %v, want %v", got, want)
	}
}
