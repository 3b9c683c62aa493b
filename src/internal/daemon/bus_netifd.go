package daemon

// netifd's view of the uplinks: the bus listens to netifd's `network.interface` events
// ({"action": "ifup"|"ifdown", "interface": NAME}) and asks `network.interface.NAME status`
// for each configured uplink after every event, at every (re)connection, after a reload that
// adds an uplink, when netlink shows an uplink's addresses or gateway change (netifd sends no
// event for a renew that changes only those) and on the hotplug hook's hint (method notify). The result lives on the loop
// (bus.netifd); components read it with d.netifdInfo or implement netifdSink to hear of
// changes. While ubusd is away the last answers stay (netifd itself keeps running); they are
// refreshed on reconnection.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/afero/af-conn/internal/ubus"
)

// netifdEventName is the event netifd sends when an interface goes up or down.
const netifdEventName = "network.interface"

// NetifdInterface is what netifd says about one network (`ubus call network.interface.NAME
// status`), as far as connmgr uses it.
type NetifdInterface struct {
	Network string `json:"network"` // the UCI interface name: ethnet
	Up      bool   `json:"up"`
	// Device is the layer-3 device (l3_device, else device): eth0, or wwan0's PPP device.
	// A modem's control node (/dev/cdc-wdm0) is no device and is left out.
	Device string `json:"device,omitempty"`
	// L3Device is l3_device alone: the device the network's traffic uses while it is up
	// (3g-modemnet, pppoe-wan, qmi's wwan0); netifd leaves it out while the network is down.
	L3Device  string         `json:"l3_device,omitempty"`
	Proto     string         `json:"proto,omitempty"`
	Addresses []netip.Prefix `json:"addresses,omitempty"` // ipv4-address, then ipv6-address
	// Gateways are the next hops of the network's default routes (none on a point-to-point link).
	Gateways []netip.Addr `json:"gateways,omitempty"`
	DNS      []netip.Addr `json:"dns,omitempty"` // dns-server
}

func (n *NetifdInterface) equal(o *NetifdInterface) bool {
	return n.Network == o.Network && n.Up == o.Up && n.Device == o.Device && n.L3Device == o.L3Device && n.Proto == o.Proto &&
		slices.Equal(n.Addresses, o.Addresses) && slices.Equal(n.Gateways, o.Gateways) && slices.Equal(n.DNS, o.DNS)
}

// netifdSink is implemented by components that use netifd's view (the uplink monitor: DNS
// servers and gateways per uplink). netifdChanged runs on the loop when what netifd says
// about an uplink changed; info is nil when netifd no longer knows the network.
type netifdSink interface {
	netifdChanged(network string, info *NetifdInterface)
}

// netifdInfo is netifd's last answer about network; it runs on the loop.
func (d *Daemon) netifdInfo(network string) (NetifdInterface, bool) {
	for _, c := range d.components {
		if b, ok := c.(*bus); ok {
			n, ok := b.netifd[network]
			return n, ok
		}
	}
	return NetifdInterface{}, false
}

// refreshNetifd asks netifd again about networks (no-op without a bus); it runs on the loop.
func (d *Daemon) refreshNetifd(networks ...string) {
	for _, c := range d.components {
		if b, ok := c.(*bus); ok {
			b.refreshNetifd(networks...)
		}
	}
}

// ParseNetifdStatus reads the reply of `network.interface.NAME status`. Entries that do not
// parse (an address that is not one) are skipped; a reply without the "up" flag is not a
// netifd status and is an error.
func ParseNetifdStatus(network string, t ubus.Table) (NetifdInterface, error) {
	n := NetifdInterface{Network: network}
	up, ok := t.Bool("up")
	if !ok {
		return n, fmt.Errorf("netifd status of %s: no boolean \"up\"", network)
	}
	n.Up = up
	n.Proto, _ = t.String("proto")
	n.L3Device, _ = t.String("l3_device")
	if !netDevice(n.L3Device) {
		n.L3Device = ""
	}
	if n.Device = n.L3Device; n.Device == "" {
		if dev, _ := t.String("device"); netDevice(dev) {
			n.Device = dev
		}
	}
	for _, key := range []string{"ipv4-address", "ipv6-address"} {
		for _, e := range tables(t, key) {
			a, ok1 := addrField(e, "address")
			mask, ok2 := e.Int("mask")
			if !ok1 || !ok2 || mask < 0 || int(mask) > a.BitLen() {
				continue
			}
			n.Addresses = append(n.Addresses, netip.PrefixFrom(a, int(mask)))
		}
	}
	for _, e := range tables(t, "route") {
		target, ok1 := addrField(e, "target")
		mask, ok2 := e.Int("mask")
		gw, ok3 := addrField(e, "nexthop")
		if ok1 && ok2 && ok3 && mask == 0 && target.IsUnspecified() && !gw.IsUnspecified() && !slices.Contains(n.Gateways, gw) {
			n.Gateways = append(n.Gateways, gw)
		}
	}
	if list, ok := t.Array("dns-server"); ok {
		for _, v := range list {
			if s, ok := v.(string); ok {
				if a, err := netip.ParseAddr(s); err == nil {
					n.DNS = append(n.DNS, a.Unmap())
				}
			}
		}
	}
	return n, nil
}

// tables returns the tables in the array named key.
func tables(t ubus.Table, key string) []ubus.Table {
	list, _ := t.Array(key)
	var out []ubus.Table
	for _, v := range list {
		if e, ok := v.(ubus.Table); ok {
			out = append(out, e)
		}
	}
	return out
}

func addrField(t ubus.Table, key string) (netip.Addr, bool) {
	s, ok := t.String(key)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// onNetifdEvent receives netifd's network.interface events (in order, on the connection's
// callback goroutine).
func (b *bus) onNetifdEvent(_ string, data ubus.Table) {
	name, _ := data.String("interface")
	switch action, _ := data.String("action"); {
	case b.isUplink(name):
		b.refreshNetifd(name)
	case action == "ifup" && b.work != nil:
		// A network not known to be an uplink's comes up: it may run on an uplink's device
		// (wan6 on @wan), which only the dump tells.
		b.work.Push(b.queryNetifdDynamic)
	}
}

// refreshNetifd queues queries of netifd about networks; queries run one at a time in order,
// so a late answer never overwrites a newer one.
func (b *bus) refreshNetifd(networks ...string) {
	if len(networks) == 0 || b.work == nil {
		return
	}
	b.mu.Lock()
	var fresh []string
	for _, name := range networks {
		if !b.asking[name] {
			if b.asking == nil {
				b.asking = map[string]bool{}
			}
			b.asking[name] = true
			fresh = append(fresh, name)
		}
	}
	b.mu.Unlock()
	if len(fresh) == 0 {
		return // each is asked already, and its answer is still to come
	}
	b.work.Push(func() {
		for _, name := range fresh {
			b.mu.Lock()
			delete(b.asking, name) // a change from now on asks again
			b.mu.Unlock()
			b.queryNetifd(name)
		}
	})
}

func (b *bus) queryNetifd(network string) {
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	t, err := b.client.Call(ctx, "network.interface."+network, "status", nil)
	if errors.Is(err, ubus.StatusNotFound) {
		b.post(netifdUpdate{b: b, network: network})
		return
	}
	if err != nil {
		// No connection (the reconnection asks again) or netifd busy (its next event does).
		b.d.log.Debug("netifd query failed", "network", network, "err", err)
		return
	}
	info, err := ParseNetifdStatus(network, t)
	if err != nil {
		b.d.log.Warn("netifd answer ignored", "err", err)
		return
	}
	b.post(netifdUpdate{b: b, network: network, info: &info})
}

// queryNetifdDynamic asks netifd for every interface (`network.interface dump`) and takes the
// uplinks' dynamic interfaces (modemnet_4, modemnet_6_4): their names are not in the
// configuration, so only this (at each connection) and their events find them.
func (b *bus) queryNetifdDynamic() {
	ctx, cancel := context.WithTimeout(b.ctx, callTimeout)
	defer cancel()
	t, err := b.client.Call(ctx, "network.interface", "dump", nil)
	if err != nil {
		b.d.log.Debug("netifd dump failed", "err", err)
		return
	}
	entries := tables(t, "interface")
	// The networks on an uplink's device under their own names (wan6 on @wan): the uplink's
	// devices are the configured ones and what netifd says of the uplink itself.
	ifaces := map[string]netifdDevice{}
	for _, e := range entries {
		name, _ := e.String("interface")
		dev, _ := e.String("device")
		l3, _ := e.String("l3_device")
		ifaces[name] = netifdDevice{device: dev, l3: l3}
	}
	b.mu.Lock()
	uplinks, devices := slices.Clone(b.uplinks), map[string][]string{}
	for _, u := range uplinks {
		devices[u] = slices.Clone(b.devices[u])
	}
	b.mu.Unlock()
	for _, u := range uplinks {
		if nd, ok := ifaces[u]; ok {
			devices[u] = append(devices[u], nd.device, nd.l3)
		}
	}
	aliases := netifdAliases(ifaces, devices)
	b.mu.Lock()
	b.aliases = aliases
	b.mu.Unlock()
	b.post(aliasesEvent(aliases))
	for _, e := range entries {
		name, _ := e.String("interface")
		if parent := uplinkOf(name, uplinks, aliases); parent == "" || parent == name {
			continue // the uplinks themselves are asked one by one
		}
		info, err := ParseNetifdStatus(name, e)
		if err != nil {
			b.d.log.Warn("netifd answer ignored", "err", err)
			continue
		}
		b.post(netifdUpdate{b: b, network: name, info: &info})
	}
}

// aliasesEvent gives the loop the networks on an uplink's device (before their updates).
type aliasesEvent map[string]string

func (e aliasesEvent) apply(d *Daemon) {
	for network, u := range e {
		if d.aliases[network] != u {
			d.log.Info("netifd network on an uplink's device", "network", network, "uplink", u)
		}
	}
	d.aliases = e
}

// netifdUpdate carries netifd's answer to the loop.
type netifdUpdate struct {
	b       *bus
	network string
	info    *NetifdInterface // nil: netifd does not know the network
}

func (e netifdUpdate) apply(d *Daemon) {
	b := e.b
	var names []string
	for _, u := range d.cur.Config.Uplinks {
		names = append(names, u.Name)
	}
	if d.uplinkOf(e.network, names) == "" {
		return // no longer an uplink (reloaded meanwhile)
	}
	old, had := b.netifd[e.network]
	switch {
	case e.info == nil && !had:
		return
	case e.info == nil:
		delete(b.netifd, e.network)
		d.log.Info("netifd does not know the network", "network", e.network)
	case had && old.equal(e.info):
		return
	default:
		b.netifd[e.network] = *e.info
		d.log.Info("netifd", "network", e.network, "up", e.info.Up, "device", e.info.Device, "l3_device", e.info.L3Device,
			"addresses", e.info.Addresses, "gateways", e.info.Gateways, "dns", e.info.DNS)
	}
	d.noteL3(e.network, e.info)
	for _, c := range d.components {
		if s, ok := c.(netifdSink); ok {
			s.netifdChanged(e.network, e.info)
		}
	}
}
