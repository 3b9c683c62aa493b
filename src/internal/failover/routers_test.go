package failover

import (
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

var (
	ethGW   = netip.MustParseAddr("198.18.10.1")
	rogueGW = netip.MustParseAddr("198.18.10.66")
	thirdGW = netip.MustParseAddr("198.18.10.77")
)

// ethRouters is Ethernet's snapshot with routers on its link, best (the kernel's pick) first.
func ethRouters(gws ...netip.Addr) uplink.Device {
	d := ethDev
	d.Gateway, d.Routers = gws[0], gws
	return d
}

// A router that appears beside the one in use, ranked above it (an RA of high preference),
// does not take a proven uplink: no route change, no state change.
func TestNewRouterDoesNotTakeProvenUplink(t *testing.T) {
	s := newSim(t)
	s.deadRouters = map[netip.Addr]bool{rogueGW: true}
	states := len(s.states)
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethRouters(rogueGW, ethGW)})
	s.run(s.now.Add(10 * time.Second))
	if gw := s.gateway("ethnet"); gw != ethGW {
		t.Fatalf("Ethernet routed through %v, want %v (the proven router)", gw, ethGW)
	}
	if len(s.states) != states || s.c.Selected() != "ethnet" {
		t.Fatalf("states %v, selected %q", s.states[states:], s.c.Selected())
	}
}

// The best-ranked router is a black hole from the start: the family fails through it, moves
// to the link's next router, recovers through it and takes the route back; the black hole is
// not used again while the other works, also after further snapshots.
func TestFailedRouterLeftForNext(t *testing.T) {
	s := newSim(t)
	s.deadRouters = map[netip.Addr]bool{rogueGW: true}
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": dev("198.18.10.2/24", "198.18.10.66")}) // the rogue alone first
	s.until(5*time.Second, "Ethernet failed through the black hole", func() bool { return s.c.Selected() == "stanet" })
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethRouters(rogueGW, ethGW)})
	took := s.until(10*time.Second, "Ethernet back through its working router", func() bool {
		return s.c.Selected() == "ethnet" && s.gateway("ethnet") == ethGW
	})
	t.Logf("back on Ethernet %v after the second router came", took)
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethRouters(rogueGW, ethGW)})
	s.run(s.now.Add(20 * time.Second))
	if s.c.Selected() != "ethnet" || s.gateway("ethnet") != ethGW {
		t.Fatalf("selected %q through %v", s.c.Selected(), s.gateway("ethnet"))
	}
}

// Every router of the link dead: the family stays failed and each is tried in turn, none kept
// for good; the routers failed stay a subset of those offered. When the third router appears
// and works, the uplink comes back through it.
func TestAllRoutersDeadCycles(t *testing.T) {
	s := newSim(t)
	s.deadRouters = map[netip.Addr]bool{rogueGW: true, ethGW: true}
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethRouters(ethGW, rogueGW)})
	s.until(5*time.Second, "Ethernet failed", func() bool { return s.c.Selected() == "stanet" })
	seen := map[netip.Addr]bool{}
	for range 200 {
		s.run(s.now.Add(100 * time.Millisecond))
		seen[s.gateway("ethnet")] = true
		l := s.c.link("ethnet")
		if len(l.failedRouters) > 2 || slices.ContainsFunc(slices.Collect(maps.Keys(l.failedRouters)), func(a netip.Addr) bool { return a != ethGW && a != rogueGW }) {
			t.Fatalf("failed routers %v", l.failedRouters)
		}
	}
	if !seen[ethGW] || !seen[rogueGW] || s.c.Selected() != "stanet" {
		t.Fatalf("routers tried %v, selected %q", seen, s.c.Selected())
	}
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethRouters(ethGW, rogueGW, thirdGW)})
	s.until(20*time.Second, "Ethernet back through the third router", func() bool {
		return s.c.Selected() == "ethnet" && s.gateway("ethnet") == thirdGW
	})
}

// A renew that replaces the only router (DHCP's new gateway) is followed at once, as before.
func TestOnlyRouterReplacedFollowed(t *testing.T) {
	s := newSim(t)
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethRouters(rogueGW)})
	if gw := s.gateway("ethnet"); gw != rogueGW {
		t.Fatalf("routed through %v, want the new gateway %v", gw, rogueGW)
	}
}

// Ethernet's proven router fails (its upstream's outage) among 150 routers that were never
// proven (an RA flood): each failed round moves on, and the proven one is tried again within
// routerRetry of its failure, not after the whole flood: once its upstream is back, the uplink
// recovers through it.
func TestProvenRouterRetriedBeforeFlood(t *testing.T) {
	s := newSim(t)
	gws := []netip.Addr{ethGW}
	for i := range 150 {
		gws = append(gws, netip.AddrFrom4([4]byte{198, 18, 11 + byte(i/200), byte(i % 200)}))
	}
	s.deadRouters = map[netip.Addr]bool{}
	for _, a := range gws[1:] {
		s.deadRouters[a] = true
	}
	s.c.DeviceUpdate(map[string]uplink.Device{"eth0": ethRouters(slices.Concat(gws[1:], gws[:1])...)})
	s.run(s.now.Add(5 * time.Second))
	if gw := s.gateway("ethnet"); gw != ethGW || s.c.Selected() != "ethnet" {
		t.Fatalf("the flood moved Ethernet to %v (selected %q)", gw, s.c.Selected())
	}
	s.deadRouters[ethGW] = true
	s.until(5*time.Second, "Ethernet failed", func() bool { return s.c.Selected() == "stanet" })
	s.run(s.now.Add(5 * time.Second))
	delete(s.deadRouters, ethGW)
	took := s.until(40*time.Second, "Ethernet back through its proven router", func() bool {
		return s.c.Selected() == "ethnet" && s.gateway("ethnet") == ethGW
	})
	t.Logf("back %v after its upstream returned", took)
}
