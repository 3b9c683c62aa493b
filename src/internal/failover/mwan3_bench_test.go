package failover_test

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"golang.org/x/sys/unix"
)

// TestMwan3trackBenchmark measures stock mwan3track in a testbed world, for the comparison rows
// of BENCHMARKS.md (issue 13): silent death detected (black hole at a random phase -> its
// "disconnected" hotplug event), back after recovery (black hole lifted -> "connected") and all
// bytes on the tracked uplink per hour while idle. It runs the stock OpenWrt user space (busybox
// ash, ubusd, netifd with wan by DHCP through OpenWrt's dhcp.sh and udhcpc, uci, jshn,
// mwan3track and its sockopt wrapper) from the root file system
// AFCONN_STOCK_MWAN3 names, built by hand from the stock sources and never committed
// (BENCHMARKS.md says what it holds), and AFCONN_BENCH_FAILOVER runs per profile. Nothing of
// connmgr runs here: the connmgr rows come from TestFailoverBenchmark on the same world.
func TestMwan3trackBenchmark(t *testing.T) {
	root := stockRoot(t)
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
		m := startMwan3track(t, root, p.options, openwrtLease)
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

// stockRoot is the root file system AFCONN_STOCK_MWAN3 names, once it holds what the bench runs
// (netifd's DHCP support included); the test is skipped without it.
func stockRoot(t *testing.T) string {
	root := os.Getenv("AFCONN_STOCK_MWAN3")
	if root == "" {
		t.Skip("set AFCONN_STOCK_MWAN3 to a root file system with stock netifd, ubusd and mwan3track (BENCHMARKS.md)")
	}
	for _, f := range []string{"sbin/netifd", "sbin/ubusd", "usr/sbin/mwan3track", "lib/mwan3/libwrap_mwan3_sockopt.so.1.0",
		"lib/functions/network.sh", "lib/netifd/proto/dhcp.sh", "lib/netifd/dhcp.script", "lib/netifd/netifd-proto.sh", "sbin/udhcpc"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("AFCONN_STOCK_MWAN3=%s: %v (BENCHMARKS.md says what it holds)", root, err)
		}
	}
	return root
}

// mwan3Rig is stock netifd and mwan3track tracking eth0 of a one-uplink world.
type mwan3Rig struct {
	t      *testing.T
	w      *testbed.World
	cmd    *exec.Cmd
	events string
	seen   int // events lines consumed by waitEvent
}

// openwrtLease is the lease OpenWrt's DHCP server gives by default (/etc/config/dhcp's
// leasetime 12h); its client renews at half of it.
const openwrtLease = 12 * time.Hour

// startMwan3track starts the stock user space in a fresh world's device namespace: netifd
// configures eth0 with proto dhcp (OpenWrt's dhcp.sh and udhcpc) from a DHCP server on the
// uplink's router giving the world's address, gateway and DNS for lease, and mwan3track tracks
// the cloud's echo host through it with the interface options given.
func startMwan3track(t *testing.T, root, options string, lease time.Duration) *mwan3Rig {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}, NoAddresses: true})
	u := w.MustUplink("eth0")
	bench := t.TempDir()
	startDHCPServer(t, u, bench, lease)
	files := map[string]string{
		"config/network": fmt.Sprintf(`config interface 'loopback'
	option device 'lo'
	option proto 'static'
	option ipaddr '127.0.0.1'
	option netmask '255.0.0.0'

config interface 'wan'
	option device 'eth0'
	option proto 'dhcp'
`),
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
	// netifd's ifup once udhcpc has its lease, then mwan3track's first "connected" once its
	// first ping came back.
	m.waitEvent("connected wan", time.Minute)
	// What the lease configured is what the world's static addresses would have been: the
	// black hole, the echo host's route and the counted link are the same as before.
	addr, err := w.Device.Run("ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	route, err := w.Device.Run("ip", "-4", "route", "show", "default")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(addr, " "+u.Addr.String()+"/24 ") || !strings.Contains(route, "default via "+u.Gateway.String()+" dev eth0") {
		t.Fatalf("netifd's DHCP lease did not configure eth0 as %s/24 via %s:\n%s%s", u.Addr, u.Gateway, addr, route)
	}
	// And it was udhcpc's lease from the router's server that did (netifd logs its output).
	want := fmt.Sprintf("lease of %s obtained from %s, lease time %d", u.Addr, u.Gateway, int(lease.Seconds()))
	if msgs, _ := os.ReadFile(filepath.Join(bench, "messages")); !strings.Contains(string(msgs), want) {
		t.Fatalf("no %q in the syslog:\n%s", want, msgs)
	}
	return m
}

// TestMwan3DHCPRenewalBytes counts what one lease renewal of the mwan3track world's DHCP client
// (OpenWrt's dhcp.sh running udhcpc under netifd) costs on the uplink, every frame of it both
// ways, for the bytes per hour BENCHMARKS.md gives next to mwan3track's: a 60 s lease renews at
// 30 s, the same exchange OpenWrt's 12 h lease makes every 6 hours.
func TestMwan3DHCPRenewalBytes(t *testing.T) {
	root := stockRoot(t)
	const lease = time.Minute
	m := startMwan3track(t, root, "", lease)
	frames, bytes := countDHCPExchange(t, m.w, "eth0", lease)
	if frames < 2 {
		t.Fatalf("%d DHCP frames (%d bytes) on eth0 in %v: no renewal seen", frames, bytes, lease)
	}
	renewEvery := openwrtLease / 2
	out := fmt.Sprintf("\nDHCP renewal (udhcpc under netifd, busybox udhcpd): %d frames, %d bytes both ways; every %v (OpenWrt's %v lease): %.2f KB/h\n",
		frames, bytes, renewEvery, openwrtLease, float64(bytes)*float64(time.Hour)/float64(renewEvery)/1000)
	fmt.Println(out)
	t.Log(out)
}

// countDHCPExchange counts the DHCP frames (IPv4 UDP from or to port 67 or 68) on dev in w's
// device namespace, both ways, whole Ethernet frames as the link counters count them, up to
// and including the server's first answer to the client (one exchange), for at most d.
func countDHCPExchange(t *testing.T, w *testbed.World, dev string, d time.Duration) (frames, bytes int) {
	t.Helper()
	var fd int
	if err := w.Device.Do(func() error {
		ifi, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		proto := int(uint16(unix.ETH_P_ALL)<<8 | uint16(unix.ETH_P_ALL)>>8)
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifi.Index})
	}); err != nil {
		t.Fatalf("packet socket on %s: %v", dev, err)
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for end := time.Now().Add(d); time.Now().Before(end); {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			continue // the timeout: look at the clock again
		}
		f := buf[:n]
		if n < 14+20+8 || f[12] != 0x08 || f[13] != 0x00 || f[14+9] != 17 {
			continue
		}
		udp := f[14+int(f[14]&0x0f)*4:]
		if len(udp) < 8 {
			continue
		}
		sport, dport := int(udp[0])<<8|int(udp[1]), int(udp[2])<<8|int(udp[3])
		if sport == 67 || sport == 68 || dport == 67 || dport == 68 {
			frames++
			bytes += n
			t.Logf("DHCP frame: %d bytes, %d -> %d", n, sport, dport)
			if sport == 67 && frames > 1 {
				break
			}
		}
	}
	return frames, bytes
}

// startDHCPServer runs busybox udhcpd on uplink u's router, giving the device the world's
// address, the router as gateway and the cloud's DNS server for lease (udhcpd's own minimum is
// 60 s).
func startDHCPServer(t *testing.T, u *testbed.Uplink, dir string, lease time.Duration) {
	conf := filepath.Join(dir, "udhcpd.conf")
	body := fmt.Sprintf(`interface todev
start %[1]s
end %[1]s
max_leases 1
min_lease 60
lease_file %[2]s/udhcpd.leases
pidfile %[2]s/udhcpd.pid
option subnet 255.255.255.0
option router %[3]s
option dns %[4]s
option lease %[5]d
`, u.Addr, dir, u.Gateway, testbed.DNSAddr, int(lease.Seconds()))
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := u.Router.Start(nil, "busybox", "udhcpd", "-f", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("udhcpd:\n%s", p.Log())
		}
	})
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
