package config

import (
	"math/rand"
	"sort"
	"strings"
	"testing"

	"github.com/afero/af-conn/internal/uci"
)

// TestRandomConfigs loads thousands of random but syntactically valid UCI
// directories: the loader never panics, and whatever it accepts keeps the
// Config's promises.
func TestRandomConfigs(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	pick := func(l []string) string { return l[rng.Intn(len(l))] }
	var values []string
	for _, c := range mainCases {
		for v := range c.good {
			values = append(values, v)
		}
		values = append(values, c.bad...)
	}
	values = append(values, "eth0", "eth1", "wlan0", "wwan0", "br-apnet", "/dev/cdc-wdm0", "198.18.0.53", "10", "sta", "ap",
		"bridge", "ethnet", "stanet", "modemnet", "apnet", "wan", "ethernet", "wifi", "cellular", "lan stanet")
	var optNames []string
	for _, r := range mainRows {
		optNames = append(optNames, r.name)
	}
	for _, r := range uplinkRows {
		optNames = append(optNames, r.name)
	}
	optNames = append(optNames, "bogus", "metric", "dns", "ifname", "network", "mode", "disabled", "name", "ports")
	names := []string{"", "main", "ethnet", "stanet", "modemnet", "wan", "apnet", "lan", "radio0", "sta"}

	section := func(b *strings.Builder, types []string) {
		b.WriteString("config " + pick(types))
		if n := pick(names); n != "" {
			b.WriteString(" " + uci.Quote(n))
		}
		b.WriteString("\n")
		for k := rng.Intn(6); k > 0; k-- {
			kw := "option"
			if rng.Intn(5) == 0 {
				kw = "list"
			}
			b.WriteString("\t" + kw + " " + pick(optNames) + " " + uci.Quote(pick(values)) + "\n")
		}
	}
	accepted := 0
	for i := 0; i < 3000; i++ {
		files := map[string]string{}
		for name, types := range map[string][]string{
			"connmgr":  {"connmgr", "uplink", "uplink", "other"},
			"network":  {"interface", "device", "route"},
			"wireless": {"wifi-device", "wifi-iface", "wifi-iface"},
		} {
			if rng.Intn(4) == 0 {
				continue // missing file
			}
			var b strings.Builder
			for k := rng.Intn(5); k > 0; k-- {
				section(&b, types)
			}
			files[name] = b.String()
		}
		cfg, err := Load(writeDir(t, files))
		if err != nil {
			if cfg != nil {
				t.Fatalf("config and error: %v", err)
			}
			continue
		}
		accepted++
		checkInvariants(t, cfg, files)
	}
	t.Logf("%d of 3000 random configurations accepted", accepted)
	if accepted < 100 {
		t.Errorf("only %d accepted: the generator does not exercise the success path", accepted)
	}
}

func checkInvariants(t *testing.T, c *Config, files map[string]string) {
	t.Helper()
	if len(c.Uplinks) == 0 {
		t.Fatalf("no uplinks: %v", files)
	}
	if !sort.SliceIsSorted(c.Uplinks, func(i, j int) bool { return c.Uplinks[i].Priority < c.Uplinks[j].Priority }) {
		t.Fatalf("uplinks not sorted: %+v", c.Uplinks)
	}
	devices, kinds := map[string]bool{}, map[Kind]bool{}
	for _, u := range c.Uplinks {
		if !validDevice(u.Device) || u.Priority < 1 || u.ProbeInterval <= 0 || u.Kind < 0 || u.Kind > KindCellular {
			t.Fatalf("bad uplink %+v from %v", u, files)
		}
		if !u.Enabled {
			continue
		}
		if devices[u.Device] || kinds[u.Kind] {
			t.Fatalf("shared device or kind: %+v", c.Uplinks)
		}
		devices[u.Device], kinds[u.Kind] = true, true
	}
	m := c.Main
	if m.EchoPort == 0 || m.ProbeTimeout < 50e6 || m.FailCount < 1 || m.RecoverCount < 1 || (m.Probe == "http" && m.ProbeURL == "") {
		t.Fatalf("bad main %+v", m)
	}
}
