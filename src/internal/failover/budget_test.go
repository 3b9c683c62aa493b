package failover

import (
	"testing"
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

// probe_budget is the uplink's, not each family's: a dual-stack uplink's two controllers share
// it (Settings.Sharers: the families in which it is up), so both families' routine rounds
// together keep within it; an uplink up in one family only gives that family all of it. Both
// controllers run side by side for three hours of idle hub, each on its own family's view of
// the same devices, and their rounds' bytes are added up.
func TestProbeBudgetPerUplink(t *testing.T) {
	const cost = 870 // echo with the name's resolution
	wwanDual := dual("198.18.30.2/24", "198.18.30.1", "2001:db8:30::2/64", "fe80::30")
	wwan4 := dual("198.18.30.2/24", "198.18.30.1", "", "")
	down := uplink.Device{Present: true, AdminUp: true}
	cases := []struct {
		name     string
		devs     map[string]uplink.Device
		inUse    bool    // modemnet carries the default routes (else ethnet does)
		perHour  float64 // the budget of modemnet's role
		shared   bool    // the controllers share the budget (false: as before, each had all of it)
		min, max float64 // modemnet's routine probe bytes an hour, both families
	}{
		{"dual-stack cellular in use", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanDual}, true, 50_000, true, 45_000, 50_000},
		{"IPv4-only cellular in use: one family, the whole budget", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwan4}, true, 50_000, true, 45_000, 50_000},
		{"IPv6-only cellular in use", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanV6}, true, 50_000, true, 45_000, 50_000},
		{"dual-stack cellular standby", map[string]uplink.Device{"eth0": ethDual, "wlan0": wlanDual, "wwan0": wwanDual}, false, 20_000, true, 15_000, 20_000},
		{"without sharing, twice the budget (the bug)", map[string]uplink.Device{"eth0": down, "wlan0": down, "wwan0": wwanDual}, true, 50_000, false, 90_000, 100_000},
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
				st.Uplinks[2].ProbeCost = cost
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
			before := sims[0].started["modemnet"] + sims[1].started["modemnet"]
			const hours = 3
			run(hours * time.Hour)
			rounds := sims[0].started["modemnet"] + sims[1].started["modemnet"] - before
			perHour := float64(rounds*cost) / hours
			t.Logf("%d rounds in %d h: %.0f bytes an hour (IPv4 %d, IPv6 %d rounds in all), budget %.0f",
				rounds, hours, perHour, sims[0].started["modemnet"], sims[1].started["modemnet"], tc.perHour)
			// The window's edges may hold one round more per family.
			if slack := float64(2*cost) / hours; perHour < tc.min || perHour > tc.max+slack {
				t.Errorf("modemnet's rounds spent %.0f bytes an hour, want %.0f to %.0f", perHour, tc.min, tc.max)
			}
		})
	}
}
