package failover_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/afero/af-conn/internal/testbed"
)

// TestFailoverBenchmark measures the failover figures of BENCHMARKS.md.
// It runs only when AFCONN_BENCH_FAILOVER is set to the number of runs per
// scenario (make bench-failover sets it); it prints median and 95th
// percentile of each figure next to its target.
func TestFailoverBenchmark(t *testing.T) {
	runs, lossPeriod := benchRuns(t)
	// The targets are for the default configuration: firewall on (nftables, DNS hold), a
	// ubusd, the production whitelist. AFCONN_BENCH_CONFIG=-d measures failover alone.
	config := os.Getenv("AFCONN_BENCH_CONFIG")
	var r *rig
	switch config {
	case "", "default":
		config = "default (firewall, DNS hold, ubus, production whitelist)"
		r = newRigWith(t, defaultOptions(t, nil))
		r.waitFirewall()
	case "-d":
		config = "-d (firewall off: failover alone)"
		r = newRig(t, "")
	default:
		t.Fatalf("AFCONN_BENCH_CONFIG=%q: want default or -d", config)
	}
	var carrier, report, kernel, silent, keepalive, failback, flaps, broken []float64
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
		report = append(report, ms(r.watch.carrierAt("eth0").Sub(start)))
		kernel = append(kernel, ms(at.Sub(r.watch.carrierAt("eth0"))))
		conns := openConns(t, r.w, 5)
		start = time.Now()
		r.carrier("eth0", true)
		failback = append(failback, ms(r.waitDefault("eth0", 30*time.Second).Sub(start)))
		broken = append(broken, float64(countBroken(conns)))
		t.Logf("run %d: carrier %.1f ms (%.1f ms after the carrier report), fail-back %.0f ms", i, carrier[i], kernel[i], failback[i])
	}
	// The other scenarios' runs: none when only carrier loss is measured.
	others := otherRuns(runs)
	for i := range others {
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
	// With traffic flowing: the hub's cloud session sends a keepalive every 3 s; the time runs
	// from the first keepalive sent after the fault (issue 13's target).
	for i := range others {
		took, back := keepaliveRun(t, r, time.Duration(rand.IntN(3000))*time.Millisecond)
		keepalive = append(keepalive, ms(took))
		failback = append(failback, ms(back))
		t.Logf("run %d: keepalive unanswered -> switched %.0f ms, fail-back %.0f ms", i, keepalive[i], ms(back))
	}
	var perHour []perHourFigure
	periods := 0
	if others > 0 {
		perHour = probeBytesPerHour(t, r)
		periods = max(1, runs/5)
	}
	for range periods {
		before := r.watch.count()
		r.fault("eth0", testbed.Fault{LossPercent: 20})
		time.Sleep(lossPeriod)
		r.fault("eth0", testbed.Fault{})
		flaps = append(flaps, float64(r.watch.count()-before))
	}
	hwm := procStatus(t, r.p.Pid())["VmHWM"]
	var b strings.Builder
	fmt.Fprintf(&b, "\nfailover benchmark: %d runs per scenario, %d loss periods of %v, connmgr configuration %s\n", runs, periods, lossPeriod, config)
	fmt.Fprintf(&b, "%-44s %6s %10s %10s   %s\n", "figure", "n", "median", "p95", "target")
	row := func(name string, xs []float64, unit, target string) {
		fmt.Fprintf(&b, "%-44s %6d %9.1f%s %9.1f%s   %s\n", name, len(xs), pct(xs, 50), unit, pct(xs, 95), unit, target)
	}
	row("carrier loss -> route switched", carrier, "ms", "p95 <= 100 ms")
	row("  of which: carrier report seen -> switched", kernel, "ms", "")
	row("  (fault -> the kernel's carrier report)", report, "ms", "")
	row("silent failure, idle hub -> route switched", silent, "ms", "probe_interval + 3 s")
	row("silent failure: next keepalive sent -> switched", keepalive, "ms", "p95 <= 3000 ms")
	row("preferred uplink restored -> switched back", failback, "ms", "<= 5000 ms")
	row(fmt.Sprintf("route flaps under 20%% loss per %v", lossPeriod), flaps, "  ", "0")
	row("connections broken by fail-back (of 5)", broken, "  ", "0")
	fmt.Fprintf(&b, "%-44s %6s %9.1fMB   < 16 MB (under load: TestFailoverLoadBenchmark)\n", "daemon peak RSS (VmHWM) after all the runs", "", hwm)
	for _, p := range perHour {
		fmt.Fprintf(&b, "idle, in use: %-30s %6s %9.1fKB/h   %s\n", p.what, "", p.perHour/1000, p.target)
	}
	fmt.Println(b.String())
	t.Log(b.String())
}

// benchRuns reads the runs per scenario (AFCONN_BENCH_FAILOVER; the test skips without) and the
// loss period (AFCONN_BENCH_LOSS_PERIOD, default 60 s).
func benchRuns(t *testing.T) (int, time.Duration) {
	runs, _ := strconv.Atoi(os.Getenv("AFCONN_BENCH_FAILOVER"))
	if runs <= 0 {
		t.Skip("set AFCONN_BENCH_FAILOVER=N (runs per scenario) or use make bench-failover")
	}
	return runs, envDuration(t, "AFCONN_BENCH_LOSS_PERIOD", 60*time.Second)
}

// otherRuns is the runs of the scenarios other than carrier loss: none when
// AFCONN_BENCH_CARRIER_ONLY is set (make bench-failover CARRIER_ONLY=1), which measures carrier
// loss alone, many runs in a few minutes, while the machine is quiet.
func otherRuns(runs int) int {
	if os.Getenv("AFCONN_BENCH_CARRIER_ONLY") != "" {
		return 0
	}
	return runs
}

// envDuration is the duration the environment variable name gives, or def when it is unset.
func envDuration(t testing.TB, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, s, err)
	}
	return d
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// keepaliveRun black-holes eth0 phase after a keepalive of a persistent connection sending one
// every 3 s, and returns the time from the next keepalive sent to the switch, and the fail-back.
func keepaliveRun(t testing.TB, r *rig, phase time.Duration) (took, back time.Duration) {
	return keepaliveRunAt(t, r, phase, testbed.EchoURL(), r.watch)
}

// keepaliveRunAt is keepaliveRun with the session to addr (either family) and the switch seen
// by watch (that family's default route).
func keepaliveRunAt(t testing.TB, r *rig, phase time.Duration, addr string, watch *routeWatch) (took, back time.Duration) {
	c := dialEchoAt(t, r.w, addr)
	defer c.Close()
	go io.Copy(io.Discard, c)
	sent := make(chan time.Time, 10)
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			at := time.Now()
			c.SetWriteDeadline(at.Add(time.Second))
			c.Write([]byte("keepalive\n"))
			sent <- at
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Second):
			}
		}
	}()
	<-sent
	time.Sleep(phase)
	fault := time.Now()
	r.fault("eth0", testbed.Fault{Blackhole: true})
	var next time.Time
	for next.Before(fault) {
		next = <-sent
	}
	at, err := watch.waitFor("wlan0", 30*time.Second)
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, r.p.Log())
	}
	took = at.Sub(next)
	start := time.Now()
	r.fault("eth0", testbed.Fault{})
	if at, err = watch.waitFor("eth0", 30*time.Second); err != nil {
		t.Fatalf("%v\nlog:\n%s", err, r.p.Log())
	}
	back = at.Sub(start)
	return took, back
}

// perHourFigure is one uplink type's bytes per hour while idle and in use.
type perHourFigure struct {
	what, target string
	perHour      float64
}

// probeBytesPerHour measures each uplink type in use and idle: all bytes on its device (both
// ways, Ethernet frames) over AFCONN_BENCH_BYTES_WINDOW (default 2 minutes), per hour. The
// others are taken away by their carrier, so each is in turn the only one left.
func probeBytesPerHour(t testing.TB, r *rig) []perHourFigure {
	window := envDuration(t, "AFCONN_BENCH_BYTES_WINDOW", 2*time.Minute)
	var out []perHourFigure
	for _, u := range []struct{ dev, what, target string }{
		{"eth0", "Ethernet (probe_interval 15s)", "<= 1 round per 15 s"},
		{"wlan0", "Wi-Fi (probe_interval 15s)", "<= 1 round per 15 s"},
		{"wwan0", "cellular (probe_budget 50K/h)", "<= 50 KB/h"},
	} {
		r.waitDefault(u.dev, 30*time.Second)
		time.Sleep(5 * time.Second) // the switch's confirming rounds are over
		before := linkBytes(t, r.w, u.dev)
		time.Sleep(window)
		n := linkBytes(t, r.w, u.dev) - before
		out = append(out, perHourFigure{what: u.what, target: u.target, perHour: float64(n) * float64(time.Hour) / float64(window)})
		t.Logf("%s in use, idle: %d bytes in %v", u.dev, n, window)
		r.carrier(u.dev, false)
	}
	r.carrier("eth0", true)
	r.carrier("wlan0", true)
	r.carrier("wwan0", true)
	r.waitDefault("eth0", 30*time.Second)
	return out
}

// linkBytes is a device's bytes both ways, from its link counters.
func linkBytes(t testing.TB, w *testbed.World, dev string) uint64 {
	return deviceCounters(t, w)[dev].Total()
}

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
	return openConnsAt(t, w, testbed.EchoURL(), n)
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

// procStatus returns the memory figures (kB lines) of /proc/PID/status, in MB.
func procStatus(t testing.TB, pid int) map[string]float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]float64{}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[2] == "kB" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			m[strings.TrimSuffix(f[0], ":")] = kb / 1024
		}
	}
	if _, ok := m["VmHWM"]; !ok {
		t.Fatal("no VmHWM in /proc/PID/status")
	}
	return m
}

// The OTA server of the load benchmark: a cloud address the hub learns
// from DNS (it matches the production whitelist's otacdn*.afero.io).
var (
	otaName = "otacdn.usw2prod.afero.io"
	otaAddr = netip.MustParseAddr("198.19.0.10")
)

const otaPort = 8080

// TestFailoverLoadBenchmark measures the daemon's CPU share of one core and
// its peak RSS while 50,000 packets/s arrive over the in-use uplink, with
// the default configuration (firewall on, DNS hold on, a live ubusd, the
// production whitelist) and, for comparison in the same run, with -d (the
// same world and bus, firewall off). It runs when AFCONN_BENCH_LOAD is set to
// the number of rounds; each round starts both daemons afresh (so each
// gives a peak RSS of its own), takes each through a failover and
// fail-back on carrier loss and on a silent upstream failure (memory grows
// with what the daemon has done), then measures them in turn, idle and
// loaded.
//
// The load is what a hub receives in bulk: a download from the cloud, on
// a TCP connection the hub opened to an address it has just resolved (in
// firewall mode the DNS gate opens the pinhole from that answer). The
// cloud sends full-size segments (1448 bytes), paced to 50,000 a second;
// the hub reads them and acknowledges. The rate quoted is what the
// device's eth0 counted.
func TestFailoverLoadBenchmark(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("AFCONN_BENCH_LOAD"))
	if rounds <= 0 {
		t.Skip("set AFCONN_BENCH_LOAD=N (rounds) or use make bench-failover")
	}
	const pps = 50000
	idleFor, loadFor := 10*time.Second, 15*time.Second
	type config struct {
		name string
		opts rigOptions
	}
	def := defaultOptions(t, []testbed.Record{{Name: otaName, TTL: 300, Addr: otaAddr}})
	noFirewall := def
	noFirewall.args = []string{"-d"}
	configs := []config{{"default", def}, {"-d", noFirewall}}
	figs := map[string]*loadFigs{}
	for _, c := range configs {
		figs[c.name] = &loadFigs{}
	}
	for round := range rounds {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			rigs := make([]*rig, len(configs))
			for i, c := range configs {
				rigs[i] = newRigWith(t, c.opts)
				if c.name == "default" {
					rigs[i].waitFirewall()
				}
			}
			// Alternate who goes first: the shared machine drifts.
			order := []int{0, 1}
			if round%2 == 1 {
				order = []int{1, 0}
			}
			for _, i := range order {
				rigs[i].exercise()
			}
			for _, i := range order {
				figs[configs[i].name].idle = append(figs[configs[i].name].idle, rigs[i].cpuOver(idleFor))
			}
			for _, i := range order {
				f := figs[configs[i].name]
				l := rigs[i].download(pps, loadFor)
				f.cpu = append(f.cpu, l.cpu)
				f.rate = append(f.rate, l.rate)
				f.hwm = append(f.hwm, l.hwm)
				f.rss = append(f.rss, l.rss)
				t.Logf("round %d, %s: CPU %.2f%% at %.0f packets/s (%.0f segments/s sent), peak RSS %.1f MB (now %.1f MB: anon %.1f, file %.1f)",
					round, configs[i].name, l.cpu, l.rate, l.sent, l.hwm, l.rss, l.anon, l.file)
			}
		})
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nfailover load benchmark: %d rounds, %v idle and %v at %d packets/s per daemon and round (medians)\n", rounds, idleFor, loadFor, pps)
	fmt.Fprintf(&b, "%-28s %14s %12s %10s %16s %s\n", "configuration", "packets/s", "CPU loaded", "CPU idle", "peak RSS (max)", "target")
	for _, c := range configs {
		f := figs[c.name]
		fmt.Fprintf(&b, "%-28s %14.0f %11.2f%% %9.2f%% %9.1f MB (%.1f)   CPU < 2%%, RSS < 16 MB\n",
			c.name, pct(f.rate, 50), pct(f.cpu, 50), pct(f.idle, 50), pct(f.hwm, 50), slices.Max(f.hwm))
	}
	d, n := figs["default"], figs["-d"]
	fmt.Fprintf(&b, "default / -d: CPU loaded %.2f, peak RSS %.2f\n", pct(d.cpu, 50)/pct(n.cpu, 50), pct(d.hwm, 50)/pct(n.hwm, 50))
	fmt.Println(b.String())
	t.Log(b.String())
}

// exercise gives the daemon some life before it is measured, since its
// memory grows with what it has done: a failover on carrier loss and a
// fail-back, then a failover on a silent upstream failure and a fail-back.
func (r *rig) exercise() {
	time.Sleep(1100 * time.Millisecond) // the kernel reports carrier changes at once (see above)
	r.carrier("eth0", false)
	r.waitDefault("wlan0", 10*time.Second)
	r.carrier("eth0", true)
	r.waitDefault("eth0", 30*time.Second)
	r.fault("eth0", testbed.Fault{Blackhole: true})
	r.waitDefault("wlan0", 20*time.Second)
	r.fault("eth0", testbed.Fault{})
	r.waitDefault("eth0", 30*time.Second)
}

// defaultOptions are the default configuration's: firewall on, DNS hold, a ubusd, the
// production whitelist the package installs; records are added to the cloud's DNS.
func defaultOptions(t testing.TB, records []testbed.Record) rigOptions {
	whitelist, err := os.ReadFile("../../../files/etc/af-conn/whitelist.prod")
	if err != nil {
		t.Fatal(err)
	}
	return rigOptions{whitelist: string(whitelist), ubus: true, records: records}
}

// waitFirewall waits until the daemon has its lock-down and its DNS extraction in force (the
// hold, or capture with dns_hold '0' in AFCONN_BENCH_IDLE_EXTRA).
func (r *rig) waitFirewall() {
	r.waitLog(`msg="firewall lock-down in force"`)
	r.waitLog(`msg="DNS extraction running" mode=(hold|capture)`)
}

// loadFigs collects one configuration's figures over the rounds.
type loadFigs struct{ idle, cpu, rate, hwm, rss []float64 }

// waitLog waits for a line of the daemon's log matching re.
func (r *rig) waitLog(re string) {
	r.t.Helper()
	if _, err := r.p.WaitLog(regexp.MustCompile(re), 20*time.Second); err != nil {
		r.t.Fatalf("%v\nlog:\n%s", err, r.p.Log())
	}
}

// cpuOver returns the daemon's CPU share of one core over d, in percent.
func (r *rig) cpuOver(d time.Duration) float64 {
	share := r.cpuClock()
	time.Sleep(d)
	return share()
}

// cpuClock starts timing the daemon's CPU; the function it returns gives the daemon's share of
// one core since then, in percent.
func (r *rig) cpuClock() func() float64 { return cpuClockPid(r.t, r.p.Pid()) }

// cpuClockPid is cpuClock for any process.
func cpuClockPid(t testing.TB, pid int) func() float64 {
	c0, t0 := cpuTicks(t, pid), time.Now()
	return func() float64 {
		c1, el := cpuTicks(t, pid), time.Since(t0)
		return (c1 - c0) / userHZ / el.Seconds() * 100
	}
}

// userHZ is the unit of utime and stime in /proc/PID/stat.
const userHZ = 100.0

// loadResult is what one download measured.
type loadResult struct {
	cpu  float64 // daemon CPU, percent of one core
	rate float64 // packets/s the device's eth0 received
	sent float64 // segments/s the cloud wrote
	hwm  float64 // daemon peak RSS (VmHWM), MB
	rss  float64 // daemon RSS at the end (VmRSS), MB
	anon float64 // of which anonymous memory (RssAnon), MB
	file float64 // of which file-backed (RssFile: the binary's pages), MB
}

// download has the device resolve the OTA server's name (in firewall mode
// the answer opens its pinhole), connect to it, and receive pps full-size
// segments a second for d.
func (r *rig) download(pps int, d time.Duration) loadResult {
	t := r.t
	t.Helper()
	if got := r.resolve(otaName); !slices.Contains(got, otaAddr.String()) {
		t.Fatalf("%s resolved to %v, want %s", otaName, got, otaAddr)
	}
	if err := r.w.Cloud.IP("addr add " + otaAddr.String() + "/32 dev lo"); err != nil && !strings.Contains(err.Error(), "File exists") {
		t.Fatal(err)
	}
	ln, err := r.w.Cloud.Listen("tcp4", netip.AddrPortFrom(otaAddr, otaPort).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dc, err := r.w.Device.Dial(ctx, "tcp4", netip.AddrPortFrom(otaAddr, otaPort).String())
	if err != nil {
		t.Fatalf("connect to the OTA server: %v\nlog:\n%s", err, r.p.Log())
	}
	defer dc.Close()
	sc, ok := <-accepted
	if !ok {
		t.Fatal("OTA server accepted nothing")
	}
	defer sc.Close()
	go io.Copy(io.Discard, dc)

	eth0 := r.rxPackets("eth0")
	cpuShare, start := r.cpuClock(), time.Now()
	segment := make([]byte, 1448)
	sent := 0
	for time.Since(start) < d {
		// Paced in slices of about a millisecond.
		want := int(time.Since(start).Seconds() * float64(pps))
		for ; sent < want; sent++ {
			if _, err := sc.Write(segment); err != nil {
				t.Fatalf("OTA server write: %v", err)
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
	el := time.Since(start)
	cpu := cpuShare()
	got := r.rxPackets("eth0") - eth0
	st := procStatus(t, r.p.Pid())
	return loadResult{
		cpu:  cpu,
		rate: float64(got) / el.Seconds(),
		sent: float64(sent) / el.Seconds(),
		hwm:  st["VmHWM"], rss: st["VmRSS"], anon: st["RssAnon"], file: st["RssFile"],
	}
}

// resolve asks the cloud's DNS server for name's A records from the device.
func (r *rig) resolve(name string) []string {
	r.t.Helper()
	addrs, err := r.w.ResolveA(name)
	if err != nil {
		r.t.Fatal(err)
	}
	return addrs
}

// rxPackets is how many packets dev in the device namespace received.
func (r *rig) rxPackets(dev string) uint64 {
	r.t.Helper()
	h, err := netlink.NewHandleAt(r.w.Device.Handle(r.t))
	if err != nil {
		r.t.Fatal(err)
	}
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		r.t.Fatal(err)
	}
	return l.Attrs().Statistics.RxPackets
}

// TestIdleCPUBenchmark measures the daemon's CPU share of one core while
// nothing happens: all three uplinks healthy, no traffic but connmgr's own
// probes, a ubusd on its socket as on every OpenWrt. It runs when AFCONN_BENCH_IDLE is set to the measuring time (make
// bench-idle sets it), once with -d and once with the default
// configuration, each in a world of its own, after 5 s to settle.
func TestIdleCPUBenchmark(t *testing.T) {
	d, _ := time.ParseDuration(os.Getenv("AFCONN_BENCH_IDLE"))
	if d <= 0 {
		t.Skip("set AFCONN_BENCH_IDLE=60s (measuring time) or use make bench-idle")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nidle benchmark: daemon CPU over %v, all uplinks healthy, no traffic\n", d)
	for _, c := range []struct {
		name string
		opts rigOptions
	}{{"-d", rigOptions{args: []string{"-d"}, ubus: true}}, {"default", defaultOptions(t, nil)}} {
		// AFCONN_BENCH_IDLE_EXTRA (lines for section main) takes the idle cost apart,
		// e.g. with the probes made rare.
		c.opts.extra = strings.NewReplacer(`\n`, "\n", `\t`, "\t").Replace(os.Getenv("AFCONN_BENCH_IDLE_EXTRA"))
		r := newRigWith(t, c.opts)
		if c.name == "default" {
			r.waitFirewall()
		}
		r.waitState("modemnet", "ITFUP_SS", 15*time.Second)
		// The DNS hold's watchdog is a process of its own on the router too: its CPU counts.
		dog := 0
		if m := regexp.MustCompile(`msg="DNS extraction running" .*watchdog=(\d+)`).FindStringSubmatch(r.p.Log()); m != nil {
			dog, _ = strconv.Atoi(m[1])
		}
		time.Sleep(5 * time.Second)
		dogShare := func() float64 { return 0 }
		if dog > 0 {
			dogShare = cpuClockPid(t, dog)
		}
		daemon := r.cpuOver(d)
		w := dogShare()
		line := fmt.Sprintf("%-10s %6.2f%% of one core (daemon %.2f%%, DNS watchdog %.2f%%)   target <= 0.2%%", c.name, daemon+w, daemon, w)
		fmt.Println(line)
		b.WriteString(line + "\n")
		if err := r.p.Stop(10 * time.Second); err != nil {
			t.Log(err)
		}
	}
	fmt.Println(b.String())
	t.Log(b.String())
}
