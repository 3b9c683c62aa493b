package failover

import (
	"testing"
	"time"

	"github.com/afero/af-conn/internal/uplink"
	"github.com/afero/af-conn/internal/usage"
)

// probe_budget is the uplink's, not each family's: a dual-stack uplink's two controllers share
// it (Settings.Sharers: the families in which it is up), so both families' routine rounds
// together keep within it; an uplink up in one family only gives that family all of it. Both
// controllers run side by side for three hours of idle hub (a day for the default standby
// budget), on the simulated clock, each on its own family's view of the same devices, and
// their rounds' bytes on the wire are added up, each family's at its own cost: a family
// budgeted at another's cost would spend more (or less) than its share.
func TestProbeBudgetPerUplink(t *testing.T) {
	// A budgeted round on the wire, with the name's resolution and the next hop's neighbour
	// check: IPv6's is dearer (longer headers, AAAA, neighbour solicitation).
	cost4, cost6 := usage.ProbeCost("echo", true, false), usage.ProbeCost("echo", true, true)
	wwanDual := dual("198.18.30.2/24", "198.18.30.1", "2001:db8:30::2/64", "fe80::30")
	wwan4 := dual("198.18.30.2/24", "198.18.30.1", "", "")
	down := uplink.Device{Present: true, AdminUp: true}
	cases := []struct {
		name     string
		devs     map[string]uplink.Device
		inUse    bool    // modemnet carries the default routes (else ethnet does)
		perHour  float64 // the budget of modemnet's role
		shared   bool    // the controllers share the budget (false: as before, each had all of it)
		budget6  int     // what the IPv6 controller is told an IPv6 round costs (its rounds cost cost6 on the wire)
		min, max float64 // modemnet's routine probe bytes an hour on the wire, both families
	}{
		{"dual-stack cellular in use", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanDual}, true, 50_000, true, cost6, 45_000, 50_000},
		{"IPv4-only cellular in use: one family, the whole budget", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwan4}, true, 50_000, true, cost6, 45_000, 50_000},
		{"IPv6-only cellular in use", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanV6}, true, 50_000, true, cost6, 45_000, 50_000},
		{"dual-stack cellular standby", map[string]uplink.Device{"eth0": ethDual, "wlan0": wlanDual, "wwan0": wwanDual}, false, 20_000, true, cost6, 15_000, 20_000},
		{"dual-stack cellular standby, 1M/month", map[string]uplink.Device{"eth0": ethDual, "wlan0": wlanDual, "wwan0": wwanDual}, false, 1e6 / 720, true, cost6, 1e6 / 720 * 0.8, 1e6 / 720},
		{"without sharing, twice the budget (the bug)", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanDual}, true, 50_000, false, cost6, 90_000, 100_000},
		// IPv6's share spent at IPv4's price: its rounds cost cost6/cost4 of its share.
		{"IPv6 budgeted at IPv4's cost (the bug)", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanDual}, true, 50_000, true, cost4,
			25_000 * (1 + float64(cost6)/float64(cost4)) * 0.95, 25_000 * (1 + float64(cost6)/float64(cost4))},
		{"IPv6-only budgeted at IPv4's cost (the bug)", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanV6}, true, 50_000, true, cost4,
			50_000 * float64(cost6) / float64(cost4) * 0.95, 50_000 * float64(cost6) / float64(cost4)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var sims []*famSim
			sharers := func(name string) int {
				n := 0
				for _, s := range sims {
					if s.c.Probed(name) {
						n++
					}
				}
				return n
			}
			for _, f := range []uplink.Family{uplink.IPv4, uplink.IPv6} {
				s := newFamSim(t, f, tc.devs)
				st := idleSettings()
				st.Family = f
				st.Intervals.Cellular = time.Second // the budget alone sets the pace
				st.Uplinks[2].ProbeCost = cost4
				if f == uplink.IPv6 {
					st.Uplinks[2].ProbeCost = tc.budget6
				}
				st.Uplinks[2].ProbeBudget, st.Uplinks[2].ProbeBudgetStandby = tc.perHour, tc.perHour
				if tc.shared {
					st.Sharers = sharers
				}
				s.c.Configure(st)
				sims = append(sims, s)
			}
			run := func(d time.Duration) {
				for end := sims[0].now.Add(d); sims[0].now.Before(end); {
					for _, s := range sims {
						s.run(s.now.Add(time.Second))
					}
				}
			}
			run(10 * time.Minute) // the first rounds (new uplinks are proven quickly) are over
			if sel := sims[0].c.Selected() + sims[1].c.Selected(); tc.inUse != (sel == "modemnet" || sel == "modemnetmodemnet") {
				t.Fatalf("selected %q and %q", sims[0].c.Selected(), sims[1].c.Selected())
			}
			before4, before6 := sims[0].started["modemnet"], sims[1].started["modemnet"]
			// Long enough for a few rounds of the rarest budget (1M/month: one every 41 min).
			hours := 3
			if tc.perHour < 10_000 {
				hours = 24
			}
			run(time.Duration(hours) * time.Hour)
			r4, r6 := sims[0].started["modemnet"]-before4, sims[1].started["modemnet"]-before6
			// On the wire each family's rounds cost its own.
			perHour := float64(r4*cost4+r6*cost6) / float64(hours)
			t.Logf("%d IPv4 rounds (%d bytes each) and %d IPv6 rounds (%d bytes each) in %d h: %.0f bytes an hour, budget %.0f",
				r4, cost4, r6, cost6, hours, perHour, tc.perHour)
			// The window's edges may hold one round more per family.
			if slack := float64(cost4+cost6) / float64(hours); perHour < tc.min || perHour > tc.max+slack {
				t.Errorf("modemnet's rounds spent %.0f bytes an hour on the wire, want %.0f to %.0f", perHour, tc.min, tc.max)
			}
		})
	}
}
