package failover_test

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
	"github.com/afero/af-conn/internal/usage"
)

// standbyFigure is what a cellular standby spent on its device over a window: every byte on
// wwan0's link counters, both ways, while Ethernet was in use and healthy and the hub idle.
type standbyFigure struct {
	budget        string        // probe_budget_standby as configured
	perHour       float64       // the same in bytes per hour
	floor, window time.Duration // the least interval between rounds the budget allows; the window
	rounds        uint64        // rounds connmgr started on modemnet in the window (its status)
	bytes         uint64        // all bytes on wwan0 in the window
}

// proRata is what the budget allows over the window.
func (f standbyFigure) proRata() float64 { return f.perHour * f.window.Hours() }

// measureStandby runs the default configuration (firewall, DNS hold, ubus, production
// whitelist) with modemnet's probe_budget_standby set to budget and counts every byte on wwan0
// (IPv4 only) over n budgeted intervals. The window starts 5 s after modemnet is proven (its last
// confirming round), so it holds n routine rounds if the budget is kept. When the budget allows
// rounds more often than cellular_probe_interval's default (5 min), that interval is set to
// 1 s, so the budget alone sets the pace.
func measureStandby(t *testing.T, budget string, n int) standbyFigure {
	perHour, ok := config.ParseBudget(budget)
	if !ok || perHour <= 0 {
		t.Fatalf("budget %q: want e.g. 20M/month", budget)
	}
	// A cellular standby's rounds are budgeted rounds: they resolve the name each time.
	floor := uplink.BudgetFloor(usage.ProbeCost("echo", true, false), perHour)
	extra := ""
	if floor < 5*time.Minute {
		extra = "\toption cellular_probe_interval '1s'\n"
	}
	// Once one uplink has a section, only those with one are uplinks.
	extra += "\nconfig uplink 'ethnet'\n\toption type 'ethernet'\n\nconfig uplink 'stanet'\n\toption type 'wifi'\n" +
		"\nconfig uplink 'modemnet'\n\toption type 'cellular'\n\toption probe_budget_standby '" + budget + "'\n"
	o := defaultOptions(t, nil)
	o.extra = extra
	r := newRigWith(t, o)
	r.waitFirewall()
	r.waitState("modemnet", "ITFUP_SS", 30*time.Second)
	// The world's IPv4-only wwan0 is a veth with IPv6 on: its kernel and the router's would
	// send router solicitations of their own (70 bytes each, backing off from 4 s to an hour),
	// which are no probe's and which a raw-IP modem without IPv6 does not send.
	for _, s := range []struct {
		ns  *testbed.NS
		dev string
	}{{r.w.Device, "wwan0"}, {r.w.MustUplink("wwan0").Router, "todev"}} {
		if err := s.ns.Sysctl("net.ipv6.conf."+s.dev+".disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(5 * time.Second)
	changes := r.watch.count()
	st := byNetworkStatus(t, r.status(), "modemnet")
	if st.BudgetIntervalS != int64(floor/time.Second) {
		t.Fatalf("modemnet's budget_interval is %d s, want %v (%s at %d bytes a round)", st.BudgetIntervalS, floor, budget, usage.ProbeCost("echo", true, false))
	}
	f := standbyFigure{budget: budget, perHour: perHour, floor: floor, window: time.Duration(n) * floor}
	before := linkBytes(t, r.w, "wwan0")
	time.Sleep(f.window)
	f.bytes = linkBytes(t, r.w, "wwan0") - before
	f.rounds = byNetworkStatus(t, r.status(), "modemnet").ProbeRounds - st.ProbeRounds
	if r.watch.count() != changes || r.watch.dev != "eth0" {
		t.Fatalf("the default route moved during the window (now via %q): not a standby's bytes\nlog:\n%s", r.watch.dev, r.p.Log())
	}
	t.Logf("probe_budget_standby %s (%.0f bytes/h, a round every %v): %d rounds, %d bytes on wwan0 in %v; the budget pro rata %.0f",
		budget, perHour, floor, f.rounds, f.bytes, f.window, f.proRata())
	return f
}

// byNetworkStatus returns network's part of a status.
func byNetworkStatus(t *testing.T, s daemon.Status, name string) daemon.UplinkStatus {
	t.Helper()
	for _, u := range s.Uplinks {
		if u.Network == name {
			return u
		}
	}
	t.Fatalf("no uplink %s in the status", name)
	return daemon.UplinkStatus{}
}

// A cellular standby keeps to probe_budget_standby, counted on the wire: every byte on
// wwan0's link counters, both ways, over three budgeted intervals while Ethernet is in use and
// healthy, within the budget pro rata (10 %: the budget is kept with 1038 bytes a round, what
// a round with its name's resolution and both ends' ARP checks measured,
// TestProbeCostOnTheWire) and not far below it (the standby is probed at all). It runs beside
// the other tests: it mostly waits. cellular_probe_interval is 1 s: the budget alone keeps the
// rounds apart.
func TestE2EStandbyBudgetOnTheWire(t *testing.T) {
	t.Parallel()
	f := measureStandby(t, "100K/h", 3)
	if got, want := float64(f.bytes), f.proRata(); got > want*1.1 || got < want*0.5 {
		t.Errorf("a cellular standby with probe_budget_standby %s spent %d bytes on wwan0 in %v (%d rounds), the budget pro rata is %.0f",
			f.budget, f.bytes, f.window, f.rounds, want)
	}
}

// TestStandbyBytesBenchmark measures what a cellular standby costs (BENCHMARKS.md, issue 13):
// every byte on wwan0, both ways, while Ethernet is in use and healthy, at each budget of
// AFCONN_BENCH_STANDBY ("BUDGET:ROUNDS,...", e.g. "20M/month:4,40M/month:8"; make
// bench-standby), over ROUNDS budgeted intervals, next to the budget pro rata.
func TestStandbyBytesBenchmark(t *testing.T) {
	spec := os.Getenv("AFCONN_BENCH_STANDBY")
	if spec == "" {
		t.Skip("set AFCONN_BENCH_STANDBY=BUDGET:ROUNDS,... (e.g. 20M/month:4) or use make bench-standby")
	}
	var figs []standbyFigure
	for _, item := range strings.Split(spec, ",") {
		budget, rounds, _ := strings.Cut(strings.TrimSpace(item), ":")
		n, err := strconv.Atoi(rounds)
		if err != nil || n <= 0 {
			t.Fatalf("AFCONN_BENCH_STANDBY item %q: want BUDGET:ROUNDS, e.g. 20M/month:4", item)
		}
		t.Run(budget, func(t *testing.T) { figs = append(figs, measureStandby(t, budget, n)) })
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\ncellular standby, Ethernet in use, idle hub: all bytes on wwan0 (both ways, Ethernet frames)\n")
	fmt.Fprintf(&b, "%-14s %10s %8s %7s %9s %9s %10s %7s %12s\n", "budget", "interval", "window", "rounds", "bytes", "bytes/rd", "pro rata", "ratio", "a month")
	for _, f := range figs {
		perRound := 0.0
		if f.rounds > 0 {
			perRound = float64(f.bytes) / float64(f.rounds)
		}
		fmt.Fprintf(&b, "%-14s %10v %8v %7d %9d %9.0f %10.0f %7.3f %10.2fMB\n", f.budget, f.floor, f.window, f.rounds, f.bytes, perRound,
			f.proRata(), float64(f.bytes)/f.proRata(), float64(f.bytes)/f.window.Hours()*720/1e6)
	}
	fmt.Println(b.String())
	t.Log(b.String())
}

// A dual-stack cellular uplink in use and idle keeps to its probe_budget counted on the wire:
// every byte on wwan0, both ways, both families, over about three minutes (4-5 IPv4 rounds, 3-4
// IPv6 rounds), within the budget pro rata (run beside the other tests: it mostly waits). The budget is the uplink's: each family gets half, and its rounds are charged at their
// own cost (a budgeted IPv6 round is about 420 bytes dearer than an IPv4 one); budgeted at
// IPv4's cost, IPv6's rounds came 105/75 as often and the uplink spent over its budget. The world has wwan0
// alone, with static IPv6 (no router advertisements on the wire), so it is in use from the
// start and both families' rounds run from when they were proven.
func TestE2EDualStackCellularBudgetOnTheWire(t *testing.T) {
	t.Parallel()
	const budget = "200K/h"
	perHour, _ := config.ParseBudget(budget)
	o := defaultOptions(t, testbed.DefaultRecords6())
	o.world = testbed.Options{Uplinks: []string{"wwan0"}, IPv6: testbed.V6Static}
	o.noWait = true
	o.extra = "\nconfig uplink 'modemnet'\n\toption type 'cellular'\n\toption probe_budget '" + budget + "'\n"
	r := newRigWith(t, o)
	for _, f := range []string{"ipv4", "ipv6"} {
		if _, err := r.p.WaitLog(uplinkUp("modemnet", f), 30*time.Second); err != nil {
			t.Fatalf("modemnet %s never proven: %v\nlog:\n%s", f, err, r.p.Log())
		}
	}
	r.waitDefault("wwan0", 10*time.Second)
	proven := time.Now()
	// Each family's routine rounds come every floor from its last confirming round (about
	// now): the window ends where neither family has a round within 8 s of it, so its edges
	// cut no round in two.
	floors := []time.Duration{
		uplink.BudgetFloor(usage.ProbeCost("echo", true, false), perHour/2),
		uplink.BudgetFloor(usage.ProbeCost("echo", true, true), perHour/2),
	}
	const start = 3 * time.Second
	end, margin := 150*time.Second, time.Duration(0)
	for e := 150 * time.Second; e <= 210*time.Second; e += time.Second {
		m := time.Hour
		for _, f := range floors {
			d := e % f
			m = min(m, d, f-d)
		}
		if m > margin {
			end, margin = e, m
		}
	}
	if margin < 8*time.Second {
		t.Fatalf("no window end clear of the rounds (floors %v)", floors)
	}
	time.Sleep(time.Until(proven.Add(start)))
	st := byNetworkStatus(t, r.status(), "modemnet")
	if want := int64(max(floors[0], floors[1]) / time.Second); st.BudgetIntervalS != want {
		t.Errorf("modemnet's budget_interval %d s, want %d (floors %v)", st.BudgetIntervalS, want, floors)
	}
	before := linkBytes(t, r.w, "wwan0")
	time.Sleep(time.Until(proven.Add(end)))
	n := linkBytes(t, r.w, "wwan0") - before
	window := end - start
	rounds := byNetworkStatus(t, r.status(), "modemnet").ProbeRounds - st.ProbeRounds
	proRata := perHour * window.Hours()
	t.Logf("probe_budget %s (rounds every %v in IPv4, %v in IPv6): %d rounds, %d bytes on wwan0 in %v; the budget pro rata %.0f (%.2f)",
		budget, floors[0], floors[1], rounds, n, window, proRata, float64(n)/proRata)
	if float64(n) > proRata || float64(n) < proRata/2 {
		t.Errorf("a dual-stack cellular uplink in use with probe_budget %s spent %d bytes on wwan0 in %v (%d rounds), the budget pro rata is %.0f\nlog:\n%s",
			budget, n, window, rounds, proRata, r.p.Log())
	}
}
