package failover

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

// Which router of an uplink's link to route through. A link may have several routers for a
// family (an IPv6 link: every router that advertises itself has a default route; two CPEs, or
// a rogue box whose RA claims high preference and which forwards nothing, or a flood of RAs from
// routers that do not exist), and the kernel's ranking (netmon's: metric, RA preference,
// renewal) says nothing about which one reaches the cloud. The controller proves the path it
// routes through, so it keeps the router in use while the link still offers it (a new router,
// however preferred, does not take an uplink that works), and when the uplink's family fails
// (ITFUP_SF) through it while another router is offered, each failed round moves it to the next
// one: first the routers its probes have proven before, then the others in netmon's order,
// leaving out those that failed in the last routerRetry (if all did, the one that failed
// longest ago). Its probes judge each one, and recover the uplink within recover_count rounds
// through one that works.

// routerRetry is how long a router the family failed through is left out (while others are
// offered): after it, a proven router that failed once (its upstream's outage) is tried again
// before the rest of a flood of routers that were never proven.
const routerRetry = 30 * time.Second

// view is snapshot d as the link's machine sees it in family f: the family's addresses and
// default route, through the router chosen for the link.
func (l *link) view(d uplink.Device, f uplink.Family, now time.Time) uplink.Device {
	return l.pickRouter(d.OfFamily(f), now)
}

// pickRouter sets d's gateway (a family's view) to the link's router: the one in use if d still
// offers it and it has not failed, else the next one (see above).
func (l *link) pickRouter(d uplink.Device, now time.Time) uplink.Device {
	if len(d.Routers) < 2 {
		l.router, l.failedRouters = d.Gateway, nil
		l.provenRouters = slices.DeleteFunc(l.provenRouters, func(a netip.Addr) bool { return a != d.Gateway })
		return d
	}
	maps.DeleteFunc(l.failedRouters, func(a netip.Addr, _ time.Time) bool { return !slices.Contains(d.Routers, a) })
	l.provenRouters = slices.DeleteFunc(l.provenRouters, func(a netip.Addr) bool { return !slices.Contains(d.Routers, a) })
	usable := func(a netip.Addr) bool {
		at, failed := l.failedRouters[a]
		return !failed || now.Sub(at) >= routerRetry
	}
	if !slices.Contains(d.Routers, l.router) || !usable(l.router) {
		i := slices.IndexFunc(d.Routers, func(a netip.Addr) bool { return slices.Contains(l.provenRouters, a) && usable(a) })
		if i < 0 {
			i = slices.IndexFunc(d.Routers, usable)
		}
		if i < 0 { // every one failed lately: the one that failed longest ago
			i = 0
			for j, a := range d.Routers {
				if l.failedRouters[a].Before(l.failedRouters[d.Routers[i]]) {
					i = j
				}
			}
		}
		l.router = d.Routers[i]
	}
	d.Gateway = l.router
	return d
}

// nextRouter moves a link whose family just failed a round in ITFUP_SF to its next router, if
// its link offers another.
func (c *Controller) nextRouter(l *link, now time.Time) {
	d, ok := c.devices[l.set.Device]
	if !ok {
		return
	}
	fd := d.OfFamily(c.set.Family)
	failed := l.router
	if len(fd.Routers) < 2 || !slices.Contains(fd.Routers, failed) {
		return
	}
	if l.failedRouters == nil {
		l.failedRouters = map[netip.Addr]time.Time{}
	}
	l.failedRouters[failed] = now
	v := l.pickRouter(fd, now)
	c.env.Log("router failed: trying the link's next one", "network", l.set.Name, "device", l.set.Device,
		"failed", failed.String(), "router", v.Gateway.String(), "routers", len(fd.Routers))
	c.device(l, now, v)
}

// routerProven records that a round succeeded through the link's router.
func (l *link) routerProven() {
	if l.router.IsValid() && !slices.Contains(l.provenRouters, l.router) {
		l.provenRouters = append(l.provenRouters, l.router)
	}
}
