package failover_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// TestMwan3trackBenchmark measures stock mwan3track in a testbed world, for the comparison rows
// of BENCHMARKS.md (issue 13): silent death detected (black hole at a random phase -> its
// "disconnected" hotplug event), back after recovery (black hole lifted -> "connected") and all
// bytes on the tracked uplink per hour while idle. It runs the stock OpenWrt user space (busybox
// ash, ubusd, netifd, uci, jshn, mwan3track and its sockopt wrapper) from the root file system
// AFCONN_STOCK_MWAN3 names, built by hand from the stock sources and never committed
// (BENCHMARKS.md says what it holds), and AFCONN_BENCH_FAILOVER runs per profile. Nothing of
// connmgr runs here: the connmgr rows come from TestFailoverBenchmark on the same world.
func TestMwan3trackBenchmark(t *testing.T) {
	root := os.Getenv("AFCONN_STOCK_MWAN3")
	if root == "" {
		t.Skip("set AFCONN_STOCK_MWAN3 to a root file system with stock netifd, ubusd and mwan3track (BENCHMARKS.md)")
	}
	for _, f := range []string{"sbin/netifd", "sbin/ubusd", "usr/sbin/mwan3track", "lib/mwan3/libwrap_mwan3_sockopt.so.1.0", "lib/functions/network.sh"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("AFCONN_STOCK_MWAN3=%s: %v", root, err)
		}
	}
	runs, _ := benchRuns(t)
	window := envDuration(t, "AFCONN_BENCH_BYTES_WINDOW", 2*time.Minute)
	profiles := []struct {
		name     string
		interval time.Duration
		options  string
	}{
		// mwan3track's own defaults (interval 10, timeout 4, down 5, up 5, count 1), one track_ip.
		{"shipped defaults (ping every 10 s, timeout 4, down 5, up 5)", 10 * time.Second, ""},
		{"tuned fast (ping every 1 s, timeout 1, down 3, up 3)", time.Second,
			"\toption interval '1'\n\toption timeout '1'\n\toption down '3'\n\toption up '3'\n"},
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nmwan3track benchmark: stock mwan3track (%s) on netifd, %d runs per profile, bytes over %v\n", root, runs, window)
	fmt.Fprintf(&b, "%-60s %14s %14s %14s %12s\n", "profile", "detect median", "detect p95", "back median", "bytes/hour")
	for _, p := range profiles {
		m := startMwan3track(t, root, p.options)
		// Idle bytes first, the uplink healthy: the tracker's pings and ARP, both ways, once
		// the link's start-up (IPv6 autoconfiguration, netifd's first ARP) is over.
		time.Sleep(15 * time.Second)
		before := linkBytes(t, m.w, "eth0")
		time.Sleep(window)
		perHour := float64(linkBytes(t, m.w, "eth0")-before) * float64(time.Hour) / float64(window)
		var detect, back []float64
		for i := range runs {
			// A random phase of the tracker's rhythm.
			time.Sleep(time.Duration(rand.Int64N(int64(p.interval))))
			start := time.Now()
			if err := m.w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
				t.Fatal(err)
			}
			at := m.waitEvent("disconnected wan", 5*time.Minute)
			detect = append(detect, ms(at.Sub(start)))
			start = time.Now()
			if err := m.w.SetFault("eth0", testbed.Fault{}); err != nil {
				t.Fatal(err)
			}
			at = m.waitEvent("connected wan", 5*time.Minute)
			back = append(back, ms(at.Sub(start)))
			t.Logf("%s run %d: detected %.0f ms, back %.0f ms", p.name, i, detect[i], back[i])
		}
		fmt.Fprintf(&b, "%-60s %12.1fs %12.1fs %12.1fs %10.1fKB\n", p.name,
			pct(detect, 50)/1000, pct(detect, 95)/1000, pct(back, 50)/1000, perHour/1000)
		m.stop()
	}
	fmt.Println(b.String())
	t.Log(b.String())
}

// mwan3Rig is stock netifd and mwan3track tracking eth0 of a one-uplink world.
type mwan3Rig struct {
	t      *testing.T
	w      *testbed.World
	cmd    *exec.Cmd
	events string
	seen   int // events lines consumed by waitEvent
}

// startMwan3track starts the stock user space in a fresh world's device namespace: netifd
// configures eth0 (proto static, the world's address and gateway) and mwan3track tracks the
// cloud's echo host through it with the interface options given.
func startMwan3track(t *testing.T, root, options string) *mwan3Rig {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}, NoAddresses: true})
	u := w.MustUplink("eth0")
	bench := t.TempDir()
	files := map[string]string{
		"config/network": fmt.Sprintf(`config interface 'loopback'
	option device 'lo'
	option proto 'static'
	option ipaddr '127.0.0.1'
	option netmask '255.0.0.0'

config interface 'wan'
	option device 'eth0'
	option proto 'static'
	option ipaddr '%s'
	option netmask '255.255.255.0'
	option gateway '%s'
`, u.Addr, u.Gateway),
		"config/mwan3": fmt.Sprintf(`config globals 'globals'
	option mmx_mask '0x3F00'

config interface 'wan'
	option enabled '1'
	list track_ip '%s'
	option family 'ipv4'
	option reliability '1'
%s`, testbed.EchoAddr, options),
	}
	for name, body := range files {
		if err := os.MkdirAll(filepath.Join(bench, filepath.Dir(name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bench, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.CopyFS(filepath.Join(bench, "hotplug.d"), os.DirFS("testdata/mwan3/hotplug.d")); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("testdata/mwan3/run.sh")
	if err != nil {
		t.Fatal(err)
	}
	cmd := w.Device.Command("unshare", "-m", "--propagation", "private", "sh", script, root, bench)
	log, err := os.Create(filepath.Join(bench, "run.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group: the stop kills every daemon of the user space at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m := &mwan3Rig{t: t, w: w, cmd: cmd, events: filepath.Join(bench, "events")}
	t.Cleanup(m.stop)
	// netifd's ifup, then mwan3track's first "connected" once its first ping came back.
	m.waitEvent("connected wan", time.Minute)
	return m
}

// waitEvent waits for the next hotplug event line starting with prefix and returns when it
// was seen (polled every 10 ms: the figures are seconds).
func (m *mwan3Rig) waitEvent(prefix string, timeout time.Duration) time.Time {
	m.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if lines := m.lines(); len(lines) > m.seen {
			for i := m.seen; i < len(lines); i++ {
				if strings.HasPrefix(lines[i], prefix+" ") {
					m.seen = i + 1
					return time.Now()
				}
			}
			m.seen = len(lines)
		}
		time.Sleep(10 * time.Millisecond)
	}
	log, _ := os.ReadFile(filepath.Join(filepath.Dir(m.events), "run.log"))
	msgs, _ := os.ReadFile(filepath.Join(filepath.Dir(m.events), "messages"))
	m.t.Fatalf("no %q event in %v; events: %q\nrun.log:\n%s\nsyslog:\n%s", prefix, timeout, m.lines(), log, msgs)
	return time.Time{}
}

func (m *mwan3Rig) lines() []string {
	f, err := os.Open(m.events)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	for sc := bufio.NewScanner(f); sc.Scan(); {
		out = append(out, sc.Text())
	}
	return out
}

// stop kills the user space's process group; its private mounts go with it.
func (m *mwan3Rig) stop() {
	if m.cmd.Process == nil || m.cmd.ProcessState != nil {
		return
	}
	syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
	m.cmd.Wait()
}
