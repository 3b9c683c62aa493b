package daemon

import (
	"slices"
	"testing"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/logline"
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
