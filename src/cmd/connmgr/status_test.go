package main

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

func TestParseClientArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want int // positional arguments wanted
		json bool
		// results
		code   int
		socket string
		pos    []string
		asJSON bool
		err    string
	}{
		{args: nil, code: -1, socket: defaultSocket},
		{args: []string{"--json", "-s", "/x.sock"}, json: true, code: -1, socket: "/x.sock", asJSON: true},
		{args: []string{"-s=/y.sock", "-json"}, json: true, code: -1, socket: "/y.sock", asJSON: true},
		{args: []string{"65008", "-s", "/x.sock"}, want: 1, code: -1, socket: "/x.sock", pos: []string{"65008"}},
		{args: []string{"-s", "/x.sock", "65008", "-1"}, want: 2, code: -1, socket: "/x.sock", pos: []string{"65008", "-1"}},
		{args: []string{"--", "-x"}, want: 1, code: -1, socket: defaultSocket, pos: []string{"-x"}},
		{args: []string{"--json"}, code: exitUsage, err: "flag provided but not defined: --json"},
		{args: []string{"-s"}, code: exitUsage, err: "flag needs an argument: -s"},
		{args: []string{"-s", ""}, code: exitUsage, err: "empty socket path"},
		{args: []string{"1", "2"}, want: 1, code: exitUsage, err: "want 1 argument(s), got 2"},
		{args: []string{"-h"}, code: 0},
	} {
		var out, errb strings.Builder
		ca, code := parseClientArgs("x", "SYNOPSIS", tc.want, tc.json, tc.args, &out, &errb)
		if code != tc.code {
			t.Errorf("%q: code %d, want %d (%s)", tc.args, code, tc.code, errb.String())
			continue
		}
		if tc.err != "" {
			if !strings.Contains(errb.String(), tc.err) || !strings.Contains(errb.String(), "usage: connmgr x SYNOPSIS") {
				t.Errorf("%q: stderr %q, want %q and the usage", tc.args, errb.String(), tc.err)
			}
			continue
		}
		if code == 0 {
			if !strings.Contains(out.String(), "usage: connmgr x SYNOPSIS") {
				t.Errorf("%q: help output %q", tc.args, out.String())
			}
			continue
		}
		if ca.socket != tc.socket || ca.json != tc.asJSON || !reflect.DeepEqual(ca.pos, tc.pos) {
			t.Errorf("%q: got %+v", tc.args, ca)
		}
	}
}

func TestWriteStatus(t *testing.T) {
	st := daemon.Status{
		Version: "1.2", NetworkType: 0, InUse: "ethnet", InUseDevice: "eth0", PreferredNetworkType: 1,
		Firewall: daemon.FirewallStatus{Mode: "enabled", Backend: "nftables", DNSMode: "hold", DNSQueue: "xt-nfqueue",
			WhitelistEntries: 9, Pinholes: 3, Restores: 1, Error: "set full",
			DNSTrustedResolvers: []string{"198.18.1.1", "2001:db8::53"},
			DNSRejected:         map[string]uint64{"untrusted_resolver": 5, "unsolicited": 2, "wrong_id": 0},
			DNSBounds:           map[string]uint64{"reply_truncated": 8, "gave_way_lan": 0}},
		UptimeSeconds: 3723,
		Ubus:          &daemon.UbusStatus{Connected: true, Socket: "/var/run/ubus/ubus.sock", Reconnects: 2},
		Counters:      daemon.Counters{Switches: 4, Probes: 20},
		Uplinks: []daemon.UplinkStatus{
			{Network: "ethnet", Device: "eth0", Type: "ethernet", State: "ITFUP_SS", StateNum: 4, Address: "198.18.1.2/24",
				Gateway: "198.18.1.1", InUse: true, LastProbe: "success", RTTms: 1.25, SinceSeconds: 300, Probes: 20, ProbeFails: 1},
			{Network: "modemnet", Device: "wwan0", Type: "cellular", State: "ITFDOWN_SX", StateNum: 1, LastProbe: "none",
				RxBytes: 1000, TxBytes: 2000, MonthRxBytes: 5000, MonthTxBytes: 6000, MonthlyLimit: 10000, LimitReached: true,
				ProbeRounds: 3, ProbeBytes: 2610, ProbeBudget: 50000, ProbeBudgetStandby: 1388, BudgetIntervalS: 2256},
		},
		UsageMonth: "2026-12",
	}
	var b strings.Builder
	writeStatus(&b, st)
	got := b.String()
	for _, want := range []string{
		"connmgr 1.2, up 1h2m3s\n",
		"network type:    0 (Ethernet), in use: ethnet (eth0)\n",
		"preferred type:  1 (WLAN)\n",
		"firewall:        enabled, nftables, hold, DNS queue xt-nfqueue; 9 whitelist entries, 3 pinholes, restored 1 times\n",
		"firewall error:  set full\n",
		"DNS trusted:     198.18.1.1 2001:db8::53\n",
		"DNS rejected:    unsolicited 2, untrusted_resolver 5\n",
		"DNS bounds:      reply_truncated 8\n",
		"ubus:            /var/run/ubus/ubus.sock, 2 reconnects\n",
		"counters:        switches 4, probes 20,",
		"* ethnet    eth0    ethernet  ITFUP_SS (4)    198.18.1.2/24  198.18.1.1  success  1.2ms  5m0s   20 (1 failed)\n",
		"  modemnet  wwan0   cellular  ITFDOWN_SX (1)  -              -           none     -      0s     0 (0 failed)\n",
		"  NETWORK   IN    OUT   MONTH 2026-12  LIMIT            PROBES                PROBE BUDGET\n",
		"  modemnet  1000  2000  11000          10000 (reached)  3 rounds, 2610 bytes  50000/h in use, 1388/h standby (every 37m36s)\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("status lacks %q:\n%s", want, got)
		}
	}
	// Both families: the uplink's line, then one line per family under it.
	st.InUseIPv4, st.InUseIPv6 = "ethnet", "modemnet"
	st.Uplinks[0].IPv4 = &daemon.FamilyStatus{Device: "eth0", State: "ITFUP_SS", StateNum: 4, Address: "198.18.1.2/24",
		Gateway: "198.18.1.1", InUse: true, LastProbe: "success", RTTms: 1.25, SinceSeconds: 300, Probes: 12, ProbeFails: 1}
	st.Uplinks[0].IPv6 = &daemon.FamilyStatus{Device: "eth0", State: "ITFUP_SF", StateNum: 5, Address: "2001:db8:1::2/64",
		Gateway: "fe80::1", LastProbe: "failure", SinceSeconds: 20, Probes: 8, ProbeFails: 3}
	st.Uplinks[1].IPv4 = &daemon.FamilyStatus{Device: "464-modemnet", State: "ITFUP_SS", StateNum: 4, Address: "198.18.46.2/32", LastProbe: "success", RTTms: 40}
	st.Uplinks[1].IPv6 = &daemon.FamilyStatus{Device: "wwan0", State: "ITFUP_SS", StateNum: 4, InUse: true, Address: "2001:db8:3::2/64", Gateway: "fe80::3", LastProbe: "success", RTTms: 38}
	st.Uplinks[1].State, st.Uplinks[1].StateNum, st.Uplinks[1].Address, st.Uplinks[1].LastProbe, st.Uplinks[1].RTTms = "ITFUP_SS", 4, "198.18.46.2/32", "success", 40
	b.Reset()
	writeStatus(&b, st)
	for _, want := range []string{
		"network type:    0 (Ethernet), in use: ethnet (eth0) (IPv4 ethnet, IPv6 modemnet)\n",
		"* ethnet    eth0          ethernet  ITFUP_SS (4)  198.18.1.2/24     198.18.1.1  success  1.2ms   5m0s   20 (1 failed)\n",
		"   * ipv4   eth0                    ITFUP_SS (4)  198.18.1.2/24     198.18.1.1  success  1.2ms   5m0s   12 (1 failed)\n",
		"     ipv6   eth0                    ITFUP_SF (5)  2001:db8:1::2/64  fe80::1     failure  -       20s    8 (3 failed)\n",
		"  modemnet  wwan0         cellular  ITFUP_SS (4)  198.18.46.2/32    -           success  40.0ms  0s     0 (0 failed)\n",
		"     ipv4   464-modemnet            ITFUP_SS (4)  198.18.46.2/32    -           success  40.0ms  0s     0 (0 failed)\n",
		"   * ipv6   wwan0                   ITFUP_SS (4)  2001:db8:3::2/64  fe80::3     success  38.0ms  0s     0 (0 failed)\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("dual-stack status lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	writeStatus(&b, daemon.Status{Version: "x", NetworkType: -1, PreferredNetworkType: -1, Firewall: daemon.FirewallStatus{Mode: "disabled"}})
	for _, want := range []string{"network type:    -1 (none), in use: none\n", "preferred type:  automatic\n", "firewall:        disabled\n", "no uplinks reported\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("idle status lacks %q:\n%s", want, b.String())
		}
	}
}

// A stand-in for the daemon's object answers the CLI; the real daemon is the end-to-end
// test's business. This checks what the CLI sends and how it reports each outcome.
func TestClientCommandsAgainstAnObject(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")

	// No ubusd at all: exit 1 naming the socket; but the hotplug hint is not an error.
	code, _, stderr := runCLI("status", "-s", sock)
	if code != exitFailure || !strings.Contains(stderr, "cannot reach ubus at "+sock) {
		t.Errorf("without ubusd: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runCLI("notify", "ethnet", "ifup", "-s", sock); code != 0 || !strings.Contains(stderr, "nothing to tell") {
		t.Errorf("notify without ubusd: exit %d, %q", code, stderr)
	}

	srv, err := ubustest.NewServer(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	// ubusd without connmgr: exit 1, "not running".
	code, _, stderr = runCLI("get", "65008", "-s", sock)
	if code != exitFailure || !strings.Contains(stderr, "connmgr daemon is not running") || !strings.Contains(stderr, sock) {
		t.Errorf("without the daemon: exit %d, %q", code, stderr)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var calls []string
	status := daemon.Status{Version: "t", NetworkType: 2, InUse: "modemnet", InUseDevice: "wwan0", PreferredNetworkType: -1,
		Firewall: daemon.FirewallStatus{Mode: "disabled"}}
	handler := func(ctx context.Context, r *ubus.Request) (ubus.Table, error) {
		j, _ := ubus.FormatJSON(r.Args, false)
		mu.Lock()
		calls = append(calls, r.Method+" "+string(j))
		mu.Unlock()
		switch r.Method {
		case "status":
			return daemon.StatusTable(status)
		case "get_attribute":
			return ubus.Table{{Name: "id", Value: int32(65008)}, {Name: "value", Value: int32(2)}}, nil
		case "set_attribute":
			if v, _ := r.Args.Int("value"); v > 2 {
				return ubus.Table{{Name: "error", Value: "value 3 out of range -1..2"}}, ubus.StatusInvalidArgument
			}
			return nil, nil
		case "switch":
			if s, _ := r.Args.String("interface"); s == "wlan0" {
				return ubus.Table{{Name: "network", Value: "stanet"}, {Name: "device", Value: "wlan0"}, {Name: "preferred_network_type", Value: int32(1)}}, nil
			}
			return nil, ubus.StatusNotFound // no text: the status alone explains
		case "notify":
			if s, _ := r.Args.String("action"); s == "" {
				return ubus.Table{{Name: "error", Value: `missing argument "action"`}}, ubus.StatusInvalidArgument
			}
			return nil, nil
		}
		return nil, ubus.StatusMethodNotFound
	}
	obj := &ubus.Object{Name: daemon.ObjectName}
	for _, m := range []string{"status", "get_attribute", "set_attribute", "switch", "notify"} {
		obj.Methods = append(obj.Methods, ubus.Method{Name: m, Handler: handler})
	}
	if _, err := conn.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"status", "-s", sock}, 0, "network type:    2 (WAN), in use: modemnet (wwan0)\n", ""},
		{[]string{"status", "--json", "-s", sock}, 0, "{\n\t\"version\": \"t\",\n\t\"network_type\": 2,\n", ""},
		{[]string{"get", "65008", "-s", sock}, 0, "2\n", ""},
		{[]string{"set", "-s", sock, "65008", "-1"}, 0, "", ""},
		{[]string{"set", "65008", "3", "-s", sock}, exitFailure, "", "connmgr set: value 3 out of range -1..2 (Invalid argument)\n"},
		{[]string{"switch", "wlan0", "-s", sock}, 0, "preferring stanet (wlan0): network type 1 (WLAN)\n", ""},
		{[]string{"switch", "eth9", "-s", sock}, exitFailure, "", "connmgr switch: Not found\n"},
		{[]string{"get", "x", "-s", sock}, exitUsage, "", `attribute id "x" is not a number from 0 to 65535`},
		{[]string{"get", "70000", "-s", sock}, exitUsage, "", `attribute id "70000"`},
		{[]string{"set", "65008", "one", "-s", sock}, exitUsage, "", `value "one" is not an integer`},
		{[]string{"set", "65008"}, exitUsage, "", "want 2 argument(s), got 1"},
		{[]string{"notify", "ethnet", "ifup", "-s", sock}, 0, "", ""},
		{[]string{"notify", "ethnet", "", "-s", sock}, exitFailure, "", `connmgr notify: missing argument "action" (Invalid argument)`},
		{[]string{"notify", "ethnet"}, exitUsage, "", "want 2 argument(s), got 1"},
	} {
		code, stdout, stderr := runCLI(tc.args...)
		if code != tc.code || !strings.Contains(stdout, tc.stdout) || !strings.Contains(stderr, tc.stderr) {
			t.Errorf("connmgr %q: exit %d\nstdout %q\nstderr %q\nwant exit %d, %q, %q", tc.args, code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{`status {}`, `status {}`, `get_attribute {"id":65008}`, `set_attribute {"id":65008,"value":-1}`,
		`set_attribute {"id":65008,"value":3}`, `switch {"interface":"wlan0"}`, `switch {"interface":"eth9"}`,
		`notify {"interface":"ethnet","action":"ifup"}`, `notify {"interface":"ethnet","action":""}`}
	if !reflect.DeepEqual(calls, want) {
		t.Errorf("calls\n got %q\nwant %q", calls, want)
	}
}

// The families' status survives the trip over ubus (blobmsg tables within the uplink's table)
// and reads back as it was sent.
func TestStatusFamiliesRoundTrip(t *testing.T) {
	st := daemon.Status{Version: "1", NetworkType: 2, InUse: "modemnet", InUseDevice: "wwan0", InUseIPv6: "modemnet",
		Uplinks: []daemon.UplinkStatus{{Network: "modemnet", Device: "wwan0", Type: "cellular", State: "ITFUP_SS", StateNum: 4,
			Address: "2001:db8:3::2/64", Gateway: "fe80::3", InUse: true, LastProbe: "success", RTTms: 38.5,
			IPv4: &daemon.FamilyStatus{Device: "wwan0", State: "ITFDOWN_SX", StateNum: 1, LastProbe: "none"},
			IPv6: &daemon.FamilyStatus{Device: "wwan0", State: "ITFUP_SS", StateNum: 4, Address: "2001:db8:3::2/64", Gateway: "fe80::3",
				InUse: true, LastProbe: "success", RTTms: 38.5, SinceSeconds: 12, Probes: 3, ProbeFails: 1}}}}
	tab, err := ubus.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	got, err := statusFromTable(tab)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Fatalf("read back %+v\nsent %+v", got, st)
	}
	j, err := ubus.FormatJSON(tab, false)
	if err != nil || !strings.Contains(string(j), `"in_use_ipv6":"modemnet"`) ||
		!strings.Contains(string(j), `"ipv6":{"device":"wwan0","state":"ITFUP_SS","state_num":4,"address":"2001:db8:3::2/64","gateway":"fe80::3","in_use":true`) {
		t.Fatalf("JSON %s, %v", j, err)
	}
}
