package main

import (
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

// lockdownSampler reads the device's nftables table over netlink every millisecond and counts
// the samples in which the lock-down was not whole: the table absent, the static whitelist
// empty, or a base chain (input, output, forward) without its rules.
type lockdownSampler struct {
	samples int
	gaps    []string
	stop    chan struct{}
	done    chan struct{}
}

func sampleLockdown(t *testing.T, w *testbed.World) *lockdownSampler {
	ns := w.Device.Handle(t)
	conn, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: "afconn"}
	static := &nftables.Set{Table: table, Name: "static4", KeyType: nftables.TypeIPAddr, Interval: true}
	s := &lockdownSampler{stop: make(chan struct{}), done: make(chan struct{})}
	check := func() string {
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
	w := testbed.New(t, testbed.Options{})
	bin := testbed.ConnmgrWithTestHooks(t)
	dir := writeFiles(t, map[string]string{
		"network":   testNetwork,
		"connmgr":   "config connmgr 'main'\n\toption firewall_backend 'nftables'\n\toption echo_host '198.19.0.1'\n",
		"whitelist": "198.19.0.1\n*.afero.io\n",
	})
	sock := filepath.Join(dir, "ubus.sock")
	srv, err := ubustest.NewServer(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	inForce := regexp.MustCompile(`msg="firewall lock-down in force" backend=nftables`)
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
	s := sampleLockdown(t, w)
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
	if out, err := w.Device.Run("nft", "list", "table", "inet", "afconn"); err == nil {
		t.Fatalf("table left after SIGTERM:\n%s", out)
	}
}
