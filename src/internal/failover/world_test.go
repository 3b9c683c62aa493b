package failover_test

// Helpers of the end-to-end failover tests and the failover benchmark:
// a testbed world running the real connmgr binary, and a netlink watcher
// that timestamps every change of the device's metric-0 default route.

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// rig is one world with connmgr running in its device namespace.
type rig struct {
	t      testing.TB
	w      *testbed.World
	p      *testbed.Process
	watch  *routeWatch
	watch6 *routeWatch // connmgr's IPv6 default route (dual-stack worlds only)
	sock   string      // the ubus socket connmgr was given (a ubusd runs there with rigOptions.ubus)
	args   []string    // connmgr's command line, for restart
}

// writeConfig writes the UCI files of a three-uplink device probing the
// cloud's echo service, and the whitelist; extra is appended to section main.
func writeConfig(t testing.TB, extra, whitelist string) string {
	dir := t.TempDir()
	if !strings.Contains(extra, "firewall_backend") {
		// What OpenWrt runs (fw4): "auto" would pick iptables on a Debian test machine.
		extra = "\toption firewall_backend 'nftables'\n" + extra
	}
	files := map[string]string{
		"network": `config interface 'ethnet'
	option device 'eth0'
	option proto 'static'

config interface 'stanet'
	option device 'wlan0'
	option proto 'static'

config interface 'modemnet'
	option device 'wwan0'
	option proto 'static'
`,
		"connmgr": `config connmgr 'main'
	option echo_host 'echo.afero.io'
	option echo_port '80'
` + extra,
		"whitelist": whitelist,
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// newRig builds the world, starts connmgr (firewall off: -d; failover
// alone is measured) and waits until Ethernet carries the default route
// and Wi-Fi is proven as its standby.
func newRig(t testing.TB, extra string) *rig {
	return newRigArgs(t, extra, "-d")
}

func newRigArgs(t testing.TB, extra string, args ...string) *rig {
	return newRigWith(t, rigOptions{extra: extra, args: args})
}

// rigOptions shape a rig beyond the defaults of newRig.
type rigOptions struct {
	extra     string           // appended to section main of /etc/config/connmgr
	args      []string         // connmgr's command line before -c, -w, -s
	whitelist string           // the whitelist file; default "*.afero.io"
	records   []testbed.Record // DNS records added to testbed.DefaultRecords
	ubus      bool             // run a ubusd (ubustest) on the socket connmgr is given
	world     testbed.Options  // the world's shape (dual-stack, IPv6-only uplinks)
	// noWait skips waiting for eth0's IPv4 default route and stanet's ITFUP_SS at start.
	noWait bool
	// before, if set, changes the world before connmgr starts.
	before func(*testbed.World)
}

func newRigWith(t testing.TB, o rigOptions) *rig {
	return startRig(t, testbed.New(t, o.world), o)
}

// startRig is newRigWith in a world already made (o.world is not used).
func startRig(t testing.TB, w *testbed.World, o rigOptions) *rig {
	if _, err := w.StartDNS(append(testbed.DefaultRecords(), o.records...)); err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, w: w, watch: watchRoutes(t, w, unix.AF_INET)}
	if w.DualStack() {
		r.watch6 = watchRoutes(t, w, unix.AF_INET6)
	}
	wl := o.whitelist
	if wl == "" {
		wl = "*.afero.io\n"
	}
	dir := writeConfig(t, o.extra, wl)
	sock := filepath.Join(dir, "no-ubus.sock")
	if o.ubus {
		sock = filepath.Join(dir, "ubus.sock")
		srv, err := ubustest.NewServer(sock, &ubustest.Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
	}
	r.sock = sock
	if o.before != nil {
		o.before(w)
	}
	r.args = append(append([]string{}, o.args...), "-c", dir, "-w", filepath.Join(dir, "whitelist"), "-s", sock)
	r.p = w.StartConnmgr(t, r.args...)
	if !o.noWait {
		r.waitDefault("eth0", 15*time.Second)
		r.waitState("stanet", "ITFUP_SS", 15*time.Second)
	}
	return r
}

// restart starts connmgr again with the rig's command line (the one before is stopped).
func (r *rig) restart() {
	r.p = r.w.StartConnmgr(r.t, r.args...)
}

// waitState waits for the daemon to log that network reached state.
func (r *rig) waitState(network, state string, timeout time.Duration) {
	r.t.Helper()
	re := regexp.MustCompile(`msg="uplink state" network=` + network + ` .*to=` + state + `\b`)
	if _, err := r.p.WaitLog(re, timeout); err != nil {
		r.t.Fatalf("%s never reached %s: %v\nlog:\n%s", network, state, err, r.p.Log())
	}
}

// waitDefault waits until the default route goes through dev and returns
// when that happened.
func (r *rig) waitDefault(dev string, timeout time.Duration) time.Time {
	r.t.Helper()
	at, err := r.watch.waitFor(dev, timeout)
	if err != nil {
		r.t.Fatalf("%v\nlog:\n%s", err, r.p.Log())
	}
	return at
}

func (r *rig) fault(dev string, f testbed.Fault) {
	r.t.Helper()
	if err := r.w.SetFault(dev, f); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) carrier(dev string, up bool) {
	r.t.Helper()
	if err := r.w.SetCarrier(dev, up); err != nil {
		r.t.Fatal(err)
	}
}

// routeWatch follows the device's metric-0 default route over netlink and
// timestamps each change as the kernel reports it; for IPv6, connmgr's default
// route (protocol 175) whatever its metric (the kernel makes an IPv6 metric 0
// its default 1024).
type routeWatch struct {
	family  int // unix.AF_INET or unix.AF_INET6
	mu      sync.Mutex
	changed *sync.Cond
	dev     string    // device of the metric-0 default route, "" if none
	since   time.Time // when it became so
	changes int       // how many times it changed
	names   map[int]string
	carrier map[string]time.Time // when the kernel last reported a carrier change, per device
	up      map[string]bool
}

func watchRoutes(t testing.TB, w *testbed.World, family int) *routeWatch {
	rw := &routeWatch{family: family, names: map[int]string{}, carrier: map[string]time.Time{}, up: map[string]bool{}}
	rw.changed = sync.NewCond(&rw.mu)
	ns := w.Device.Handle(t)
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		rw.names[l.Attrs().Index] = l.Attrs().Name
	}
	ch := make(chan netlink.RouteUpdate, 256)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	if err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{Namespace: &ns, ListExisting: true}); err != nil {
		t.Fatal(err)
	}
	lch := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(lch, done, netlink.LinkSubscribeOptions{Namespace: &ns, ListExisting: true}); err != nil {
		t.Fatal(err)
	}
	go func() {
		for u := range lch {
			at := time.Now()
			name, up := u.Attrs().Name, u.Attrs().RawFlags&unix.IFF_LOWER_UP != 0
			rw.mu.Lock()
			if old, seen := rw.up[name]; !seen || old != up {
				rw.up[name], rw.carrier[name] = up, at
			}
			rw.mu.Unlock()
		}
	}()
	go func() {
		for u := range ch {
			at := time.Now()
			if u.Table != unix.RT_TABLE_MAIN || u.Family != rw.family {
				continue
			}
			if (family == unix.AF_INET && u.Priority != 0) || (family == unix.AF_INET6 && u.Protocol != connmgrProto) {
				continue
			}
			if u.Dst != nil {
				if ones, _ := u.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			dev := ""
			if u.Type == unix.RTM_NEWROUTE {
				dev = rw.names[u.LinkIndex]
			}
			rw.mu.Lock()
			if dev != rw.dev {
				rw.dev, rw.since = dev, at
				rw.changes++
				rw.changed.Broadcast()
			}
			rw.mu.Unlock()
		}
	}()
	return rw
}

// connmgrProto is the routing protocol number of connmgr's routes.
const connmgrProto = 175

// waitDefault6 waits until connmgr's IPv6 default route goes through dev ("" for none) and
// returns when that happened.
func (r *rig) waitDefault6(dev string, timeout time.Duration) time.Time {
	r.t.Helper()
	at, err := r.watch6.waitFor(dev, timeout)
	if err != nil {
		r.t.Fatalf("IPv6: %v\nlog:\n%s", err, r.p.Log())
	}
	return at
}

// waitFor waits until the default route goes through dev.
func (rw *routeWatch) waitFor(dev string, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() { rw.mu.Lock(); rw.changed.Broadcast(); rw.mu.Unlock() })
	defer timer.Stop()
	rw.mu.Lock()
	defer rw.mu.Unlock()
	for rw.dev != dev {
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("default route not via %s within %v (it is via %q)", dev, timeout, rw.dev)
		}
		rw.changed.Wait()
	}
	return rw.since, nil
}

// carrierAt returns when the kernel last reported dev's carrier changing.
func (rw *routeWatch) carrierAt(dev string) time.Time {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.carrier[dev]
}

// count returns how many times the default route changed so far.
func (rw *routeWatch) count() int {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.changes
}

// echoConn is a TCP connection from the device to the cloud's echo service.
type echoConn struct{ net.Conn }

func dialEcho(t testing.TB, w *testbed.World) echoConn {
	t.Helper()
	return dialEchoAt(t, w, testbed.EchoURL())
}

// dialEchoAt connects to the echo service at addr (host:port, either family) from the device,
// as an application does: no binding, the kernel's routes decide.
func dialEchoAt(t testing.TB, w *testbed.World, addr string) echoConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := w.Device.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return echoConn{c}
}

// works sends a line and reads it back within timeout.
func (c echoConn) works(timeout time.Duration) error {
	c.SetDeadline(time.Now().Add(timeout))
	msg := "ping " + strconv.FormatInt(time.Now().UnixNano(), 10) + "\n"
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo returned %q", strings.TrimSpace(string(buf)))
	}
	return nil
}
