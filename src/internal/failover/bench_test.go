package failover_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// TestFailoverBenchmark measures the failover figures of BENCHMARKS.md.
// It runs only when AFC_BENCH_FAILOVER is set to the number of runs per
// scenario (make bench-failover sets it); it prints median and 95th
// percentile of each figure next to its target.
func TestFailoverBenchmark(t *testing.T) {
	runs, _ := strconv.Atoi(os.Getenv("AFC_BENCH_FAILOVER"))
	if runs <= 0 {
		t.Skip("set AFC_BENCH_FAILOVER=N (runs per scenario) or use make bench-failover")
	}
	lossPeriod := 60 * time.Second
	if s := os.Getenv("AFC_BENCH_LOSS_PERIOD"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		lossPeriod = d
	}
	var carrier, kernel, silent, failback, flaps, broken []float64
	r := newRig(t, "")
	// jitter spreads faults over the probe schedule's phase.
	jitter := func() { time.Sleep(time.Duration(rand.IntN(1200)) * time.Millisecond) }
	for i := range runs {
		// The kernel reports a carrier change at once only when no link
		// event happened in the last second (linkwatch batches the rest):
		// let the previous run's events age first.
		time.Sleep(1100 * time.Millisecond)
		jitter()
		start := time.Now()
		r.carrier("eth0", false)
		at := r.waitDefault("wlan0", 10*time.Second)
		carrier = append(carrier, ms(at.Sub(start)))
		kernel = append(kernel, ms(at.Sub(r.watch.carrierAt("eth0"))))
		conns := openConns(t, r.w, 5)
		start = time.Now()
		r.carrier("eth0", true)
		failback = append(failback, ms(r.waitDefault("eth0", 30*time.Second).Sub(start)))
		broken = append(broken, float64(countBroken(conns)))
		t.Logf("run %d: carrier %.1f ms (%.1f ms after the carrier report), fail-back %.0f ms", i, carrier[i], kernel[i], failback[i])
	}
	for i := range runs {
		jitter()
		start := time.Now()
		r.fault("eth0", testbed.Fault{Blackhole: true})
		silent = append(silent, ms(r.waitDefault("wlan0", 20*time.Second).Sub(start)))
		conns := openConns(t, r.w, 5)
		start = time.Now()
		r.fault("eth0", testbed.Fault{})
		failback = append(failback, ms(r.waitDefault("eth0", 30*time.Second).Sub(start)))
		broken = append(broken, float64(countBroken(conns)))
		t.Logf("run %d: silent %.0f ms, fail-back %.0f ms", i, silent[i], failback[len(failback)-1])
	}
	periods := max(1, runs/5)
	for range periods {
		before := r.watch.count()
		r.fault("eth0", testbed.Fault{LossPercent: 20})
		time.Sleep(lossPeriod)
		r.fault("eth0", testbed.Fault{})
		flaps = append(flaps, float64(r.watch.count()-before))
	}
	idle, _, _ := loadFigures(t, r, 1, 10*time.Second)
	cpu, rss, rate := loadFigures(t, r, 50000, 10*time.Second)

	var b strings.Builder
	fmt.Fprintf(&b, "\nfailover benchmark: %d runs per scenario, %d loss periods of %v, default configuration\n", runs, periods, lossPeriod)
	fmt.Fprintf(&b, "%-44s %6s %10s %10s   %s\n", "figure", "n", "median", "p95", "target")
	row := func(name string, xs []float64, unit, target string) {
		fmt.Fprintf(&b, "%-44s %6d %9.1f%s %9.1f%s   %s\n", name, len(xs), pct(xs, 50), unit, pct(xs, 95), unit, target)
	}
	row("carrier loss -> route switched", carrier, "ms", "p95 <= 100 ms")
	row("  of which: carrier report seen -> switched", kernel, "ms", "")
	row("silent upstream failure -> route switched", silent, "ms", "p95 <= 3000 ms")
	row("preferred uplink restored -> switched back", failback, "ms", "<= 5000 ms")
	row(fmt.Sprintf("route flaps under 20%% loss per %v", lossPeriod), flaps, "  ", "0")
	row("connections broken by fail-back (of 5)", broken, "  ", "0")
	fmt.Fprintf(&b, "%-44s %6s %9.2f%%  (at %.0f packets/s)   < 2%% of one core\n", "daemon CPU, 50,000 packets/s on in-use", "", cpu, rate)
	fmt.Fprintf(&b, "%-44s %6s %9.2f%%\n", "  for comparison: daemon CPU, idle", "", idle)
	fmt.Fprintf(&b, "%-44s %6s %9.1fMB   < 16 MB\n", "daemon peak RSS (VmHWM)", "", rss)
	fmt.Println(b.String())
	t.Log(b.String())
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// pct is the p-th percentile (nearest rank).
func pct(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func openConns(t testing.TB, w *testbed.World, n int) []echoConn {
	var cs []echoConn
	for range n {
		c := dialEcho(t, w)
		if err := c.works(5 * time.Second); err != nil {
			t.Fatalf("new connection over the standby does not work: %v", err)
		}
		cs = append(cs, c)
	}
	return cs
}

func countBroken(cs []echoConn) int {
	n := 0
	for _, c := range cs {
		if c.works(3*time.Second) != nil {
			n++
		}
		c.Close()
	}
	return n
}

// loadFigures sends pps UDP packets per second from the cloud to the
// device's Ethernet address for d and returns the daemon's CPU share of
// one core over that time, its peak RSS in MB, and the rate achieved.
func loadFigures(t testing.TB, r *rig, pps int, d time.Duration) (cpuPct, rssMB, rate float64) {
	pc, err := r.w.Cloud.ListenPacket("udp4", testbed.EchoAddr.String()+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := &net.UDPAddr{IP: r.w.MustUplink("eth0").Addr.AsSlice(), Port: 9}
	pid := r.p.Pid()
	cpu0 := cpuTicks(t, pid)
	start := time.Now()
	sent := 0
	payload := make([]byte, 64)
	for time.Since(start) < d {
		// Paced in 1 ms slices.
		want := int(time.Since(start).Seconds() * float64(pps))
		for sent < want {
			pc.WriteTo(payload, dst)
			sent++
		}
		time.Sleep(500 * time.Microsecond)
	}
	el := time.Since(start)
	cpu1 := cpuTicks(t, pid)
	hz := 100.0 // USER_HZ on Linux
	cpuPct = (cpu1 - cpu0) / hz / el.Seconds() * 100
	return cpuPct, peakRSS(t, pid), float64(sent) / el.Seconds()
}

func cpuTicks(t testing.TB, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.ParseFloat(f[11], 64) // utime (field 14)
	s, _ := strconv.ParseFloat(f[12], 64) // stime (field 15)
	return u + s
}

func peakRSS(t testing.TB, pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	t.Fatal("no VmHWM")
	return 0
}
