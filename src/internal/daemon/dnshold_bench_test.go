package daemon_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
)

// The DNS hold benchmark with the real daemon (root; prints figures, asserts only that DNS
// answers):
//
//	cd src && sudo AFCONN_BENCH=1 CONNMGR_BIN=$PWD/../build/connmgr go test ./internal/daemon -run TestBenchDNSHold -v -count=1 -timeout 30m
//
// AFCONN_BENCH_BACKENDS (default "nftables,iptables"), AFCONN_BENCH_ADDRS (addresses in the
// firewall during the restores, default 65536). In hold mode, for each backend:
//  1. idle: 500 lookups of a whitelisted name one after the other; the client's round trip
//     (the reply is held until its pinholes are in the set) and the daemon's own hold times;
//  2. restore: the firewall given AFCONN_BENCH_ADDRS addresses (ubus allow), then
//     `connmgr fw restore` run back to back while the device keeps looking up: the round trip
//     of the lookups that overlapped a restore, and the daemon's longest hold;
//  3. stopped: five times, SIGSTOP connmgr and time until a lookup (1 s per try, retried) is
//     answered, then SIGCONT.
func TestBenchDNSHold(t *testing.T) {
	backends := benchBackends(t)
	addrs := 65536
	if n, err := strconv.Atoi(os.Getenv("AFCONN_BENCH_ADDRS")); err == nil && n >= 0 {
		addrs = n
	}
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			e := newE2E(t, backend)
			line := e.waitLog(0, `msg="DNS extraction running" mode=hold .*watchdog=\d+`)
			dog := regexp.MustCompile(`watchdog=(\d+)`).FindStringSubmatch(line)[1]
			e.benchIdleCPU(dog)
			e.benchIdle()
			e.benchRestore(addrs)
			e.benchStopped()
			rss, _ := os.ReadFile("/proc/" + dog + "/status")
			for _, f := range []string{"VmRSS", "RssAnon", "RssFile"} {
				if m := regexp.MustCompile(f + `:\s+(\d+ kB)`).FindSubmatch(rss); m != nil {
					t.Logf("%s: watchdog process %s %s", backend, f, m[1])
				}
			}
		})
	}
}

// cpuTicks is a process's user + system time in clock ticks (/proc/PID/stat fields 14, 15).
func cpuTicks(t *testing.T, pid string) int {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return u + s
}

// benchIdleCPU reports the CPU the watchdog and connmgr use in 20 idle seconds.
func (e *e2e) benchIdleCPU(dog string) {
	const idle = 20 * time.Second
	pid := strconv.Itoa(e.p.Pid())
	d0, c0 := cpuTicks(e.t, dog), cpuTicks(e.t, pid)
	time.Sleep(idle)
	d1, c1 := cpuTicks(e.t, dog), cpuTicks(e.t, pid)
	// 100 ticks a second (USER_HZ).
	share := func(t int) string { return strconv.FormatFloat(float64(t)/idle.Seconds(), 'f', 2, 64) + " %" }
	e.t.Logf("%s idle %v: watchdog CPU %s of one core, connmgr %s", e.backend, idle, share(d1-d0), share(c1-c0))
}

// timedLookup resolves api.afero.io once and returns the round trip.
func (e *e2e) timedLookup() (time.Time, time.Duration) {
	start := time.Now()
	if got, _, err := e.lookupRetrying("api.afero.io", 5*time.Second); err != nil || len(got) != 2 {
		e.t.Fatalf("lookup: %v %v", got, err)
	}
	return start, time.Since(start)
}

func durs(s []time.Duration) string {
	if len(s) == 0 {
		return "none"
	}
	s = slices.Clone(s)
	slices.Sort(s)
	p := func(q int) time.Duration { return s[min(len(s)-1, len(s)*q/100)].Round(10 * time.Microsecond) }
	return "n=" + strconv.Itoa(len(s)) + " p50=" + p(50).String() + " p99=" + p(99).String() + " max=" + s[len(s)-1].Round(10*time.Microsecond).String()
}

// holdStatus reads the daemon's hold figures.
func (e *e2e) holdStatus() string {
	var out string
	var err error
	// A daemon busy with a restore answers late: try for a minute.
	for try := 0; try < 12; try++ {
		if out, err = e.w.Device.Run(testbed.Connmgr(e.t), "status", "--json", "-s", filepath.Join(e.dir, "ubus.sock")); err == nil {
			break
		}
	}
	if err != nil {
		return "daemon status unavailable: " + err.Error()
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status: %v", err)
	}
	f := st.Firewall
	return "daemon hold p99=" + (time.Duration(f.DNSHoldP99us) * time.Microsecond).String() +
		" max=" + (time.Duration(f.DNSHoldMaxus) * time.Microsecond).String() +
		" released_late=" + strconv.FormatUint(f.DNSReleasedLate, 10)
}

func (e *e2e) benchIdle() {
	var rtt []time.Duration
	for i := 0; i < 500; i++ {
		_, d := e.timedLookup()
		rtt = append(rtt, d)
	}
	e.t.Logf("%s idle: lookup round trip %s; %s", e.backend, durs(rtt), e.holdStatus())
}

// benchAllowed is the i-th address given to the firewall (198.18.128.0 onwards).
func benchAllowed(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18 + byte((128+i/256)/256), byte((128 + i/256) % 256), byte(i % 256)})
}

func (e *e2e) benchRestore(n int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := ubus.Dial(ctx, filepath.Join(e.dir, "ubus.sock"))
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	id, err := c.LookupID(ctx, daemon.ObjectName)
	if err != nil {
		e.t.Fatal(err)
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		if _, err := c.Invoke(ctx, id, "allow", ubus.Table{{Name: "address", Value: benchAllowed(i).String()}}); err != nil {
			e.t.Fatalf("allow %d (%s): %v", i, benchAllowed(i), err)
		}
	}
	e.t.Logf("%s: %d addresses allowed over ubus in %v", e.backend, n, time.Since(t0).Round(time.Millisecond))
	type span struct{ from, to time.Time }
	var restores, lookups []span
	var outs []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 5; i++ {
			s := time.Now()
			out, err := e.w.Device.Run(testbed.Connmgr(e.t), "fw", "-s", filepath.Join(e.dir, "ubus.sock"), "restore")
			restores = append(restores, span{s, time.Now()})
			if err != nil {
				outs = append(outs, strings.TrimSpace(out+" "+err.Error()))
			}
		}
	}()
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		s, d := e.timedLookup()
		lookups = append(lookups, span{s, s.Add(d)})
	}
	var during, all []time.Duration
	for _, l := range lookups {
		all = append(all, l.to.Sub(l.from))
		for _, r := range restores {
			if l.from.Before(r.to) && l.to.After(r.from) {
				during = append(during, l.to.Sub(l.from))
				break
			}
		}
	}
	var took []time.Duration
	for _, r := range restores {
		took = append(took, r.to.Sub(r.from))
	}
	e.t.Logf("%s restore with %d addresses: restore took %s (errors: %q); lookups overlapping a restore %s, all %s; %s",
		e.backend, n, durs(took), outs, durs(during), durs(all), e.holdStatus())
}

func (e *e2e) benchStopped() {
	var back []time.Duration
	for i := 0; i < 5; i++ {
		e.sigstop()
		_, took, err := e.lookupRetrying("api.afero.io", 10*time.Second)
		e.p.Signal(syscall.SIGCONT)
		if err != nil {
			e.t.Fatalf("stopped: %v", err)
		}
		back = append(back, took)
		time.Sleep(time.Second)
	}
	e.t.Logf("%s stopped (SIGSTOP): DNS answered after %s", e.backend, durs(back))
}
