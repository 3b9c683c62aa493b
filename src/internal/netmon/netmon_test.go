package netmon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
)

// watcher collects updates and the latest snapshot per device.
type watcher struct {
	mu      sync.Mutex
	cur     map[string]uplink.Device
	resyncs int
	own     int
	rules   int
	block   chan struct{} // while non-nil and open, Notify blocks
}

func (w *watcher) notify(u Update) {
	w.mu.Lock()
	b := w.block
	w.mu.Unlock()
	if b != nil {
		<-b
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cur == nil {
		w.cur = map[string]uplink.Device{}
	}
	for k, v := range u.Devices {
		w.cur[k] = v
	}
	if u.Resync {
		w.resyncs++
	}
	if u.OwnRoutesChanged {
		w.own++
	}
	if u.RulesChanged {
		w.rules++
	}
}

func (w *watcher) waitFor(t *testing.T, what string, cond func(w *watcher) bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		ok := cond(w)
		w.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Fatalf("timed out waiting for %s; have %+v", what, w.cur)
}

func start(t *testing.T, ns *testbed.NS, w *watcher, rcvbuf int, devs ...string) {
	startPoll(t, ns, w, rcvbuf, 0, devs...)
}

func startPoll(t *testing.T, ns *testbed.NS, w *watcher, rcvbuf int, poll time.Duration, devs ...string) *Monitor {
	return startWith(t, ns, w, Options{Devices: devs, RcvBuf: rcvbuf, CarrierPoll: poll})
}

func startWith(t *testing.T, ns *testbed.NS, w *watcher, o Options) *Monitor {
	ctx, cancel := context.WithCancel(context.Background())
	h := ns.Handle(t)
	o.OwnProto, o.Namespace, o.Notify, o.Logf = 188, &h, w.notify, t.Logf
	m := New(o)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		w.mu.Lock()
		if w.block != nil {
			close(w.block)
			w.block = nil
		}
		w.mu.Unlock()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return m
}

func TestMonitorFollowsDevice(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	w := &watcher{}
	start(t, ns, w, 0, "eth0", "wwan0")
	w.waitFor(t, "initial dump", func(w *watcher) bool { return w.resyncs == 1 && !w.cur["eth0"].Present && !w.cur["wwan0"].Present })

	must(t, ns.IP("link add eth0 type veth peer name peer0"))
	w.waitFor(t, "eth0 present", func(w *watcher) bool { d := w.cur["eth0"]; return d.Present && !d.AdminUp })

	must(t, ns.IP("addr add 198.18.1.2/24 dev eth0"))
	must(t, ns.IP("link set eth0 up"))
	must(t, ns.IP("link set peer0 up"))
	must(t, ns.IP("route add default via 198.18.1.1 dev eth0 metric 10"))
	want := netip.MustParseAddr("198.18.1.1")
	w.waitFor(t, "eth0 usable", func(w *watcher) bool {
		d := w.cur["eth0"]
		return d.AdminUp && d.Carrier && len(d.Addrs) == 1 && d.Addrs[0] == netip.MustParsePrefix("198.18.1.2/24") && d.HasDefault && d.Gateway == want
	})

	// A second default route with a worse metric does not change the gateway.
	must(t, ns.IP("route add default via 198.18.1.9 dev eth0 metric 50"))
	// Our own metric-0 route is reported as ours, not as the uplink's.
	must(t, ns.IP("route add default via 198.18.1.7 dev eth0 metric 0 proto 188"))
	w.waitFor(t, "own route seen", func(w *watcher) bool { return w.own > 0 })
	if g := w.cur["eth0"].Gateway; g != want {
		t.Fatalf("gateway %v, want %v", g, want)
	}
	must(t, ns.IP("rule add from 198.18.1.2 lookup 100 pref 9000"))
	w.waitFor(t, "rule change seen", func(w *watcher) bool { return w.rules > 0 })

	// Gateway changed by DHCP.
	must(t, ns.IP("route del default via 198.18.1.1 dev eth0 metric 10"))
	w.waitFor(t, "gateway fallback", func(w *watcher) bool { return w.cur["eth0"].Gateway == netip.MustParseAddr("198.18.1.9") })

	must(t, ns.IP("link set peer0 down"))
	w.waitFor(t, "carrier lost", func(w *watcher) bool { d := w.cur["eth0"]; return d.Present && d.AdminUp && !d.Carrier })

	// Admin down flushes routes without RTM_DELROUTE: must still be seen.
	must(t, ns.IP("link set eth0 down"))
	w.waitFor(t, "routes gone with admin down", func(w *watcher) bool { d := w.cur["eth0"]; return !d.AdminUp && !d.HasDefault })

	must(t, ns.IP("link del eth0"))
	w.waitFor(t, "eth0 removed", func(w *watcher) bool { return !w.cur["eth0"].Present })

	// Re-added: a fresh device with nothing on it.
	must(t, ns.IP("link add eth0 type veth peer name peer0"))
	w.waitFor(t, "eth0 re-added", func(w *watcher) bool { d := w.cur["eth0"]; return d.Present && len(d.Addrs) == 0 })
}

// The watched devices follow DeviceChanges (an uplink's layer-3 device from
// netifd): a device already there is reported at once with what it has.
func TestMonitorDeviceChanges(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	must(t, ns.IP("link add 3g-modemnet type veth peer name peer0", "addr add 198.18.3.2/24 dev 3g-modemnet", "link set 3g-modemnet up"))
	w := &watcher{}
	ctx, cancel := context.WithCancel(context.Background())
	h := ns.Handle(t)
	changes := make(chan []string, 1)
	m := New(Options{Devices: []string{"wwan0"}, DeviceChanges: changes, Namespace: &h, Notify: w.notify, Logf: t.Logf})
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	w.waitFor(t, "initial dump", func(w *watcher) bool { _, ok := w.cur["wwan0"]; return ok })
	if _, ok := w.cur["3g-modemnet"]; ok {
		t.Fatal("3g-modemnet reported before it was asked for")
	}
	changes <- []string{"3g-modemnet"}
	w.waitFor(t, "3g-modemnet reported", func(w *watcher) bool { d := w.cur["3g-modemnet"]; return d.Present && len(d.Addrs) == 1 })
	// Renamed: the device's new name is asked for, and follows.
	must(t, ns.IP("link set 3g-modemnet down", "link set 3g-modemnet name wwan1", "link set wwan1 up"))
	changes <- []string{"wwan1"}
	w.waitFor(t, "wwan1 reported", func(w *watcher) bool { d := w.cur["wwan1"]; return d.Present && d.AdminUp && len(d.Addrs) == 1 })
}

// Carrier loss must reach the consumer fast: it is the first step of a
// sub-100 ms failover.
func TestCarrierLossLatency(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	must(t, ns.IP("link add eth0 type veth peer name peer0"))
	must(t, ns.IP("link set eth0 up"))
	must(t, ns.IP("link set peer0 up"))
	w := &watcher{}
	start(t, ns, w, 0, "eth0")
	w.waitFor(t, "carrier", func(w *watcher) bool { return w.cur["eth0"].Carrier })
	t0 := time.Now()
	must(t, ns.IP("link set peer0 down"))
	w.waitFor(t, "carrier lost", func(w *watcher) bool { return !w.cur["eth0"].Carrier })
	t.Logf("carrier loss seen %v after the command returned (includes polling)", time.Since(t0))
}

// The kernel delays a carrier report by up to a second when another link
// changed just before (linkwatch batching), unless the device is a veth
// whose peer has another ifindex; the carrier poll sees the device's flag
// at once. Both veths here have peers with the same index, like a real
// NIC. (With pollEvery 0 the report comes up to ~1 s late.)
func TestCarrierPollBeatsLinkwatch(t *testing.T) {
	const pollEvery = 40 * time.Millisecond
	a, b := testbed.NewNS(t, "nma"), testbed.NewNS(t, "nmb")
	must(t, a.IP("link add eth0 index 50 type veth peer name peer0 netns "+b.Name+" index 50",
		"link add other index 60 type veth peer name otherp netns "+b.Name+" index 60",
		"link set eth0 up"))
	must(t, b.IP("link set peer0 up"))
	polled := &watcher{}
	startPoll(t, a, polled, 0, pollEvery, "eth0")
	polled.waitFor(t, "carrier", func(w *watcher) bool { return w.cur["eth0"].Carrier })
	time.Sleep(1100 * time.Millisecond) // let earlier link events age
	must(t, b.IP("link set otherp up")) // makes the next report wait ...
	time.Sleep(50 * time.Millisecond)   // ... once linkwatch has run for it
	t0 := time.Now()
	must(t, b.IP("link set peer0 down"))
	polled.waitFor(t, "carrier lost (poll)", func(w *watcher) bool { return !w.cur["eth0"].Carrier })
	took := time.Since(t0)
	t.Logf("carrier loss seen after %v with a %v poll", took, pollEvery)
	if took > 250*time.Millisecond {
		t.Fatalf("carrier loss seen after %v: the poll did not bypass linkwatch's batching", took)
	}
}

// An idle monitor does not poll: the carrier poll runs only for its
// window after the start and after each link message (when the kernel
// may be batching its carrier reports), and sleeps otherwise.
func TestCarrierPollSleepsWhenIdle(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	must(t, ns.IP("link add eth0 type veth peer name peer0", "link add other type veth peer name otherp",
		"link set eth0 up", "link set peer0 up"))
	w := &watcher{}
	m := startWith(t, ns, w, Options{Devices: []string{"eth0"}, CarrierPoll: 20 * time.Millisecond, CarrierWindow: 300 * time.Millisecond})
	w.waitFor(t, "carrier", func(w *watcher) bool { return w.cur["eth0"].Carrier })
	time.Sleep(600 * time.Millisecond)
	idle := m.CarrierPolls()
	if idle == 0 {
		t.Fatal("no poll in the window after the start")
	}
	time.Sleep(time.Second)
	if n := m.CarrierPolls(); n != idle {
		t.Fatalf("%d polls in a second of no link message, want none", n-idle)
	}
	// A link message elsewhere in the namespace opens the window again,
	// and a carrier lost during it is seen by the poll.
	must(t, ns.IP("link set other up"))
	deadline := time.Now().Add(2 * time.Second)
	for m.CarrierPolls() == idle {
		if time.Now().After(deadline) {
			t.Fatal("no poll after a link message")
		}
		time.Sleep(5 * time.Millisecond)
	}
	must(t, ns.IP("link set peer0 down"))
	w.waitFor(t, "carrier lost", func(w *watcher) bool { return !w.cur["eth0"].Carrier })
	time.Sleep(time.Second)
	after := m.CarrierPolls()
	time.Sleep(500 * time.Millisecond)
	if n := m.CarrierPolls(); n != after {
		t.Fatalf("%d polls after the window closed, want none", n-after)
	}
}

// Overflowing the netlink socket (ENOBUFS) must lead to a resync that makes
// the view right again.
func TestResyncAfterOverflow(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	must(t, ns.IP("link add eth0 type veth peer name peer0"))
	w := &watcher{}
	start(t, ns, w, 4096, "eth0")
	w.waitFor(t, "initial dump", func(w *watcher) bool { return w.resyncs == 1 && w.cur["eth0"].Present })

	w.mu.Lock()
	w.block = make(chan struct{})
	w.mu.Unlock()
	// Many address changes while the consumer is stuck overflow the
	// small socket buffer.
	var batch string
	for i := 0; i < 400; i++ {
		batch += fmt.Sprintf("addr add 198.18.%d.%d/32 dev eth0\n", 2+i/250, 1+i%250)
		batch += fmt.Sprintf("addr add 2001:db8::%x/128 dev eth0 nodad\n", i+1)
	}
	must(t, ns.IP(strings.Split(strings.TrimSpace(batch), "\n")...))
	time.Sleep(200 * time.Millisecond)
	w.mu.Lock()
	close(w.block)
	w.block = nil
	w.mu.Unlock()
	w.waitFor(t, "resync with all 800 addresses", func(w *watcher) bool {
		return w.resyncs >= 2 && len(w.cur["eth0"].Addrs) == 800
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// has6 says d has the IPv6 address of p among its usable addresses.
func has6(d uplink.Device, p string) bool {
	return slices.Contains(d.Addrs, netip.MustParsePrefix(p))
}

// IPv6 follows as IPv4 does: only usable global addresses (not tentative,
// DAD-failed or deprecated), and the lowest-metric default route through
// the device in the main table, via a link-local gateway, whether from an
// RA (proto ra) or netifd; ours and other tables' are not the uplink's.
func TestMonitorFollowsIPv6(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	must(t, ns.IP("link add eth0 type veth peer name peer0"))
	// DAD takes 5 s per address: long enough to see it tentative.
	must(t, ns.Sysctl("net.ipv6.conf.eth0.accept_dad", "1"))
	must(t, ns.Sysctl("net.ipv6.neigh.eth0.retrans_time_ms", "5000"))
	must(t, ns.IP("link set eth0 up", "link set peer0 up"))
	w := &watcher{}
	start(t, ns, w, 0, "eth0")
	w.waitFor(t, "carrier", func(w *watcher) bool { return w.cur["eth0"].Carrier })

	must(t, ns.IP(
		"addr add 2001:db8:1::2/64 dev eth0",                       // tentative for 5 s, then usable
		"addr add 2001:db8:1::4/64 dev peer0 nodad",                // the peer holds ::4 ...
		"addr add 2001:db8:1::4/64 dev eth0",                       // ... so its DAD fails here
		"addr add 2001:db8:1::5/64 dev eth0 nodad preferred_lft 0", // deprecated at once
		"addr add 198.18.1.2/24 dev eth0"))
	w.waitFor(t, "IPv4 address", func(w *watcher) bool { return len(w.cur["eth0"].Addrs) > 0 })
	if d := w.cur["eth0"]; len(d.Addrs) != 1 || d.Addrs[0] != netip.MustParsePrefix("198.18.1.2/24") {
		t.Fatalf("addresses while IPv6 DAD runs: %v, want the IPv4 one only", d.Addrs)
	}
	w.waitFor(t, "IPv6 address after DAD", func(w *watcher) bool { return has6(w.cur["eth0"], "2001:db8:1::2/64") })
	if d := w.cur["eth0"]; !slices.Equal(d.Addrs, []netip.Prefix{netip.MustParsePrefix("198.18.1.2/24"), netip.MustParsePrefix("2001:db8:1::2/64")}) {
		t.Fatalf("addresses after DAD: %v (DAD-failed and deprecated ones must stay out; IPv4 first)", d.Addrs)
	}
	// A deprecated address is still valid: its connections keep their source rule.
	if d := w.cur["eth0"]; !slices.Equal(d.Deprecated, []netip.Prefix{netip.MustParsePrefix("2001:db8:1::5/64")}) {
		t.Fatalf("deprecated addresses: %v, want 2001:db8:1::5/64 (and never the DAD-failed one)", d.Deprecated)
	}
	if d := w.cur["eth0"]; d.HasDefault6 || d.HasDefault {
		t.Fatalf("default route without one: %+v", d)
	}

	// A default route from a router advertisement, via its link-local address.
	must(t, ns.IP("route add default via fe80::1 dev eth0 proto ra metric 1024"))
	w.waitFor(t, "RA default route", func(w *watcher) bool {
		d := w.cur["eth0"]
		return d.HasDefault6 && d.Gateway6 == netip.MustParseAddr("fe80::1") && !d.HasDefault
	})
	// netifd's (DHCPv6 or static) with a lower metric wins; ours, another
	// table's and a worse one do not.
	must(t, ns.IP("route add default via fe80::2 dev eth0 metric 512",
		"route add default via fe80::3 dev eth0 metric 2048",
		"route add default via fe80::7 dev eth0 metric 1 proto 188",
		"route add default via fe80::8 dev eth0 metric 1 table 300"))
	w.waitFor(t, "own IPv6 route seen", func(w *watcher) bool { return w.own > 0 })
	// Somebody deletes ours: that is reported too (connmgr restores it).
	w.mu.Lock()
	own := w.own
	w.mu.Unlock()
	must(t, ns.IP("route del default via fe80::7 dev eth0 metric 1 proto 188"))
	w.waitFor(t, "own IPv6 route's deletion seen", func(w *watcher) bool { return w.own > own })
	w.waitFor(t, "netifd's default route", func(w *watcher) bool { return w.cur["eth0"].Gateway6 == netip.MustParseAddr("fe80::2") })
	// An IPv4 default route is IPv4's alone.
	must(t, ns.IP("route add default via 198.18.1.1 dev eth0 metric 10"))
	w.waitFor(t, "IPv4 default route", func(w *watcher) bool { return w.cur["eth0"].HasDefault })
	if d := w.cur["eth0"]; d.Gateway != netip.MustParseAddr("198.18.1.1") || d.Gateway6 != netip.MustParseAddr("fe80::2") {
		t.Fatalf("gateways %v and %v", d.Gateway, d.Gateway6)
	}
	must(t, ns.IP("route del default via fe80::2 dev eth0 metric 512"))
	w.waitFor(t, "back to the RA route", func(w *watcher) bool { return w.cur["eth0"].Gateway6 == netip.MustParseAddr("fe80::1") })
	// netifd's habit (option sourcefilter, the default): IPv6 default
	// routes restricted to the uplink's prefix ("default from PREFIX").
	must(t, ns.IP("route del default via fe80::1 dev eth0 metric 1024",
		"route del default via fe80::3 dev eth0 metric 2048",
		"route add default from 2001:db8:1::/64 via fe80::5 dev eth0 proto static metric 384"))
	w.waitFor(t, "netifd's source-restricted default route", func(w *watcher) bool {
		d := w.cur["eth0"]
		return d.HasDefault6 && d.Gateway6 == netip.MustParseAddr("fe80::5")
	})

	// The address deprecated (its preferred lifetime ran out): unusable.
	must(t, ns.IP("addr change 2001:db8:1::2/64 dev eth0 preferred_lft 0"))
	w.waitFor(t, "deprecated address gone", func(w *watcher) bool { return !has6(w.cur["eth0"], "2001:db8:1::2/64") })
	if d := w.cur["eth0"]; !slices.Contains(d.Deprecated, netip.MustParsePrefix("2001:db8:1::2/64")) {
		t.Fatalf("the address deprecated at runtime is not among the deprecated ones: %v", d.Deprecated)
	}

	// Admin down removes the IPv6 routes without a message for each.
	must(t, ns.IP("link set eth0 down"))
	w.waitFor(t, "IPv6 routes gone with admin down", func(w *watcher) bool {
		d := w.cur["eth0"]
		return !d.AdminUp && !d.HasDefault6 && !d.HasDefault
	})
}

// Real router advertisements (radvd) from two routers on the uplink's
// link, as stock networks have them: the addresses SLAAC makes are
// reported once DAD passed, the default route (proto ra via a router's
// link-local address) at once, the router of high preference (RFC 4191)
// before the one of low preference though its address is higher; when a
// router stops (radvd sends a final RA with lifetime 0) its route goes. A
// route renewed by RAs stays past its first lifetime.
func TestMonitorRouterAdvertisement(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	sw := testbed.NewNS(t, "sw")
	must(t, sw.IP("link add br0 type bridge", "link set br0 up"))
	must(t, ns.IP("link add eth0 type veth peer name p0 netns "+sw.Name))
	must(t, sw.IP("link set p0 master br0", "link set p0 up"))
	must(t, ns.Sysctl("net.ipv6.conf.eth0.accept_ra", "2"))
	must(t, ns.IP("link set eth0 up"))
	w := &watcher{}
	start(t, ns, w, 0, "eth0")
	w.waitFor(t, "carrier", func(w *watcher) bool { return w.cur["eth0"].Carrier })

	// A router on the switch; its link-local address is made of mac (EUI-64).
	startRouter := func(name, mac, prefix, pref, lifetime string) (netip.Addr, *exec.Cmd) {
		rt := testbed.NewNS(t, name)
		must(t, rt.IP("link add lan0 address "+mac+" type veth peer name "+name+" netns "+sw.Name))
		must(t, sw.IP("link set "+name+" master br0", "link set "+name+" up"))
		must(t, rt.IP("link set lan0 up"))
		cmd := startRadvd(t, rt, prefix, pref, lifetime)
		hw, err := net.ParseMAC(mac)
		must(t, err)
		return netip.AddrFrom16([16]byte{0: 0xfe, 1: 0x80, 8: hw[0] ^ 2, 9: hw[1], 10: hw[2], 11: 0xff, 12: 0xfe, 13: hw[3], 14: hw[4], 15: hw[5]}), cmd
	}
	// The low-preference router has the lower link-local address.
	low, lowCmd := startRouter("rtlow", "02:00:00:00:00:0a", "2001:db8:5::/64", "low", "60")
	// A short router lifetime, renewed by each RA (every 3-4 s) without a
	// message from the kernel.
	high, highCmd := startRouter("rthigh", "02:00:00:00:00:0b", "2001:db8:6::/64", "high", "6")
	if !low.Less(high) {
		t.Fatalf("link-local %v not below %v", low, high)
	}
	w.waitFor(t, "SLAAC addresses of both prefixes, default route via the high-preference router", func(w *watcher) bool {
		d := w.cur["eth0"]
		return len(d.Addrs) == 2 && netip.MustParsePrefix("2001:db8:5::/64").Contains(d.Addrs[0].Addr()) &&
			netip.MustParsePrefix("2001:db8:6::/64").Contains(d.Addrs[1].Addr()) && d.Addrs[0].Bits() == 64 &&
			d.HasDefault6 && d.Gateway6 == high
	})
	// Renewed, it stays the uplink's past its first lifetime.
	for end := time.Now().Add(9 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		w.mu.Lock()
		d := w.cur["eth0"]
		w.mu.Unlock()
		if !d.HasDefault6 || d.Gateway6 != high {
			t.Fatalf("the renewed route of the high-preference router was lost: %+v", d)
		}
	}
	stopRadvd(highCmd)
	w.waitFor(t, "default route via the low-preference router", func(w *watcher) bool {
		d := w.cur["eth0"]
		return d.HasDefault6 && d.Gateway6 == low
	})
	stopRadvd(lowCmd)
	w.waitFor(t, "RA default routes withdrawn", func(w *watcher) bool { return !w.cur["eth0"].HasDefault6 })
}

// A router that stalls past its lifetime and then advertises again: its
// route goes when it expires, and comes back when an RA renews it, though
// the kernel renews a route it still keeps without a message.
func TestMonitorRouterStallsAndReturns(t *testing.T) {
	ns := testbed.NewNS(t, "netmon")
	rt := testbed.NewNS(t, "rt")
	must(t, ns.IP("link add eth0 type veth peer name lan0 address 02:00:00:00:00:0c netns "+rt.Name))
	must(t, rt.IP("link set lan0 up"))
	must(t, ns.Sysctl("net.ipv6.conf.eth0.accept_ra", "2"))
	must(t, ns.IP("link set eth0 up"))
	w := &watcher{}
	start(t, ns, w, 0, "eth0")
	cmd := startRadvd(t, rt, "2001:db8:5::/64", "medium", "6")
	ll := netip.MustParseAddr("fe80::ff:fe00:c")
	w.waitFor(t, "RA default route", func(w *watcher) bool { d := w.cur["eth0"]; return d.HasDefault6 && d.Gateway6 == ll })
	must(t, cmd.Process.Signal(syscall.SIGSTOP))
	w.waitFor(t, "the stalled router's route expired", func(w *watcher) bool { return !w.cur["eth0"].HasDefault6 })
	kept, _ := ns.Run("ip", "-6", "route", "show", "default")
	must(t, cmd.Process.Signal(syscall.SIGCONT))
	t.Logf("when the router came back the kernel listed: %q", kept)
	w.waitFor(t, "the renewed route", func(w *watcher) bool { d := w.cur["eth0"]; return d.HasDefault6 && d.Gateway6 == ll })
}

// startRadvd runs radvd in rt, advertising prefix on lan0 every 3-4 s as a
// default router of lifetime seconds and preference pref; it skips the
// test without radvd. The process is stopped (SIGTERM: a final RA of
// lifetime 0) when the test ends, and its output logged.
func startRadvd(t *testing.T, rt *testbed.NS, prefix, pref, lifetime string) *exec.Cmd {
	radvd, err := exec.LookPath("radvd")
	if err != nil {
		t.Skip("no radvd")
	}
	must(t, rt.Sysctl("net.ipv6.conf.all.forwarding", "1"))
	dir := t.TempDir()
	must(t, os.WriteFile(dir+"/radvd.conf", []byte(`interface lan0 {
	AdvSendAdvert on;
	MinRtrAdvInterval 3;
	MaxRtrAdvInterval 4;
	AdvDefaultLifetime `+lifetime+`;
	AdvDefaultPreference `+pref+`;
	prefix `+prefix+` { AdvOnLink on; AdvAutonomous on; };
};
`), 0o644))
	cmd := rt.Command(radvd, "-n", "-C", dir+"/radvd.conf", "-p", dir+"/radvd.pid", "-m", "stderr")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	must(t, cmd.Start())
	t.Cleanup(func() {
		stopRadvd(cmd)
		t.Logf("radvd in %s: %s", rt.Name, out.String())
	})
	return cmd
}

// stopRadvd stops radvd as an admin would (SIGTERM), once.
func stopRadvd(cmd *exec.Cmd) {
	if cmd.ProcessState == nil {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}
}
