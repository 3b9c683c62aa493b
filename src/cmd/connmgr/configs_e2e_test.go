package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// mainBounds are values of section main at the edges of what the loader accepts (see
// config.mainRows), and the choices of the enumerations.
var mainBounds = map[string][]string{
	"firewall":                {"0", "1"},
	"firewall_backend":        {"auto", "nftables", "iptables"},
	"probe":                   {"echo", "icmp", "http"},
	"probe_timeout":           {"50ms", "1m"},
	"probe_interval":          {"100ms", "24h"},
	"probe_interval_standby":  {"100ms", "24h"},
	"probe_interval_failing":  {"100ms", "24h"},
	"cellular_probe_interval": {"1s", "24h"},
	"fail_count":              {"1", "100"},
	"recover_count":           {"1", "100"},
	"dns_hold":                {"0", "1"},
	"dns_grace":               {"0s", "1h"},
	"dns_min_ttl":             {"0s", "24h"},
	"set_maxelem":             {"1024", "16777216"},
	"queue_num":               {"0", "65535"},
	"keep_route":              {"0", "1"},
	"log_level":               {"debug", "error"},
	"echo_port":               {"1", "65535"},
}

// genConfig writes a random valid configuration: uplink sections present or absent, disabled,
// renamed (a network named other than ethnet/stanet/modemnet, with its type), on devices that
// do not exist; network sections present or missing; main's options at their bounds. It
// returns the files and a one-line description for the test log.
func genConfig(rng *rand.Rand) map[string]string {
	pick := func(l []string) string { return l[rng.IntN(len(l))] }
	var main strings.Builder
	main.WriteString("config connmgr 'main'\n\toption echo_host '198.19.0.1'\n")
	keys := make([]string, 0, len(mainBounds))
	for k := range mainBounds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if rng.IntN(2) == 0 {
			continue
		}
		v := pick(mainBounds[k])
		fmt.Fprintf(&main, "\toption %s '%s'\n", k, v)
		if k == "probe" && v == "http" {
			main.WriteString("\toption probe_url 'http://198.19.0.1/generate_204'\n")
		}
	}
	type up struct{ name, typ, dev string }
	ups := []up{{"ethnet", "ethernet", "eth0"}, {"stanet", "wifi", "wlan0"}, {"modemnet", "cellular", "wwan0"},
		{"wan", "ethernet", "eth0"}, {"uplink4", "wifi", "wlan0"}}
	var cm, nw strings.Builder
	cm.WriteString(main.String())
	if rng.IntN(4) != 0 { // else: no uplink sections, the built-in three
		for _, u := range ups {
			if rng.IntN(2) == 0 {
				continue
			}
			fmt.Fprintf(&cm, "\nconfig uplink '%s'\n", u.name)
			if u.name != "ethnet" && u.name != "stanet" && u.name != "modemnet" || rng.IntN(3) == 0 {
				fmt.Fprintf(&cm, "\toption type '%s'\n", u.typ)
			}
			if rng.IntN(3) == 0 {
				cm.WriteString("\toption enabled '0'\n")
			}
			switch rng.IntN(4) {
			case 0:
				fmt.Fprintf(&cm, "\toption device '%s'\n", u.dev)
			case 1: // a device the hub does not have
				fmt.Fprintf(&cm, "\toption device '%s9'\n", u.dev[:len(u.dev)-1])
			}
			if rng.IntN(3) == 0 {
				fmt.Fprintf(&cm, "\toption priority '%d'\n", 1+rng.IntN(99))
			}
			if rng.IntN(4) == 0 {
				fmt.Fprintf(&cm, "\toption probe_interval '%s'\n", pick([]string{"100ms", "24h"}))
			}
		}
	}
	for _, u := range ups[:3] {
		if rng.IntN(3) != 0 {
			fmt.Fprintf(&nw, "config interface '%s'\n\toption device '%s'\n\toption proto 'dhcp'\n\n", u.name, u.dev)
		}
	}
	files := map[string]string{"connmgr": cm.String(), "whitelist": "198.19.0.1\n*.afero.io\n"}
	if rng.IntN(5) != 0 {
		files["network"] = nw.String()
	}
	return files
}

// validConfig draws configurations until the loader accepts one (a draw may give two enabled
// uplinks one device or one type, which the loader rightly refuses).
func validConfig(t *testing.T, rng *rand.Rand, dir string) map[string]string {
	t.Helper()
	for range 200 {
		files := genConfig(rng)
		writeInto(t, dir, files)
		if _, err := config.Load(dir); err == nil {
			return files
		}
	}
	t.Fatal("the generator made no valid configuration in 200 draws")
	return nil
}

// writeInto replaces the configuration files of dir with files.
func writeInto(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for _, name := range []string{"connmgr", "network", "whitelist"} {
		os.Remove(filepath.Join(dir, name))
		if content, ok := files[name]; ok {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// statusOf asks the daemon for its status over ubus, retrying until it answers or the time
// is up.
func statusOf(ctx context.Context, sock string, p *testbed.Process) (ubus.Table, error) {
	var last error
	for ctx.Err() == nil {
		select {
		case <-p.Done():
			return nil, fmt.Errorf("connmgr exited (last: %v)", last)
		default:
		}
		conn, err := ubus.Dial(ctx, sock)
		if err == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			st, err2 := conn.Call(cctx, "connmgr", "status", nil)
			cancel()
			conn.Close()
			if err2 == nil {
				return st, nil
			}
			err = err2
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return nil, fmt.Errorf("no status: %v (%w)", last, ctx.Err())
}

func reloadsOf(st ubus.Table) int64 {
	c, _ := st.Table("counters")
	n, _ := c.Int("reloads")
	return n
}

// TestGeneratedConfigurations starts the real daemon on generated valid configurations and
// requires each run to start, answer on ubus, reload (SIGHUP, onto another generated
// configuration), stop on SIGTERM with exit 0 and no panic, and leave no firewall table and
// no routes of its own behind (except the default route with keep_route '1'). The first is
// the configuration that crashed connmgr at every start: an uplink with option enabled '0'.
// AFCONN_CONFIG_SEED picks another sequence; AFCONN_CONFIG_RUNS the number of runs.
func TestGeneratedConfigurations(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	bin := testbed.Connmgr(t)
	seed, runs := uint64(1), 12
	if s := os.Getenv("AFCONN_CONFIG_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	if s := os.Getenv("AFCONN_CONFIG_RUNS"); s != "" {
		runs, _ = strconv.Atoi(s)
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	sock := filepath.Join(dir, "ubus.sock")
	srv, err := ubustest.NewServer(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	for i := range runs {
		var files map[string]string
		if i == 0 {
			files = map[string]string{
				"network":   testNetwork,
				"connmgr":   "config connmgr 'main'\n\toption echo_host '198.19.0.1'\n\nconfig uplink 'ethnet'\n\nconfig uplink 'stanet'\n\toption enabled '0'\n",
				"whitelist": "198.19.0.1\n",
			}
			writeInto(t, dir, files)
		} else {
			files = validConfig(t, rng, dir)
		}
		next := validConfig(t, rng, filepath.Join(t.TempDir()))
		writeInto(t, dir, files)
		desc := fmt.Sprintf("run %d (seed %d)\n--- connmgr:\n%s--- network:\n%s--- reloaded onto connmgr:\n%s--- network:\n%s",
			i, seed, files["connmgr"], files["network"], next["connmgr"], next["network"])

		p, err := w.Device.Start(nil, bin, "-c", dir, "-w", filepath.Join(dir, "whitelist"), "-s", sock)
		if err != nil {
			t.Fatal(err)
		}
		fail := func(format string, args ...any) {
			t.Helper()
			p.Stop(5 * time.Second)
			t.Fatalf("%s: %s\nlog:\n%s", desc, fmt.Sprintf(format, args...), p.Log())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := statusOf(ctx, sock, p); err != nil {
			cancel()
			fail("not running: %v", err)
		}
		time.Sleep(300 * time.Millisecond) // let netlink, probes and the firewall act
		writeInto(t, dir, next)
		p.Signal(syscall.SIGHUP)
		for {
			st, err := statusOf(ctx, sock, p)
			if err != nil {
				cancel()
				fail("no status after SIGHUP: %v", err)
			}
			if reloadsOf(st) == 1 {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		time.Sleep(300 * time.Millisecond)
		if err := p.Stop(15 * time.Second); err != nil {
			t.Fatalf("%s: exit on SIGTERM: %v\nlog:\n%s", desc, err, p.Log())
		}
		if log := p.Log(); strings.Contains(log, "panic") || strings.Contains(log, "goroutine ") {
			t.Fatalf("%s: panic in the log:\n%s", desc, log)
		}
		if out, err := w.Device.Run("nft", "list", "table", "inet", "afconn"); err == nil {
			t.Fatalf("%s: nftables table left after SIGTERM:\n%s", desc, out)
		}
		if out, _ := w.Device.Run("iptables", "-S"); strings.Contains(out, "AFERO") {
			t.Fatalf("%s: iptables chains left after SIGTERM:\n%s", desc, out)
		}
		left, _ := w.Device.Run("ip", "route", "show", "table", "all", "proto", "175")
		left = strings.TrimSpace(left)
		keep := strings.Contains(next["connmgr"], "keep_route '1'")
		if left != "" && !(keep && !strings.Contains(left, "table")) {
			t.Fatalf("%s: routes left after SIGTERM:\n%s", desc, left)
		}
		if left != "" { // keep_route: the next run starts from netifd's routes alone
			w.Device.Run("ip", "route", "del", "default", "proto", "175")
		}
	}
}
