package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

func TestFWUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fw"}, "missing action"},
		{[]string{"fw", "flush"}, `unknown action "flush"`},
		{[]string{"fw", "add", "198.18.0.1"}, "wants IP COMMENT [check_fw]"},
		{[]string{"fw", "add", "198.18.0.1", "c", "check"}, "wants IP COMMENT [check_fw]"},
		{[]string{"fw", "add", "198.18.0.1", "c", "check_fw", "x"}, "wants IP COMMENT [check_fw]"},
		{[]string{"fw", "del", "cloud.afero.io", "c"}, `"cloud.afero.io" is not an IP address`},
		{[]string{"fw", "add", "fe80::1%eth0", "c"}, "is not an IP address"},
		{[]string{"fw", "restore", "now"}, "restore takes no arguments"},
		{[]string{"fw", "-x", "restore"}, "flag provided but not defined: -x"},
	} {
		code, _, stderr := runCLI(tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "usage: connmgr fw") {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
}

// fakeDaemon publishes a connmgr object on a test ubusd and writes down the calls.
type fakeDaemon struct {
	mu    sync.Mutex
	calls []string
	fail  error
}

func startFakeDaemon(t *testing.T) (string, *fakeDaemon) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	srv, err := ubustest.NewServer(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fd := &fakeDaemon{}
	handler := func(ctx context.Context, r *ubus.Request) (ubus.Table, error) {
		fd.mu.Lock()
		defer fd.mu.Unlock()
		var parts []string
		for _, f := range r.Args {
			parts = append(parts, fmt.Sprintf("%s=%v", f.Name, f.Value))
		}
		fd.calls = append(fd.calls, r.Method+" "+strings.Join(parts, " "))
		return nil, fd.fail
	}
	obj := &ubus.Object{Name: "connmgr", Methods: []ubus.Method{
		{Name: "allow", Handler: handler}, {Name: "disallow", Handler: handler}, {Name: "firewall_restore", Handler: handler},
	}}
	if _, err := conn.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	return sock, fd
}

func TestFWThroughDaemon(t *testing.T) {
	sock, fd := startFakeDaemon(t)
	fwOpen = func(string) (firewall.Backend, error) {
		t.Fatal("the kernel was touched although a daemon answered")
		return nil, nil
	}
	defer func() { fwOpen = firewall.Open }()
	for _, args := range [][]string{
		{"add", "198.18.0.5", "cloud.afero.io", "check_fw"},
		{"add_forwarding", "::ffff:198.18.0.6", "lan"},
		{"del", "2001:db8::7", "x"},
		{"del_forwarding", "198.18.0.6", "x"},
		{"restart"}, {"init"}, {"restore"},
	} {
		if code, _, stderr := runCLI(append([]string{"fw", "-s", sock}, args...)...); code != 0 {
			t.Errorf("fw %q: exit %d: %s", args, code, stderr)
		}
	}
	want := []string{
		"allow address=198.18.0.5 comment=cloud.afero.io forward=0",
		"allow address=198.18.0.6 comment=lan forward=1",
		"disallow address=2001:db8::7 forward=0",
		"disallow address=198.18.0.6 forward=1",
		"firewall_restore ", "firewall_restore ", "firewall_restore ",
	}
	fd.mu.Lock()
	got := fd.calls
	fd.fail = fmt.Errorf("refused: %w", ubus.StatusPermissionDenied)
	fd.mu.Unlock()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The daemon's refusal is a failure, not a reason to go around it.
	code, _, stderr := runCLI("fw", "-s", sock, "add", "198.18.0.5", "x")
	if code != exitFailure || !strings.Contains(stderr, "Permission denied") {
		t.Errorf("refused allow: exit %d, stderr %q", code, stderr)
	}
}

// Without a daemon, fw works on the kernel directly (here: in a namespace).
func TestFWWithoutDaemon(t *testing.T) {
	fwtest.NeedRoot(t)
	for _, kind := range []string{"nftables", "iptables"} {
		t.Run(kind, func(t *testing.T) {
			ns := fwtest.NewNS(t, "afc-fwc")
			fwOpen = func(string) (firewall.Backend, error) { return fwtest.OpenBackend(t, ns, kind), nil }
			defer func() { fwOpen = firewall.Open }()
			check := fwtest.NewBackend(t, ns, kind) // reads counts; tears down at the end
			dir := writeFiles(t, map[string]string{
				"network":   testNetwork,
				"connmgr":   "config connmgr 'main'\n",
				"whitelist": "198.18.7.0/24\n*.afero.io\n",
			})
			fw := func(args ...string) (int, string) {
				code, _, stderr := runCLI(append([]string{"fw", "-s", filepath.Join(dir, "no.sock"), "-c", dir, "-w", filepath.Join(dir, "whitelist")}, args...)...)
				return code, stderr
			}
			if code, stderr := fw("add", "198.18.0.5", "x"); code != exitFailure || !strings.Contains(stderr, "not set up") {
				t.Fatalf("add before init: exit %d, %s", code, stderr)
			}
			if code, stderr := fw("del", "198.18.0.5", "x"); code != 0 || !strings.Contains(stderr, "nothing to remove") {
				t.Fatalf("del before init: exit %d, %s", code, stderr)
			}
			if code, stderr := fw("init"); code != 0 || !strings.Contains(stderr, "set up the lock-down directly") {
				t.Fatalf("init: exit %d, %s", code, stderr)
			}
			dump := fwtest.Dump(t, ns)
			for _, s := range []string{"198.18.7.0/24", "wwan0", "AFERO_FORWARD_WHITELIST"} {
				if !strings.Contains(dump, s) {
					t.Errorf("after init, %q is not in the ruleset:\n%s", s, dump)
				}
			}
			if code, stderr := fw("init"); code != 0 || fwtest.Dump(t, ns) != dump {
				t.Fatalf("init again: exit %d, %s; or the ruleset changed", code, stderr)
			}
			if code, stderr := fw("add", "198.18.0.5", "cloud", "check_fw"); code != 0 || !strings.Contains(stderr, "directly") {
				t.Fatalf("add: exit %d, %s", code, stderr)
			}
			if code, stderr := fw("add_forwarding", "198.18.0.6", "lan"); code != 0 {
				t.Fatalf("add_forwarding: exit %d, %s", code, stderr)
			}
			c, err := check.Counts()
			if err != nil || c["allow4"] != 1 || c["fwd4"] != 1 || c["static4"] != 1 {
				t.Fatalf("counts after add: %v %v", c, err)
			}
			if code, stderr := fw("del", "198.18.0.5", "cloud"); code != 0 {
				t.Fatalf("del: exit %d, %s", code, stderr)
			}
			if c, _ := check.Counts(); c["allow4"] != 0 {
				t.Fatalf("counts after del: %v", c)
			}
			if code, stderr := fw("restore"); code != 0 || !strings.Contains(stderr, "nothing to restore") {
				t.Fatalf("restore: exit %d, %s", code, stderr)
			}
		})
	}
}
