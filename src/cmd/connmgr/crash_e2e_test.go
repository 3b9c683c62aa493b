package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// lockdownSampler checks the device's lock-down over and over and counts the samples in which
// it was not whole.
type lockdownSampler struct {
	samples int
	gaps    []string
	stop    chan struct{}
	done    chan struct{}
}

// nftLockdown reads the nftables table over netlink: whole when the table is there, the
// static whitelist not empty, and each base chain (input, output, forward) has its rules.
func nftLockdown(t *testing.T, w *testbed.World) func() string {
	ns := w.Device.Handle(t)
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: "afconn"}
	static := &nftables.Set{Table: table, Name: "static4", KeyType: nftables.TypeIPAddr, Interval: true}
	return func() string {
		elems, err := conn.GetSetElements(static)
		if err != nil {
			return "static4: " + err.Error()
		}
		if len(elems) == 0 {
			return "static4 empty"
		}
		for _, c := range []string{"input", "output", "forward"} {
			rules, err := conn.GetRules(table, &nftables.Chain{Table: table, Name: c})
			if err != nil {
				return c + ": " + err.Error()
			}
			if len(rules) == 0 {
				return c + ": no rules"
			}
		}
		return ""
	}
}

// iptLockdown reads the iptables rules and the static ip set: whole when INPUT, OUTPUT and
// FORWARD jump to connmgr's chains, those chains have rules, and the whitelist is in its set.
func iptLockdown(w *testbed.World) func() string {
	return func() string {
		rules, err := w.Device.Run("iptables", "-S")
		if err != nil {
			return err.Error()
		}
		for _, want := range []string{"-A INPUT ", "-A OUTPUT ", "-A FORWARD ", "-A AFERO_ALLOW_WHITELIST_INPUT ", "-A AFERO_ALLOW_WHITELIST_OUTPUT "} {
			if !strings.Contains(rules, want) {
				return "no " + strings.TrimSpace(want)
			}
		}
		set, err := w.Device.Run("ipset", "list", "afconn_static4")
		if err != nil || !strings.Contains(set, "198.19.0.1") {
			return "static whitelist: " + strings.TrimSpace(set) + fmt.Sprint(err)
		}
		return ""
	}
}

func sampleLockdown(check func() string) *lockdownSampler {
	s := &lockdownSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			s.samples++
			if gap := check(); gap != "" {
				s.gaps = append(s.gaps, time.Now().Format("15:04:05.000000")+": "+gap)
			}
			time.Sleep(time.Millisecond)
		}
	}()
	return s
}

// finish stops sampling and returns the count of samples and the gaps seen.
func (s *lockdownSampler) finish() (samples int, gaps []string) {
	close(s.stop)
	<-s.done
	return s.samples, s.gaps
}

// TestCrashFailsClosed: SIGKILL and a panic (a test build's hook: SIGUSR2) leave the firewall
// lock-down and the pinholes in the kernel, and the next instance (procd's respawn) adopts
// them without a moment in which the hub is unfiltered. SIGTERM still removes everything.
func TestCrashFailsClosed(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { crashFailsClosed(t, backend) })
	}
}

func crashFailsClosed(t *testing.T, backend string) {
	w := testbed.New(t, testbed.Options{})
	bin := testbed.ConnmgrWithTestHooks(t)
	dir := writeFiles(t, map[string]string{
		"network":   testNetwork,
		"connmgr":   "config connmgr 'main'\n\toption firewall_backend '" + backend + "'\n\toption echo_host '198.19.0.1'\n",
		"whitelist": "198.19.0.1\n*.afero.io\n",
	})
	sock := filepath.Join(dir, "ubus.sock")
	srv, err := ubustest.NewServer(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	inForce := regexp.MustCompile(`msg="firewall lock-down in force" backend=` + backend)
	start := func() *testbed.Process {
		t.Helper()
		p, err := w.Device.Start(nil, bin, "-c", dir, "-w", filepath.Join(dir, "whitelist"), "-s", sock)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Stop(10 * time.Second) })
		if _, err := p.WaitLog(inForce, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const pinhole = "198.19.7.7"
	hasPinhole := func() bool {
		out, _ := w.Device.Run("nft", "list", "set", "inet", "afconn", "allow4")
		if backend == "iptables" {
			out, _ = w.Device.Run("ipset", "list", "afconn_allow4")
		}
		return strings.Contains(out, pinhole)
	}

	p := start()
	// In the device namespace: with no daemon answering, fw add would change the kernel's
	// sets itself.
	out, err := w.Device.Run(bin, "fw", "-s", sock, "add", pinhole, "crash-test")
	if err != nil {
		t.Fatalf("connmgr fw add: %v: %s", err, out)
	}
	if !hasPinhole() {
		t.Fatal("pinhole not in the kernel")
	}
	check := iptLockdown(w)
	if backend == "nftables" {
		check = nftLockdown(t, w)
	}
	if gap := check(); gap != "" {
		t.Fatalf("the check finds the lock-down not whole while connmgr runs: %s", gap)
	}
	s := sampleLockdown(check)
	time.Sleep(100 * time.Millisecond)

	// SIGKILL: nothing runs; the next instance starts over what is there.
	p.Signal(syscall.SIGKILL)
	p.Wait(10 * time.Second)
	time.Sleep(300 * time.Millisecond) // procd waits 5 s; the gap, if any, would show now
	if !hasPinhole() {
		t.Errorf("pinhole gone after SIGKILL")
	}
	p = start()
	time.Sleep(300 * time.Millisecond)
	if !hasPinhole() {
		t.Errorf("pinhole gone after the next instance's set-up (SIGKILL)")
	}

	// A panic on the event loop: the deferred clean-up must not remove the lock-down.
	p.Signal(syscall.SIGUSR2)
	if err := p.Wait(10 * time.Second); err == nil {
		t.Fatalf("a panicking connmgr exited 0\n%s", p.Log())
	}
	if !strings.Contains(p.Log(), "panic: connmgr test hook") {
		t.Fatalf("no panic in the log:\n%s", p.Log())
	}
	time.Sleep(300 * time.Millisecond)
	if !hasPinhole() {
		t.Errorf("pinhole gone after a panic")
	}
	p = start()
	time.Sleep(300 * time.Millisecond)
	if !hasPinhole() {
		t.Errorf("pinhole gone after the next instance's set-up (panic)")
	}
	n, gaps := s.finish()
	t.Logf("%d samples of the lock-down across SIGKILL, panic and two restarts", n)
	if len(gaps) > 0 {
		t.Fatalf("lock-down not whole in %d of %d samples; first: %s\nlog:\n%s", len(gaps), n, gaps[0], p.Log())
	}

	// SIGTERM (and /etc/init.d/connmgr stop, which sends it) removes everything.
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatalf("exit on SIGTERM: %v\n%s", err, p.Log())
	}
	if gap := check(); gap == "" {
		t.Fatal("lock-down left after SIGTERM")
	}
}

// TestNoTestHooksInProduction: the binary make builds (and the package ships) has no panic
// hook: its text is only in the test build.
func TestNoTestHooksInProduction(t *testing.T) {
	const hook = "connmgr test hook: panic on the event loop"
	for _, c := range []struct {
		bin  string
		want bool
	}{{testbed.Connmgr(t), false}, {testbed.ConnmgrWithTestHooks(t), true}} {
		b, err := os.ReadFile(c.bin)
		if err != nil {
			t.Fatal(err)
		}
		if got := bytes.Contains(b, []byte(hook)); got != c.want {
			t.Errorf("%s: test hook present %v, want %v", c.bin, got, c.want)
		}
	}
}
