package failover

import (
	"net/netip"
	"slices"
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

// Which router of an uplink's link to route through. A link may have several routers for a
// family (an IPv6 link: every router that advertises itself has a default route; two CPEs, or
// a rogue box whose RA claims high preference and which forwards nothing), and the kernel's
// ranking (netmon's: metric, RA preference, renewal) says nothing about which one reaches the
// cloud. The controller proves the path it routes through, so it keeps the router in use while
// the link still offers it (a new router, however preferred, does not take an uplink that
// works), and when the uplink's family fails (ITFUP_SF) through it while another router is
// offered, it routes through the next one not yet failed; its probes then judge that one (and
// recover the uplink within recover_count rounds if it works). A failed router is tried again
// once every other one has failed too, or once it left and came back.

// view is snapshot d as the link's machine sees it in family f: the family's addresses and
// default route, through the router chosen for the link.
func (l *link) view(d uplink.Device, f uplink.Family) uplink.Device {
	return l.pickRouter(d.OfFamily(f))
}

// pickRouter sets d's gateway (a family's view) to the link's router: the one in use if d still
// offers it and it has not failed, else the best offered one that has not failed.
func (l *link) pickRouter(d uplink.Device) uplink.Device {
	if len(d.Routers) < 2 {
		l.router, l.failedRouters = d.Gateway, nil
		return d
	}
	l.failedRouters = slices.DeleteFunc(l.failedRouters, func(a netip.Addr) bool { return !slices.Contains(d.Routers, a) })
	usable := func(a netip.Addr) bool { return !slices.Contains(l.failedRouters, a) }
	if !slices.Contains(d.Routers, l.router) || !usable(l.router) {
		i := slices.IndexFunc(d.Routers, usable)
		if i < 0 { // every one failed (kept only by nextRouter's own bookkeeping): start over
			l.failedRouters, i = nil, 0
		}
		l.router = d.Routers[i]
	}
	d.Gateway = l.router
	return d
}

// nextRouter moves a link whose family just failed a round in ITFUP_SF to its next router, if
// its link offers another: the one that failed is not used again until every other one has
// failed too.
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
	l.failedRouters = append(l.failedRouters, failed)
	if len(l.failedRouters) >= len(fd.Routers) {
		l.failedRouters = []netip.Addr{failed} // all tried: the others get another chance
	}
	v := l.pickRouter(fd)
	c.env.Log("router failed: trying the link's next one", "network", l.set.Name, "device", l.set.Device,
		"failed", failed.String(), "router", v.Gateway.String(), "routers", len(fd.Routers))
	c.device(l, now, v)
}
