package usage

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/probe"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
)

// wireBytes reads eth0's counters in the device namespace.
func wireBytes(t *testing.T, w *testbed.World) Bytes {
	t.Helper()
	var m map[string]Bytes
	if err := w.Device.Do(func() (err error) {
		m, err = ReadNetDev("/proc/thread-self/net/dev")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return m["eth0"]
}

// TestProbeCostOnTheWire measures what one round of each probe method
// costs on eth0 (the device's link counters, both ways), in each family,
// and holds the costs of cost.go to it (within 10 %): the budgets'
// arithmetic rests on them. IPv4 in an IPv4-only world, IPv6 in a
// dual-stack one (static routes: no router advertisements on the wire).
func TestProbeCostOnTheWire(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) {
		w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
		if _, err := w.StartDNS(testbed.DefaultRecords()); err != nil {
			t.Fatal(err)
		}
		// An IPv4-only world serves no HTTP of its own.
		l, err := w.Cloud.Listen("tcp4", "198.19.0.1:8204")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) })}
		go srv.Serve(l)
		defer srv.Close()
		u := w.MustUplink("eth0")
		// Without IPv6 on the link: the kernels' own router solicitations (both ends, backing
		// off from 4 s) are no probe's bytes.
		noIPv6(t, w.Device, "eth0")
		noIPv6(t, u.Router, "todev")
		holdCosts(t, w, "ipv4", probe.Target{Device: "eth0", Source: u.Addr, DNS: []netip.Addr{testbed.DNSAddr}, Namespace: w.Device.Handle(t)}, Costs4)
	})
	t.Run("ipv6", func(t *testing.T) {
		w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}, IPv6: testbed.V6Static})
		if _, err := w.StartDNS(append(testbed.DefaultRecords(), testbed.DefaultRecords6()...)); err != nil {
			t.Fatal(err)
		}
		u := w.MustUplink("eth0")
		// Both resolvers, as the uplink has them: the round's family's is asked first.
		holdCosts(t, w, "ipv6", probe.Target{Device: "eth0", Source: u.Addr6, DNS: []netip.Addr{testbed.DNSAddr, testbed.DNS6Addr}, Namespace: w.Device.Handle(t)}, Costs6)
	})
}

// noIPv6 disables IPv6 on dev in ns.
func noIPv6(t *testing.T, ns *testbed.NS, dev string) {
	t.Helper()
	if err := ns.Sysctl("net.ipv6.conf."+dev+".disable_ipv6", "1"); err != nil {
		t.Fatal(err)
	}
}

// holdCosts measures the rounds of target tg's family and compares them with want.
func holdCosts(t *testing.T, w *testbed.World, family string, tg probe.Target, want Cost) {
	// 20 rounds back to back (10 of the rare ones): a neighbour check now and then (the
	// entries' own expiry) is 4 to 8 bytes a round.
	measure := func(cfg probe.Config, gap time.Duration) float64 {
		n := 20
		if gap > 0 {
			n = 10
		}
		p, err := probe.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r := p.Probe(context.Background(), tg, 2*time.Second, 2*time.Second); !r.OK {
			t.Fatalf("%s: %+v", cfg.Method, r)
		}
		time.Sleep(max(gap, 200*time.Millisecond))
		before := wireBytes(t, w)
		for range n {
			// One attempt per round (hedge = timeout): only what a round
			// on a healthy link costs.
			if r := p.Probe(context.Background(), tg, 2*time.Second, 2*time.Second); !r.OK {
				t.Fatalf("%s: %+v", cfg.Method, r)
			}
			time.Sleep(gap)
		}
		time.Sleep(200 * time.Millisecond) // the last FIN's ACK
		return float64(wireBytes(t, w).sub(before).Total()) / float64(n)
	}
	echoCfg := probe.Config{Method: probe.Echo, Host: "echo.afero.io", Port: testbed.EchoPort}
	echo := measure(echoCfg, 0)
	resolving := echoCfg
	resolving.DNSTTL = time.Nanosecond
	echoDNS := measure(resolving, 0)
	icmp := measure(probe.Config{Method: probe.ICMP, Host: "echo.afero.io"}, 0)
	httpc := measure(probe.Config{Method: probe.HTTP, URL: "http://echo.afero.io:8204/generate_204"}, 0)
	// A rare round (a budgeted one: a minute or more since the last) also finds the neighbour
	// entries stale at both ends: the device checks its entry for the gateway, the router its
	// entry for the device (ARP, or neighbour solicitation and advertisement)
	// delay_first_probe_time after the round. The neighbour timers are shortened so that it
	// happens within a second or two; the bytes are the same.
	for _, end := range []struct {
		ns  *testbed.NS
		dev string
	}{{w.Device, "eth0"}, {w.MustUplink("eth0").Router, "todev"}} {
		for k, v := range map[string]string{"base_reachable_time_ms": "500", "delay_first_probe_time": "1"} {
			if err := end.ns.Sysctl(fmt.Sprintf("net.%s.neigh.%s.%s", family, end.dev, k), v); err != nil {
				t.Fatal(err)
			}
		}
	}
	rare := measure(resolving, 2500*time.Millisecond)
	t.Logf("%s: bytes per round on eth0 (Ethernet frames): echo %.0f, echo resolving the name %.0f (DNS %.0f), a rare round (name and neighbour) %.0f (neighbour %.0f), icmp %.0f, http %.0f",
		family, echo, echoDNS, echoDNS-echo, rare, rare-echoDNS, icmp, httpc)
	for _, c := range []struct {
		what      string
		got, want float64
		least     float64 // of want
	}{
		{"echo", echo, float64(want.Echo), 0.9}, {"dns", echoDNS - echo, float64(want.DNS), 0.9},
		// Not every rare round brings both checks (an entry may still be fresh or be
		// confirmed by the round's TCP; measured 40 to 95 % of both): cost.go counts both,
		// the most.
		{"neighbour", rare - echoDNS, float64(want.Neighbor), 0.25},
		{"icmp", icmp, float64(want.ICMP), 0.9}, {"http", httpc, float64(want.HTTP), 0.9},
	} {
		if c.got < c.want*c.least || c.got > c.want*1.1 {
			t.Errorf("%s %s: %.0f bytes a round on the wire, cost.go says %.0f", family, c.what, c.got, c.want)
		}
	}
}

// What a round is charged, by method, rarity and family, and the least interval the default
// cellular budgets give each family (one family alone, and half the budget each when the
// uplink is dual-stack): an IPv6 round charged at IPv4's cost came 1038/1456 as far apart.
func TestProbeCostByFamily(t *testing.T) {
	for _, c := range []struct {
		method     string
		rare, ipv6 bool
		want       int
	}{
		{"echo", false, false, 690}, {"echo", true, false, 1038}, {"echo", false, true, 890}, {"echo", true, true, 1456},
		{"icmp", false, false, 108}, {"icmp", true, true, 140 + 238 + 328},
		{"http", true, false, 860 + 180 + 168}, {"http", false, true, 1060},
		{"", false, false, 690}, // the default method is echo
	} {
		if got := ProbeCost(c.method, c.rare, c.ipv6); got != c.want {
			t.Errorf("ProbeCost(%q, rare %v, ipv6 %v) = %d, want %d", c.method, c.rare, c.ipv6, got, c.want)
		}
	}
	for _, c := range []struct {
		what    string
		ipv6    bool
		perHour float64
		want    time.Duration
	}{
		{"cellular in use, IPv4 alone", false, 50_000, 75 * time.Second}, // 74.7 s
		{"cellular in use, IPv6 alone", true, 50_000, 105 * time.Second}, // 104.8 s
		{"cellular in use, dual-stack: IPv4's half", false, 25_000, 150 * time.Second},
		{"cellular in use, dual-stack: IPv6's half", true, 25_000, 210 * time.Second},
		{"cellular standby (1M/month), IPv4 alone", false, 1e6 / 720, 2691 * time.Second}, // 44.9 min
		{"cellular standby (1M/month), dual-stack: IPv6's half", true, 1e6 / 720 / 2, 7548 * time.Second},
	} {
		if got := uplink.BudgetFloor(ProbeCost("echo", true, c.ipv6), c.perHour); got != c.want {
			t.Errorf("%s: a round every %v, want %v", c.what, got, c.want)
		}
	}
}
