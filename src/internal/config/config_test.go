package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/uci"
)

// writeDir makes a UCI directory holding files (name -> text).
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func load(t *testing.T, files map[string]string) *Config {
	t.Helper()
	c, err := Load(writeDir(t, files))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wantMain is the documented default of every main option.
var wantMain = Main{
	Firewall:              true,
	FirewallBackend:       "auto",
	EchoHost:              "echo.afero.io",
	EchoPort:              80,
	Probe:                 "echo",
	ProbeTimeout:          500 * time.Millisecond,
	ProbeInterval:         15 * time.Second,
	ProbeIntervalStandby:  10 * time.Minute,
	ProbeIntervalFailing:  250 * time.Millisecond,
	CellularProbeInterval: 5 * time.Minute,
	FailCount:             3,
	RecoverCount:          3,
	DNSHold:               true,
	DNSGrace:              30 * time.Second,
	DNSMinTTL:             time.Minute,
	SetMaxElem:            65536,
	DNSReplyMaxAddrs:      32,
	DNSNameMaxAddrs:       50,
	QueueNum:              27,
	KeepRoute:             false,
	LogLevel:              logline.LevelInfo,
}

var wantDefaultUplinks = []Uplink{
	{Name: "ethnet", Device: "eth0", Kind: KindEthernet, Priority: 1, ProbeInterval: 15 * time.Second, Enabled: true, LimitAction: "last_resort"},
	{Name: "stanet", Device: "wlan0", Kind: KindWiFi, Priority: 2, ProbeInterval: 15 * time.Second, Enabled: true, LimitAction: "last_resort"},
	{Name: "modemnet", Device: "wwan0", Kind: KindCellular, Priority: 3, ProbeInterval: 15 * time.Second, Enabled: true, LimitAction: "last_resort",
		ProbeBudget: 50_000, ProbeBudgetStandby: 1e6 / 720},
}

func TestDefault(t *testing.T) {
	c := Default()
	if !reflect.DeepEqual(c.Main, wantMain) {
		t.Errorf("Main:\n got %+v\nwant %+v", c.Main, wantMain)
	}
	if !reflect.DeepEqual(c.Uplinks, wantDefaultUplinks) {
		t.Errorf("Uplinks:\n got %+v\nwant %+v", c.Uplinks, wantDefaultUplinks)
	}
	if len(c.AP) != 0 || len(c.Warnings) != 0 {
		t.Errorf("AP %v, warnings %v", c.AP, c.Warnings)
	}
	// an empty UCI directory gives the same configuration
	e := load(t, nil)
	if !reflect.DeepEqual(e.Main, c.Main) || !reflect.DeepEqual(e.Uplinks, c.Uplinks) || len(e.Warnings) != 0 {
		t.Errorf("empty directory differs from Default: %+v", e)
	}
	if len(e.Sources) != 3 || e.Sources[2] != DefaultSource || !strings.Contains(e.Sources[0], "missing") {
		t.Errorf("Sources = %q", e.Sources)
	}
}

// TestDefaultUCI: the built-in file (installed as /etc/config/connmgr)
// parses and says exactly what the option table says.
func TestDefaultUCI(t *testing.T) {
	pkg, err := uci.Parse("default.uci", "connmgr", strings.NewReader(DefaultUCI))
	if err != nil {
		t.Fatal(err)
	}
	main := pkg.Section("main")
	if main == nil || main.Type != "connmgr" {
		t.Fatal("no config connmgr 'main'")
	}
	for _, o := range main.Options {
		r := findRow(mainRows, o.Name)
		if r == nil || o.IsList || o.Values[0] != r.def {
			t.Errorf("default.uci option %s %q differs from the table", o.Name, o.Values)
		}
	}
	for _, need := range []string{"firewall", "echo_host", "echo_port"} {
		if main.Get(need) == nil {
			t.Errorf("default.uci lacks %s", need)
		}
	}
	ups := pkg.OfType("uplink")
	if len(ups) != len(defaultUplinks) {
		t.Fatalf("%d uplink sections", len(ups))
	}
	for i, s := range ups {
		d := defaultUplinks[i]
		if typ, _ := s.Value("type"); s.Name != d.name || typ != d.kind.String() {
			t.Errorf("uplink %d: %s type %s", i, s.Name, typ)
		}
		if p, _ := s.Value("priority"); p != string(rune('1'+d.kind)) {
			t.Errorf("uplink %s priority %s", s.Name, p)
		}
	}
}

func TestDefaultsValid(t *testing.T) {
	var m Main
	for _, r := range mainRows {
		if r.def != "" && !r.set(&m, r.def) {
			t.Errorf("main option %s: default %q rejected", r.name, r.def)
		}
	}
	var u Uplink
	for _, r := range uplinkRows {
		if r.def != "" && !r.set(&u, r.def) {
			t.Errorf("uplink option %s: default %q rejected", r.name, r.def)
		}
	}
}

func TestOptionsDocs(t *testing.T) {
	seen := map[string]bool{}
	for _, d := range Options() {
		key := d.Section + "." + d.Name
		if seen[key] {
			t.Errorf("%s listed twice", key)
		}
		seen[key] = true
		if d.Default == "" || d.Values == "" || d.Description == "" || (d.Section != "main" && d.Section != "uplink") {
			t.Errorf("incomplete doc %+v", d)
		}
	}
	for _, need := range []string{"main.firewall", "main.echo_host", "main.echo_port", "main.log_level", "uplink.priority", "uplink.probe_interval"} {
		if !seen[need] {
			t.Errorf("%s not documented", need)
		}
	}
}

// TestGolden reads the network and wireless files captured with stock uci
// (both spellings of the device, quoted and unquoted values).
func TestGolden(t *testing.T) {
	files := map[string]string{}
	for _, name := range []string{"network", "wireless"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		files[name] = string(b)
	}
	c := load(t, files)
	want := []Uplink{
		{Name: "ethnet", Device: "eth0", Kind: KindEthernet, Priority: 1, ProbeInterval: 15 * time.Second, Metric: 10, Enabled: true, LimitAction: "last_resort"},
		{Name: "stanet", Device: "wlan0", Kind: KindWiFi, Priority: 2, ProbeInterval: 15 * time.Second, Metric: 20, Enabled: true, LimitAction: "last_resort"},
		{Name: "modemnet", Device: "wwan0", Kind: KindCellular, Priority: 3, ProbeInterval: 15 * time.Second, Metric: 50, Enabled: true, LimitAction: "last_resort",
			ProbeBudget: 50_000, ProbeBudgetStandby: 1e6 / 720,
			DNS: []netip.Addr{netip.MustParseAddr("198.18.0.53"), netip.MustParseAddr("198.18.1.53")}},
	}
	if !reflect.DeepEqual(c.Uplinks, want) {
		t.Errorf("Uplinks:\n got %+v\nwant %+v", c.Uplinks, want)
	}
	wantAP := []AP{{Network: "apnet", Bridge: "br-apnet", Devices: []string{"wlan0-1"}}}
	if !reflect.DeepEqual(c.AP, wantAP) {
		t.Errorf("AP = %+v, want %+v", c.AP, wantAP)
	}
	if got := c.AP[0].Interfaces(); !reflect.DeepEqual(got, []string{"br-apnet"}) {
		t.Errorf("AP interfaces %v", got)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings %q", c.Warnings)
	}
}

func TestDevices(t *testing.T) {
	cases := []struct {
		name                       string
		network, wireless, connmgr string
		uplink, want               string
	}{
		{"device", "config interface ethnet\n option device eth1\n", "", "", "ethnet", "eth1"},
		{"ifname", "config interface ethnet\n option ifname eth2\n", "", "", "ethnet", "eth2"},
		{"device wins over ifname", "config interface ethnet\n option ifname eth2\n option device eth3\n", "", "", "ethnet", "eth3"},
		{"ifname before device, device still wins", "config interface ethnet\n option device eth3\n option ifname eth2\n", "", "", "ethnet", "eth3"},
		{"vlan device", "config interface ethnet\n option device eth0.2\n", "", "", "ethnet", "eth0.2"},
		{"no section: default", "config interface lan\n option device br-lan\n", "", "", "ethnet", "eth0"},
		{"section of another type", "config device ethnet\n option name eth9\n", "", "", "ethnet", "eth0"},
		{"modem control device is not a netdev, and never the default wwan0", "config interface modemnet\n option device /dev/cdc-wdm0\n option proto qmi\n", "", "", "modemnet", ""},
		{"3g: netifd's ppp device", "config interface modemnet\n option device /dev/ttyUSB2\n option proto 3g\n", "", "", "modemnet", "3g-modemnet"},
		{"pppoe: the ppp device, not its carrier", "config interface ethnet\n option device eth0.2\n option proto pppoe\n", "", "", "ethnet", "pppoe-ethnet"},
		{"pppoa", "config interface modemnet\n option device /dev/ttyUSB2\n option proto pppoa\n", "", "", "modemnet", "pppoa-modemnet"},
		{"connmgr's device beats the protocol's", "config interface modemnet\n option proto 3g\n", "", "config uplink modemnet\n option device ppp9\n", "modemnet", "ppp9"},
		{"two modems on control nodes", "config interface modemnet\n option device /dev/cdc-wdm0\n option proto qmi\nconfig interface stanet\n option device /dev/cdc-wdm1\n option proto mbim\n", "", "", "stanet", ""},
		{"modem control device, ifname given", "config interface modemnet\n option device /dev/ttyUSB2\n option ifname 3g-modemnet\n", "", "", "modemnet", "3g-modemnet"},
		{"sta ifname", "config interface stanet\n option proto dhcp\n",
			"config wifi-iface\n option network stanet\n option mode sta\n option ifname wlan1\n", "", "stanet", "wlan1"},
		{"sta ifname beats network", "config interface stanet\n option ifname wlan0\n",
			"config wifi-iface\n option network 'lan stanet'\n option mode sta\n option ifname phy0-sta0\n", "", "stanet", "phy0-sta0"},
		{"disabled sta ignored", "",
			"config wifi-iface\n option network stanet\n option mode sta\n option ifname wlan1\n option disabled 1\n", "", "stanet", "wlan0"},
		{"sta on disabled radio ignored", "",
			"config wifi-device radio0\n option disabled 1\nconfig wifi-iface\n option device radio0\n option network stanet\n option mode sta\n option ifname wlan1\n", "", "stanet", "wlan0"},
		{"ap iface is not the station", "",
			"config wifi-iface\n option network stanet\n option ifname wlan1\n", "", "stanet", "wlan0"},
		{"connmgr override", "config interface ethnet\n option device eth1\n", "",
			"config uplink ethnet\n option device lan1\n", "ethnet", "lan1"},
		{"custom network name", "config interface wan\n option device eth0\n", "",
			"config uplink wan\n option type ethernet\n", "wan", "eth0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{"network": c.network, "wireless": c.wireless}
			if c.connmgr != "" {
				files["connmgr"] = c.connmgr
			}
			cfg := load(t, files)
			u := cfg.Uplink(c.uplink)
			if u == nil {
				t.Fatalf("no uplink %s in %+v", c.uplink, cfg.Uplinks)
			}
			if u.Device != c.want {
				t.Errorf("device %q, want %q", u.Device, c.want)
			}
		})
	}
}

func TestAP(t *testing.T) {
	cases := []struct {
		name, network, wireless string
		want                    []AP
	}{
		{"interface type bridge",
			"config interface apnet\n option type bridge\n",
			"config wifi-iface\n option network apnet\n option mode ap\n option ifname wlan0-1\n",
			[]AP{{Network: "apnet", Bridge: "br-apnet", Devices: []string{"wlan0-1"}}}},
		{"interface on a bridge device",
			"config device\n option name br-guest\n option type bridge\nconfig interface apnet\n option device br-guest\n",
			"config wifi-iface\n option network apnet\n",
			[]AP{{Network: "apnet", Bridge: "br-guest"}}},
		{"bridge by old-style ifname ports",
			"config device\n option name br-x\n option type bridge\n option ifname 'eth1 wlan0-1'\n",
			"config wifi-iface\n option network apnet\n option ifname wlan0-1\n",
			[]AP{{Network: "apnet", Bridge: "br-x", Devices: []string{"wlan0-1"}}}},
		{"bridge by name",
			"config device\n option name br-apnet\n option type bridge\n",
			"config wifi-iface\n option network apnet\n",
			[]AP{{Network: "apnet", Bridge: "br-apnet"}}},
		{"not bridged",
			"config interface apnet\n option device wlan0-1\n option proto static\n",
			"config wifi-iface\n option network apnet\n option ifname wlan0-1\n",
			[]AP{{Network: "apnet", Devices: []string{"wlan0-1"}}}},
		{"two networks, list network, disabled and sta skipped", "",
			"config wifi-iface\n list network a\n list network b\n option ifname w1\n" +
				"config wifi-iface\n option network a\n option ifname w2\n option disabled 1\n" +
				"config wifi-iface\n option network c\n option mode sta\n",
			[]AP{{Network: "a", Devices: []string{"w1"}}, {Network: "b", Devices: []string{"w1"}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := load(t, map[string]string{"network": c.network, "wireless": c.wireless})
			if !reflect.DeepEqual(cfg.AP, c.want) {
				t.Errorf("AP = %+v, want %+v", cfg.AP, c.want)
			}
		})
	}
	if got := (AP{Devices: []string{"w1", "w2"}}).Interfaces(); !reflect.DeepEqual(got, []string{"w1", "w2"}) {
		t.Errorf("unbridged interfaces %v", got)
	}
}

// mainCases: for every main option, values it takes (and the result) and
// values it refuses. TestEveryOptionTested makes a new row need a case.
var mainCases = []struct {
	option string
	good   map[string]any
	bad    []string
}{
	{"firewall", map[string]any{"0": false, "1": true, "yes": true, "no": false, "on": true, "off": false, "true": true, "FALSE": false, "enabled": true, "disabled": false}, []string{"2", "y", "", "enable"}},
	{"firewall_backend", map[string]any{"auto": "auto", "nftables": "nftables", "iptables": "iptables", "NFTables": "nftables"}, []string{"nft", "fw3", ""}},
	{"echo_host", map[string]any{"echo.afero.io": "echo.afero.io", "198.18.0.1": "198.18.0.1", "2001:db8::1": "2001:db8::1", "echo.afero.io.": "echo.afero.io.", "localhost": "localhost"},
		[]string{"echo afero", "-x.io", "a..b", "http://echo.afero.io", "echo.afero.io:80", strings.Repeat("a", 64) + ".io", "$(reboot)", ""}},
	{"echo_port", map[string]any{"80": uint16(80), "1": uint16(1), "65535": uint16(65535)}, []string{"0", "65536", "abc", "-1", "80/tcp", ""}},
	{"probe", map[string]any{"echo": "echo", "icmp": "icmp", "http": "http"}, []string{"tcp", "ping", ""}},
	{"probe_url", map[string]any{"http://198.18.0.1/generate_204": "http://198.18.0.1/generate_204", "http://echo.afero.io:8080/": "http://echo.afero.io:8080/", "HTTP://connectivitycheck.example": "HTTP://connectivitycheck.example", "http://[2001:db8::1]:8080/g": "http://[2001:db8::1]:8080/g"},
		[]string{"https://echo.afero.io/", "ftp://x/", "echo.afero.io", "http://", "http//x", "http://x:0/", "http://x/a b", "http://[2001:db8::1%eth0]/", "http://2001:db8::1/", ""}},
	{"probe_timeout", map[string]any{"250ms": 250 * time.Millisecond, "2": 2 * time.Second, "0.5": 500 * time.Millisecond, "1m": time.Minute, "50ms": 50 * time.Millisecond},
		[]string{"49ms", "61s", "-1s", "abc", "1e3", "NaN", "Inf", "0x10", "2 s", ""}},
	{"probe_interval", map[string]any{"5s": 5 * time.Second, "100ms": 100 * time.Millisecond, "24h": 24 * time.Hour, "1m30s": 90 * time.Second}, []string{"99ms", "25h", "0", ""}},
	{"probe_interval_standby", map[string]any{"30": 30 * time.Second, "10m": 10 * time.Minute}, []string{"0", "5d", ""}},
	{"probe_interval_failing", map[string]any{"1s": time.Second, "200ms": 200 * time.Millisecond}, []string{"0s", "x", ""}},
	{"cellular_probe_interval", map[string]any{"300": 300 * time.Second, "1h": time.Hour}, []string{"500ms", "2d", ""}},
	{"fail_count", map[string]any{"1": 1, "3": 3, "100": 100}, []string{"0", "101", "2.5", "three", ""}},
	{"recover_count", map[string]any{"5": 5}, []string{"0", "-3", ""}},
	{"dns_hold", map[string]any{"0": false, "on": true}, []string{"maybe", ""}},
	{"dns_grace", map[string]any{"0": time.Duration(0), "10s": 10 * time.Second, "1h": time.Hour}, []string{"-1", "61m", ""}},
	{"dns_min_ttl", map[string]any{"0": time.Duration(0), "300": 5 * time.Minute}, []string{"25h", ""}},
	{"set_maxelem", map[string]any{"1024": 1024, "16777216": 1 << 24}, []string{"1023", "16777217", "64k", ""}},
	{"dns_reply_max_addrs", map[string]any{"1": 1, "32": 32, "1024": 1024}, []string{"0", "1025", "-1", ""}},
	{"dns_name_max_addrs", map[string]any{"1": 1, "50": 50, "4096": 4096}, []string{"0", "4097", "many", ""}},
	{"trusted_resolver", map[string]any{"198.18.5.5": "[198.18.5.5]", "2001:db8::53": "[2001:db8::53]", "::ffff:198.18.5.6": "[198.18.5.6]"},
		[]string{"resolver.example", "0.0.0.0", "::", "fe80::1%eth0", "224.0.0.251", "198.18.5.5:53", ""}},
	{"queue_num", map[string]any{"0": uint16(0), "65535": uint16(65535)}, []string{"-1", "65536", ""}},
	{"keep_route", map[string]any{"1": true, "0": false}, []string{"keep", ""}},
	{"log_level", map[string]any{"debug": logline.LevelDebug, "info": logline.LevelInfo, "warn": logline.LevelWarn, "warning": logline.LevelWarn, "ERROR": logline.LevelError}, []string{"trace", "verbose", "3", ""}},
}

// mainField reads the Main field an option sets (by the table's setter,
// applied to a zero Main and compared field by field).
func mainField(t *testing.T, m Main, option string) any {
	t.Helper()
	fields := map[string]any{
		"firewall": m.Firewall, "firewall_backend": m.FirewallBackend, "echo_host": m.EchoHost, "echo_port": m.EchoPort,
		"probe": m.Probe, "probe_url": m.ProbeURL, "probe_timeout": m.ProbeTimeout, "probe_interval": m.ProbeInterval,
		"probe_interval_standby": m.ProbeIntervalStandby, "probe_interval_failing": m.ProbeIntervalFailing,
		"cellular_probe_interval": m.CellularProbeInterval, "fail_count": m.FailCount, "recover_count": m.RecoverCount,
		"dns_hold": m.DNSHold, "dns_grace": m.DNSGrace, "dns_min_ttl": m.DNSMinTTL, "set_maxelem": m.SetMaxElem,
		"queue_num": m.QueueNum, "keep_route": m.KeepRoute, "log_level": m.LogLevel,
		"dns_reply_max_addrs": m.DNSReplyMaxAddrs, "dns_name_max_addrs": m.DNSNameMaxAddrs,
		"trusted_resolver": fmt.Sprint(m.TrustedResolvers),
	}
	v, ok := fields[option]
	if !ok {
		t.Fatalf("test does not know option %s", option)
	}
	return v
}

func TestMainOptions(t *testing.T) {
	for _, c := range mainCases {
		r := findRow(mainRows, c.option)
		if r == nil {
			t.Fatalf("no option %s", c.option)
		}
		for in, want := range c.good {
			text := "config connmgr 'main'\n\toption " + c.option + " " + uci.Quote(in) + "\n"
			if c.option == "probe" && in == "http" {
				text += "\toption probe_url 'http://198.18.0.1/'\n"
			}
			cfg, err := Load(writeDir(t, map[string]string{"connmgr": text}))
			if err != nil {
				t.Errorf("%s %q: %v", c.option, in, err)
				continue
			}
			if got := mainField(t, cfg.Main, c.option); got != want {
				t.Errorf("%s %q = %v, want %v", c.option, in, got, want)
			}
		}
		for _, in := range c.bad {
			var m Main
			if r.set(&m, in) {
				t.Errorf("%s accepts %q", c.option, in)
			}
			if in == "" {
				continue // an empty option is no option in UCI; the setter still refuses it
			}
			dir := writeDir(t, map[string]string{"connmgr": "config connmgr 'main'\n\toption firewall '1'\n\toption " + c.option + " " + uci.Quote(in) + "\n"})
			_, err := Load(dir)
			problem := "invalid value " + quote(in)
			if r.why != nil { // its own wording is checked in TestLoadErrors
				problem = r.why(in)
			}
			want := dir + "/connmgr:3: section 'main' option '" + c.option + "': " + problem + ": expected " + r.accepts
			if err == nil || err.Error() != want {
				t.Errorf("%s %q:\n got %v\nwant %s", c.option, in, err, want)
			}
		}
	}
}

func TestEveryOptionTested(t *testing.T) {
	tested := map[string]bool{}
	for _, c := range mainCases {
		tested[c.option] = true
	}
	for _, r := range mainRows {
		if !tested[r.name] {
			t.Errorf("main option %s has no test case", r.name)
		}
	}
	for _, c := range uplinkCases {
		tested["uplink."+c.option] = true
	}
	for _, r := range uplinkRows {
		if !tested["uplink."+r.name] {
			t.Errorf("uplink option %s has no test case", r.name)
		}
	}
}

var uplinkCases = []struct {
	option, value string
	check         func(u *Uplink) bool
	err           string // expected, for a bad value
}{
	{"type", "cellular", func(u *Uplink) bool {
		return u.Kind == KindCellular && u.Priority == 3 && u.Device == "wwan0" && u.ProbeBudget == 50_000 && u.ProbeBudgetStandby == 1e6/720
	}, ""},
	{"type", "WiFi", func(u *Uplink) bool { return u.Kind == KindWiFi && u.Priority == 2 }, ""},
	{"type", "lte", nil, "ethernet, wifi or cellular"},
	{"priority", "7", func(u *Uplink) bool { return u.Priority == 7 }, ""},
	{"priority", "0", nil, "an integer 1-99"},
	{"priority", "100", nil, "an integer 1-99"},
	{"probe_interval", "250ms", func(u *Uplink) bool { return u.ProbeInterval == 250*time.Millisecond }, ""},
	{"probe_interval", "10", func(u *Uplink) bool { return u.ProbeInterval == 10*time.Second }, ""},
	{"probe_interval", "0", nil, "a duration from 100ms to 24h (e.g. 250ms, 2s, 1m; a bare number is seconds)"},
	{"enabled", "0", func(u *Uplink) bool { return !u.Enabled }, ""},
	{"enabled", "yes", func(u *Uplink) bool { return u.Enabled }, ""},
	{"enabled", "2", nil, "a boolean: 1/0, yes/no, on/off, true/false, enabled/disabled"},
	{"device", "usb0", func(u *Uplink) bool { return u.Device == "usb0" }, ""},
	{"probe_budget", "50K/h", func(u *Uplink) bool { return u.ProbeBudget == 50_000 && u.ProbeBudgetStandby == 0 }, ""},
	{"probe_budget", "2.4M/day", nil, budgetAccepts},
	{"probe_budget", "2400000/day", func(u *Uplink) bool { return u.ProbeBudget == 100_000 }, ""},
	{"probe_budget", "0", func(u *Uplink) bool { return u.ProbeBudget == 0 }, ""},
	{"probe_budget", "50K", nil, budgetAccepts},
	{"probe_budget", "50K/week", nil, budgetAccepts},
	{"probe_budget", "0/h", nil, budgetAccepts},
	{"probe_budget", "-5K/h", nil, budgetAccepts},
	{"probe_budget_standby", "1M/month", func(u *Uplink) bool { return u.ProbeBudgetStandby == 1e6/720 }, ""},
	{"probe_budget_standby", "720KB/month", func(u *Uplink) bool { return u.ProbeBudgetStandby == 1000 }, ""},
	{"probe_budget_standby", "1M/", nil, budgetAccepts},
	{"monthly_limit", "500M", func(u *Uplink) bool { return u.MonthlyLimit == 500e6 }, ""},
	{"monthly_limit", "2G", func(u *Uplink) bool { return u.MonthlyLimit == 2e9 }, ""},
	{"monthly_limit", "0", func(u *Uplink) bool { return u.MonthlyLimit == 0 }, ""},
	{"monthly_limit", "1T", nil, "bytes: a number with an optional K, M or G (1000s), e.g. 500M; 0: none"},
	{"monthly_limit", "99999999999G", nil, "bytes: a number with an optional K, M or G (1000s), e.g. 500M; 0: none"},
	{"limit_action", "off", func(u *Uplink) bool { return u.LimitAction == "off" }, ""},
	{"limit_action", "Last_Resort", func(u *Uplink) bool { return u.LimitAction == "last_resort" }, ""},
	{"limit_action", "block", nil, "last_resort or off"},
	{"device", "a-very-long-name0", nil, deviceAccepts},
	{"device", "eth0:1", nil, deviceAccepts},
	{"device", "eth 0", nil, deviceAccepts},
	{"device", "../x", nil, deviceAccepts},
}

func TestUplinkOptions(t *testing.T) {
	for _, c := range uplinkCases {
		text := "config uplink 'wan'\n\toption type 'ethernet'\n\toption " + c.option + " " + uci.Quote(c.value) + "\n"
		dir := writeDir(t, map[string]string{"connmgr": text})
		cfg, err := Load(dir)
		if c.err != "" {
			want := dir + "/connmgr:3: section 'wan' option '" + c.option + "': invalid value " + quote(c.value) + ": expected " + c.err
			if err == nil || err.Error() != want {
				t.Errorf("%s %q:\n got %v\nwant %s", c.option, c.value, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s %q: %v", c.option, c.value, err)
			continue
		}
		if len(cfg.Uplinks) != 1 || !c.check(&cfg.Uplinks[0]) {
			t.Errorf("%s %q: %+v", c.option, c.value, cfg.Uplinks)
		}
	}
}

func TestUplinks(t *testing.T) {
	cfg := load(t, map[string]string{"connmgr": `
config connmgr 'main'
	option probe_interval '2s'

config uplink 'modemnet'
	option priority '1'
	option probe_interval '1m'

config uplink 'stanet'

config uplink 'ethnet'
	option priority '1'
	option enabled '0'
`})
	var got []string
	for _, u := range cfg.Uplinks {
		got = append(got, u.Name+"/"+u.Kind.String()+"/"+u.Device+"/"+fmtDur(u.ProbeInterval)+"/"+map[bool]string{true: "on", false: "off"}[u.Enabled])
	}
	// sorted by priority, then kind; default kinds from the network names
	want := []string{"ethnet/ethernet/eth0/2s/off", "modemnet/cellular/wwan0/1m/on", "stanet/wifi/wlan0/2s/on"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("uplinks %v, want %v", got, want)
	}
	if cfg.Uplink("nosuch") != nil {
		t.Error("Uplink(nosuch)")
	}
}

// TestErrors: each error names file, line, section, option and value.
func TestErrors(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  string // the message after "DIR/"
	}{
		{"syntax error passes through", map[string]string{"connmgr": "config connmgr main\n\toption firewall 'x\n"},
			"connmgr: uci: Parse error (EOF with unterminated ') at line 2, byte 20"},
		{"syntax error in network", map[string]string{"network": "config interface lan\n\tbogus\n"},
			"network: uci: Parse error (invalid command) at line 2, byte 1"},
		{"example from the brief", map[string]string{"connmgr": "# c\n\nconfig connmgr 'main'\n\toption firewall '1'\n\toption echo_host 'echo.afero.io'\n\n\toption echo_port 'abc'\n"},
			"connmgr:7: section 'main' option 'echo_port': invalid value 'abc': expected a port number 1-65535"},
		{"anonymous connmgr section", map[string]string{"connmgr": "config connmgr\n\toption fail_count 0\n"},
			"connmgr:2: section '@connmgr[0]' option 'fail_count': invalid value '0': expected an integer 1-100"},
		{"list for an option", map[string]string{"connmgr": "config connmgr main\n\tlist echo_port 80\n"},
			"connmgr:2: section 'main' option 'echo_port': a list: expected a single value ('option echo_port', not 'list')"},
		{"http probe without url", map[string]string{"connmgr": "config connmgr main\n\toption probe http\n"},
			"connmgr:2: section 'main' option 'probe_url': missing with probe 'http': expected an http:// URL: http://HOST[:PORT][/PATH] (not https) in option probe_url"},
		{"https probe url", map[string]string{"connmgr": "config connmgr main\n\toption probe http\n\toption probe_url 'https://echo.afero.io/generate_204'\n"},
			"connmgr:3: section 'main' option 'probe_url': invalid value 'https://echo.afero.io/generate_204': https is not supported: TLS would make connmgr too big for 16 MB routers, and a 204 check needs no TLS: expected an http:// URL: http://HOST[:PORT][/PATH] (not https)"},
		{"bad probe url port", map[string]string{"connmgr": "config connmgr main\n\toption probe_url 'http://echo.afero.io:http/'\n"},
			"connmgr:2: section 'main' option 'probe_url': invalid value 'http://echo.afero.io:http/': port \"http\" is not a number from 1 to 65535: expected an http:// URL: http://HOST[:PORT][/PATH] (not https)"},
		{"anonymous uplink", map[string]string{"connmgr": "config uplink\n\toption type wifi\n"},
			"connmgr:1: section '@uplink[0]': uplink section without a name: expected config uplink 'NETWORK', named after the UCI network it uses (e.g. 'ethnet')"},
		{"uplink without type", map[string]string{"connmgr": "config uplink 'wan'\n\toption priority 1\n"},
			"connmgr:1: section 'wan' option 'type': missing (the network name does not imply it): expected ethernet, wifi or cellular"},
		{"two uplinks of one kind", map[string]string{"connmgr": "config uplink ethnet\nconfig uplink wan\n\toption type ethernet\n"},
			"connmgr:3: section 'wan' option 'type': second ethernet uplink (uplink 'ethnet' is one): expected one enabled uplink of each type"},
		{"shared device from connmgr", map[string]string{"connmgr": "config uplink ethnet\nconfig uplink stanet\n\toption device eth0\n"},
			"connmgr:3: section 'stanet' option 'device': device eth0 is already used by uplink 'ethnet': expected a device of its own (option device of config uplink 'stanet' in connmgr)"},
		{"shared device from network", map[string]string{"network": "config interface ethnet\n\toption device eth0\nconfig interface modemnet\n\toption ifname eth0\n"},
			"network:4: section 'modemnet' option 'ifname': device eth0 is already used by uplink 'ethnet': expected a device of its own (option device of config uplink 'modemnet' in connmgr)"},
		{"bad metric", map[string]string{"network": "config interface ethnet\n\toption metric ten\n"},
			"network:2: section 'ethnet' option 'metric': invalid value 'ten': expected a route metric 0-2147483647"},
		{"bad dns", map[string]string{"network": "config interface modemnet\n\tlist dns 198.18.0.53\n\tlist dns 'dns.google'\n"},
			"network:3: section 'modemnet' option 'dns': invalid value 'dns.google': expected an IPv4 or IPv6 address"},
		{"bad network device", map[string]string{"network": "config interface ethnet\n\toption ifname 'eth0 eth1'\n"},
			"network:2: section 'ethnet' option 'ifname': invalid value 'eth0 eth1': expected " + deviceAccepts},
		{"bad sta ifname", map[string]string{"wireless": "config wifi-iface sta\n\toption network stanet\n\toption mode sta\n\toption ifname 'wlan0/x'\n"},
			"wireless:4: section 'sta' option 'ifname': invalid value 'wlan0/x': expected " + deviceAccepts},
		{"control bytes are quoted", map[string]string{"connmgr": "config connmgr main\n\toption echo_host \"a\\\nb\"\n\toption log_level 'x\ny'\n"},
			"connmgr:4: section 'main' option 'log_level': invalid value \"x\\ny\": expected debug, info, warn or error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := writeDir(t, c.files)
			cfg, err := Load(dir)
			if cfg != nil {
				t.Errorf("got a config with the error")
			}
			if err == nil || err.Error() != dir+"/"+c.want {
				t.Errorf("\n got %v\nwant %s", err, dir+"/"+c.want)
			}
		})
	}
	var pe *uci.ParseError
	_, err := Load(writeDir(t, cases[0].files))
	if !errors.As(err, &pe) || pe.Line != 2 {
		t.Errorf("syntax error is not a *uci.ParseError: %v", err)
	}
	var ce *Error
	_, err = Load(writeDir(t, cases[2].files))
	if !errors.As(err, &ce) || ce.Option != "echo_port" || ce.Value != "abc" || ce.Line != 7 || ce.Section != "main" {
		t.Errorf("not a *config.Error with fields: %#v", err)
	}
}

func TestLoadDirErrors(t *testing.T) {
	if _, err := Load(filepath.Join(t.TempDir(), "nosuch")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
	dir := writeDir(t, map[string]string{"x": ""})
	if _, err := Load(filepath.Join(dir, "x")); err == nil {
		t.Error("file as dir accepted")
	}
	if os.Geteuid() != 0 {
		dir := writeDir(t, map[string]string{"connmgr": ""})
		if err := os.Chmod(filepath.Join(dir, "connmgr"), 0); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(dir); err == nil {
			t.Error("unreadable connmgr accepted")
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "network"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("network directory: %v", err)
	}
}

func TestWarnings(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"connmgr": "config connmgr main\n\toption echo_prot 80\nconfig connmgr other\nconfig bogus\nconfig uplink ethnet\n\toption metric 5\nconfig uplink wan\n\toption type wifi\nconfig uplink modemnet\n",
		"network": "config interface lan\n",
	})
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		dir + "/connmgr:3: section 'other': second connmgr section ignored (the one named 'main' is used)",
		dir + "/connmgr:4: section '@bogus[0]': unknown section type 'bogus' ignored",
		dir + "/connmgr:6: section 'ethnet': unknown option 'metric' ignored",
		dir + "/connmgr:2: section 'main': unknown option 'echo_prot' ignored",
		// Not for ethnet and modemnet: a hub without a modem has no modemnet, and the shipped
		// configuration lists all three.
		dir + "/network: no interface 'wan' for uplink 'wan'",
	}
	if !reflect.DeepEqual(cfg.Warnings, want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(cfg.Warnings, "\n"), strings.Join(want, "\n"))
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindEthernet: "ethernet", KindWiFi: "wifi", KindCellular: "cellular", 7: "Kind(7)", -1: "Kind(-1)"} {
		if k.String() != want {
			t.Errorf("%d: %s", int(k), k.String())
		}
	}
	if KindEthernet != 0 || KindWiFi != 1 || KindCellular != 2 {
		t.Error("kinds must be attribute 65008's numbers")
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{0: "0s", 50 * time.Millisecond: "50ms", time.Minute: "1m", 90 * time.Second: "90s", 24 * time.Hour: "24h"} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%v) = %s", d, got)
		}
	}
}

// TestShippedConfigWithoutModem: the shipped /etc/config/connmgr on a hub with no modem (no
// modemnet in network) loads without a warning; it warned about modemnet on every such hub.
func TestShippedConfigWithoutModem(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"connmgr": DefaultUCI,
		"network": "config interface ethnet\n\toption device eth0\nconfig interface stanet\n\toption proto dhcp\n",
	})
	cfg, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %q", cfg.Warnings)
	}
}

func TestTrustedResolvers(t *testing.T) {
	c := load(t, map[string]string{"connmgr": "config connmgr 'main'\n\tlist trusted_resolver '198.18.5.5'\n\tlist trusted_resolver '::ffff:198.18.5.6'\n\tlist trusted_resolver '2001:db8::53'\n"})
	want := []netip.Addr{netip.MustParseAddr("198.18.5.5"), netip.MustParseAddr("198.18.5.6"), netip.MustParseAddr("2001:db8::53")}
	if !reflect.DeepEqual(c.Main.TrustedResolvers, want) {
		t.Fatalf("trusted resolvers %v", c.Main.TrustedResolvers)
	}
	one := load(t, map[string]string{"connmgr": "config connmgr 'main'\n\toption trusted_resolver '198.18.5.5'\n"})
	if !reflect.DeepEqual(one.Main.TrustedResolvers, want[:1]) {
		t.Fatalf("option trusted_resolver: %v", one.Main.TrustedResolvers)
	}
	for _, bad := range []string{"resolver.example", "0.0.0.0", "fe80::1%eth0", "224.0.0.251"} {
		_, err := Load(writeDir(t, map[string]string{"connmgr": "config connmgr 'main'\n\tlist trusted_resolver '198.18.5.5'\n\tlist trusted_resolver '" + bad + "'\n"}))
		if err == nil || !strings.Contains(err.Error(), "connmgr:3:") || !strings.Contains(err.Error(), "trusted_resolver") || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: %v", bad, err)
		}
	}
	if _, err := Load(writeDir(t, map[string]string{"connmgr": "config connmgr 'main'\n\tlist dns_reply_max_addrs '3'\n"})); err == nil {
		t.Error("a list of a single-valued option was accepted")
	}
}
