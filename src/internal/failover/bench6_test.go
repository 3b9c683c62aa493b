package failover_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// TestFailoverBenchmarkDualStack measures the failover figures of BENCHMARKS.md for both
// families in a dual-stack world (issue 11): each uplink has IPv4 and IPv6 (RAs from radvd), and
// every figure is taken for IPv4 and IPv6 in the same runs (one fault moves both). Then the
// IPv6-only uplink: in a world whose wwan0 is IPv6-only behind a DNS64, eth0's and wlan0's
// cables are pulled and the time until connmgr's IPv6 route goes through wwan0, and until the
// hub's first connection to the cloud (at the synthesized address) works, is taken. It runs
// with make bench-failover (AFCONN_BENCH_FAILOVER runs per scenario, the configuration of
// AFCONN_BENCH_CONFIG).
func TestFailoverBenchmarkDualStack(t *testing.T) {
	runs, lossPeriod := benchRuns(t)
	dual := testbed.Options{IPv6: testbed.V6RA}
	config := os.Getenv("AFCONN_BENCH_CONFIG")
	var o rigOptions
	switch config {
	case "", "default":
		config = "default (firewall, DNS hold, ubus, production whitelist)"
		o = defaultOptions(t, testbed.DefaultRecords6())
	case "-d":
		config = "-d (firewall off: failover alone)"
		o = rigOptions{args: []string{"-d"}, records: testbed.DefaultRecords6()}
	default:
		t.Fatalf("AFCONN_BENCH_CONFIG=%q: want default or -d", config)
	}
	o.world = dual
	r := newRigWith(t, o)
	if o.ubus {
		r.waitFirewall()
	}
	r.waitDefault6("eth0", 15*time.Second)

	type figs struct{ carrier, kernel, silent, keepalive, failback, broken, flaps []float64 }
	f := map[int]*figs{4: {}, 6: {}}
	watch := map[int]*routeWatch{4: r.watch, 6: r.watch6}
	// both waits for both families' routes through dev and records the time each took.
	both := func(dev string, start time.Time, timeout time.Duration, into func(*figs) *[]float64) {
		for fam, w := range watch {
			at, err := w.waitFor(dev, timeout)
			if err != nil {
				t.Fatalf("IPv%d: %v\nlog:\n%s", fam, err, r.p.Log())
			}
			p := into(f[fam])
			*p = append(*p, ms(at.Sub(start)))
		}
	}
	conns := func() map[int][]echoConn {
		return map[int][]echoConn{4: openConnsAt(t, r.w, testbed.EchoURL(), 5), 6: openConnsAt(t, r.w, testbed.Echo6URL(), 5)}
	}
	countBoth := func(cs map[int][]echoConn) {
		for fam, c := range cs {
			f[fam].broken = append(f[fam].broken, float64(countBroken(c)))
		}
	}
	jitter := func() { time.Sleep(time.Duration(rand.IntN(1200)) * time.Millisecond) }
	for i := range runs {
		time.Sleep(1100 * time.Millisecond) // the kernel's carrier reports (see TestFailoverBenchmark)
		jitter()
		start := time.Now()
		r.carrier("eth0", false)
		both("wlan0", start, 10*time.Second, func(x *figs) *[]float64 { return &x.carrier })
		// The kernel's carrier report can come late (linkwatch, see TestFailoverBenchmark):
		// what connmgr took after it is the carrier figure less the report's delay.
		report := ms(r.watch.carrierAt("eth0").Sub(start))
		for _, x := range f {
			x.kernel = append(x.kernel, x.carrier[len(x.carrier)-1]-report)
		}
		cs := conns()
		start = time.Now()
		r.carrier("eth0", true)
		both("eth0", start, 30*time.Second, func(x *figs) *[]float64 { return &x.failback })
		countBoth(cs)
		t.Logf("run %d: carrier IPv4 %.1f ms IPv6 %.1f ms", i, f[4].carrier[i], f[6].carrier[i])
	}
	others := otherRuns(runs)
	for i := range others {
		jitter()
		start := time.Now()
		r.fault("eth0", testbed.Fault{Blackhole: true})
		both("wlan0", start, 40*time.Second, func(x *figs) *[]float64 { return &x.silent })
		cs := conns()
		start = time.Now()
		r.fault("eth0", testbed.Fault{})
		both("eth0", start, 30*time.Second, func(x *figs) *[]float64 { return &x.failback })
		countBoth(cs)
		t.Logf("run %d: silent IPv4 %.0f ms IPv6 %.0f ms", i, f[4].silent[i], f[6].silent[i])
	}
	// With traffic flowing (issue 13's target): a session of the family sends a keepalive
	// every 3 s; the time runs from the first keepalive sent after the fault to that family's
	// switch. One family's session at a time: each family's evidence is its own.
	for i := range others {
		for fam, addr := range map[int]string{4: testbed.EchoURL(), 6: testbed.Echo6URL()} {
			took, _ := keepaliveRunAt(t, r, time.Duration(rand.IntN(3000))*time.Millisecond, addr, watch[fam])
			f[fam].keepalive = append(f[fam].keepalive, ms(took))
			// The other family went over and came back with it: wait for both before the next.
			for _, w := range watch {
				if _, err := w.waitFor("eth0", 30*time.Second); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Logf("run %d: keepalive unanswered -> IPv4 switched %.0f ms, IPv6 %.0f ms", i, f[4].keepalive[i], f[6].keepalive[i])
	}
	for range min(others, max(1, runs/5)) {
		before := map[int]int{4: r.watch.count(), 6: r.watch6.count()}
		r.fault("eth0", testbed.Fault{LossPercent: 20})
		time.Sleep(lossPeriod)
		r.fault("eth0", testbed.Fault{})
		for fam, w := range watch {
			f[fam].flaps = append(f[fam].flaps, float64(w.count()-before[fam]))
		}
	}
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Log(err)
	}

	// The IPv6-only uplink, in a world of its own.
	o.world = testbed.Options{IPv6: testbed.V6RA, IPv6Only: []string{"wwan0"}, DNS64: true}
	o.records = nil
	c := newRigWith(t, o)
	if o.ubus {
		c.waitFirewall()
	}
	c.waitDefault6("eth0", 15*time.Second)
	var v6route, v6carry []float64
	synth := netip.AddrPortFrom(testbed.Synthesize(testbed.EchoAddr), testbed.EchoPort)
	for i := range min(others, max(1, runs/2)) {
		c.waitState("modemnet", "ITFUP_SS", 30*time.Second)
		time.Sleep(1100 * time.Millisecond)
		jitter()
		start := time.Now()
		c.carrier("eth0", false)
		c.carrier("wlan0", false)
		at := c.waitDefault6("wwan0", 20*time.Second)
		v6route = append(v6route, ms(at.Sub(start)))
		v6carry = append(v6carry, ms(c.firstEcho(synth.String(), c.w.MustUplink("wwan0").Addr6, 20*time.Second).Sub(start)))
		t.Logf("run %d: IPv6-only wwan0 routed in %.0f ms, carrying in %.0f ms", i, v6route[i], v6carry[i])
		c.carrier("eth0", true)
		c.carrier("wlan0", true)
		c.waitDefault6("eth0", 30*time.Second)
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\ndual-stack failover benchmark: %d runs per scenario, %d loss periods of %v, connmgr configuration %s\n", runs, len(f[4].flaps), lossPeriod, config)
	fmt.Fprintf(&b, "%-44s %6s %10s %10s %10s %10s   %s\n", "figure", "n", "IPv4 med", "IPv4 p95", "IPv6 med", "IPv6 p95", "target (each family)")
	row := func(name string, pick func(*figs) []float64, unit, target string) {
		x4, x6 := pick(f[4]), pick(f[6])
		fmt.Fprintf(&b, "%-44s %6d %8.1f%s %8.1f%s %8.1f%s %8.1f%s   %s\n", name, len(x4), pct(x4, 50), unit, pct(x4, 95), unit, pct(x6, 50), unit, pct(x6, 95), unit, target)
	}
	row("carrier loss -> route switched", func(x *figs) []float64 { return x.carrier }, "ms", "p95 <= 100 ms")
	row("  of which: carrier report seen -> switched", func(x *figs) []float64 { return x.kernel }, "ms", "")
	row("silent failure, idle hub -> route switched", func(x *figs) []float64 { return x.silent }, "ms", "probe_interval + 3 s")
	row("silent failure: next keepalive -> switched", func(x *figs) []float64 { return x.keepalive }, "ms", "p95 <= 3000 ms")
	row("preferred uplink restored -> switched back", func(x *figs) []float64 { return x.failback }, "ms", "<= 5000 ms")
	row(fmt.Sprintf("route flaps under 20%% loss per %v", lossPeriod), func(x *figs) []float64 { return x.flaps }, "  ", "0")
	row("connections broken by fail-back (of 5)", func(x *figs) []float64 { return x.broken }, "  ", "0")
	fmt.Fprintf(&b, "%-44s %6d %9.1fms %9.1fms   %s\n", "IPv6-only wwan0 last left -> IPv6 routed", len(v6route), pct(v6route, 50), pct(v6route, 95), "")
	fmt.Fprintf(&b, "%-44s %6d %9.1fms %9.1fms   %s\n", "IPv6-only wwan0 last left -> cloud reached", len(v6carry), pct(v6carry, 50), pct(v6carry, 95), "<= 3000 ms")
	fmt.Println(b.String())
	t.Log(b.String())
}

// openConnsAt opens n working echo connections to addr.
func openConnsAt(t testing.TB, w *testbed.World, addr string, n int) []echoConn {
	var cs []echoConn
	for range n {
		c := dialEchoAt(t, w, addr)
		if err := c.works(5 * time.Second); err != nil {
			t.Fatalf("new connection to %s over the standby does not work: %v", addr, err)
		}
		cs = append(cs, c)
	}
	return cs
}

// firstEcho tries a new echo connection to addr every 50 ms until one works from address from,
// and returns when it did.
func (r *rig) firstEcho(addr string, from netip.Addr, timeout time.Duration) time.Time {
	r.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if err := tryEcho(r.w, addr, from); err == nil {
			return time.Now()
		} else if time.Now().After(deadline) {
			r.t.Fatalf("no echo at %s from %s within %v: %v\nlog:\n%s", addr, from, timeout, err, r.p.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tryEcho makes one short echo round trip to addr and checks it left from address from.
func tryEcho(w *testbed.World, addr string, from netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	nc, err := w.Device.Dial(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer nc.Close()
	if got := netip.MustParseAddrPort(nc.LocalAddr().String()).Addr(); got != from {
		return fmt.Errorf("left from %s", got)
	}
	return echoConn{nc}.works(500 * time.Millisecond)
}
