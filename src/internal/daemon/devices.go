package daemon

// Uplink devices. The configuration names a device per uplink (config.Uplink.Device: eth0,
// wlan0, 3g-modemnet for proto 3g, "" for a qmi/mbim modem known by its /dev node), but the
// device an uplink's traffic really uses is the layer-3 device netifd reports (`l3_device` in
// `network.interface.NAME status`): pppoe-wan, 3g-modemnet, qmi's wwan0 or wwan1, a renamed
// device. A modem's protocol handler also adds dynamic interfaces named after the uplink
// (modemnet_4, modemnet_6, and for 464XLAT modemnet_6_4 on its clat device 464-...): their
// layer-3 devices carry the uplink's traffic too and are locked down with it. The daemon keeps
// the last device netifd reported per network (netifd leaves it out while
// the network is down, and the device of a network that comes back is locked down before its
// first packet) and every concern follows it as it appears, changes and goes:
//   - the lock-down and the DNS gate watch the configured device and netifd's (the uplink's
//     and its dynamic interfaces'), all of them;
//   - the uplink monitor (netlink, capture, probes, routes) watches netifd's, else the
//     configured one; for IPv4, an uplink with a clat device (a dynamic interface of proto
//     464xlat) watches, probes and routes the clat device instead (IPv4 goes through it).

import (
	"slices"
	"strings"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/uplink"
)

// netDevice tells whether netifd's device name is a network device the firewall can match:
// not a modem's control node (/dev/cdc-wdm0, /dev/ttyUSB2), not empty.
func netDevice(name string) bool {
	return name != "" && firewall.CheckIfname(name) == nil
}

// noteL3 records netifd's layer-3 device of an uplink network; it runs on the loop before the
// netifd sinks hear of the change. A network netifd no longer knows falls back to the
// configuration; one that is down keeps its last device.
func (d *Daemon) noteL3(network string, info *NetifdInterface) {
	switch {
	case info == nil:
		delete(d.l3, network)
	case info.L3Device != "":
		if old := d.l3[network]; old != info.L3Device {
			d.log.Info("uplink device from netifd", "network", network, "l3_device", info.L3Device, "was", old)
		}
		d.l3[network] = info.L3Device
	}
	switch {
	case info == nil || !isClat(info):
		delete(d.clat, network)
	case d.l3[network] != "":
		if d.clat == nil {
			d.clat = map[string]string{}
		}
		d.clat[network] = d.l3[network]
	}
}

// isClat tells whether netifd's network is a 464XLAT interface: its layer-3 device is the clat
// device that carries the uplink's IPv4 over IPv6 (odhcp6c's 464xlat proto names it 464-NAME).
func isClat(info *NetifdInterface) bool {
	return info.Proto == "464xlat" || strings.HasPrefix(info.L3Device, "464-")
}

// clatDevice is the clat device of uplink u's dynamic 464XLAT interface ("" when netifd reports
// none). Several are not expected; the one of the lowest network name wins, so the choice is
// stable.
func (d *Daemon) clatDevice(u config.Uplink) string {
	best, dev := "", ""
	for network, clat := range d.clat {
		if network != u.Name && d.uplinkOf(network, []string{u.Name}) != "" && (best == "" || network < best) {
			best, dev = network, clat
		}
	}
	return dev
}

// familyDevices returns cfg with each uplink's Device as the controller of family f runs on
// it: uplinkDevice for IPv6, and for IPv4 the clat device where there is one.
func (d *Daemon) familyDevices(cfg *config.Config, f uplink.Family) *config.Config {
	out := d.withL3Devices(cfg)
	if f != uplink.IPv4 {
		return out
	}
	copied := out != cfg
	for i, u := range out.Uplinks {
		dev := d.clatDevice(u)
		if dev == "" || dev == u.Device {
			continue
		}
		if !copied {
			c := *out
			c.Uplinks = slices.Clone(out.Uplinks)
			out, copied = &c, true
		}
		out.Uplinks[i].Device = dev
	}
	return out
}

// uplinkDevice is the device the uplink monitor watches for u: netifd's layer-3 device, else
// the configured one ("" when neither is known yet).
func (d *Daemon) uplinkDevice(u config.Uplink) string {
	if dev := d.l3[u.Name]; dev != "" {
		return dev
	}
	return u.Device
}

// withL3Devices returns cfg with each uplink's Device as uplinkDevice says (cfg itself when
// netifd changed none).
func (d *Daemon) withL3Devices(cfg *config.Config) *config.Config {
	out := cfg
	for i, u := range cfg.Uplinks {
		dev := d.uplinkDevice(u)
		if dev == u.Device {
			continue
		}
		if out == cfg {
			c := *cfg
			c.Uplinks = slices.Clone(cfg.Uplinks)
			out = &c
		}
		out.Uplinks[i].Device = dev
	}
	return out
}

// lockdownDevices lists the devices the lock-down and the DNS gate watch: of every enabled
// uplink, the configured device and netifd's layer-3 device, sorted, without duplicates.
func (d *Daemon) lockdownDevices(cfg *config.Config) []string {
	var out []string
	for _, u := range cfg.Uplinks {
		if !u.Enabled {
			continue
		}
		devs := []string{u.Device}
		for network, dev := range d.l3 {
			if d.uplinkOf(network, []string{u.Name}) != "" {
				devs = append(devs, dev)
			}
		}
		for _, dev := range devs {
			if dev != "" && !slices.Contains(out, dev) {
				out = append(out, dev)
			}
		}
	}
	slices.Sort(out)
	return out
}

// parentUplink returns the uplink (one of uplinks) that netifd's network is, or whose dynamic
// interface it is: NAME itself, or NAME_ followed by digits and underscores, optionally ending
// in "xlat" (netifd's modem protocols add NAME_4 and NAME_6, odhcp6c its 464XLAT NAME_6_4 or
// NAME_464xlat). "" when none.
func parentUplink(network string, uplinks []string) string {
	for _, u := range uplinks {
		if network == u {
			return u
		}
		rest, ok := strings.CutPrefix(network, u+"_")
		if !ok {
			continue
		}
		rest = strings.TrimSuffix(rest, "xlat")
		if rest != "" && strings.Trim(rest, "0123456789_") == "" {
			return u
		}
	}
	return ""
}

// uplinkOf is parentUplink, and for a network netifd runs on an uplink's device under a name
// of its own (d.aliases: OpenWrt's wan6 on @wan) or one of its dynamic interfaces (wan6_4, the
// 464XLAT of wan6), the uplink it belongs to. "" when none of uplinks.
func (d *Daemon) uplinkOf(network string, uplinks []string) string {
	if d == nil {
		return parentUplink(network, uplinks) // a test's bare component
	}
	return uplinkOf(network, uplinks, d.aliases)
}

func uplinkOf(network string, uplinks []string, aliases map[string]string) string {
	if u := parentUplink(network, uplinks); u != "" {
		return u
	}
	best := ""
	for alias, u := range aliases {
		// The longest alias wins (wan6_4 is wan6's before it is wan's).
		if slices.Contains(uplinks, u) && parentUplink(network, []string{alias}) != "" && len(alias) > len(best) {
			best = alias
		}
	}
	return aliases[best]
}

// netifdDevice is what netifd's dump says of one network's device: "device" as configured
// (eth0, or @wan for an alias of network wan) and l3_device.
type netifdDevice struct{ device, l3 string }

// netifdAliases finds the networks netifd runs on an uplink's own device without naming them
// after it, as OpenWrt does for IPv6: network wan6 (proto dhcpv6) with device '@wan' (an alias
// of the uplink) or wan's device itself (eth0). ifaces are netifd's networks; devices are each
// uplink's devices (configured, and netifd's for it). It returns network -> uplink; an uplink,
// or a network named after one (wan_6), is no alias.
func netifdAliases(ifaces map[string]netifdDevice, devices map[string][]string) map[string]string {
	var uplinks []string
	for u := range devices {
		uplinks = append(uplinks, u)
	}
	slices.Sort(uplinks) // two uplinks on one device: the first name wins, every time
	out := map[string]string{}
	for network, nd := range ifaces {
		if parentUplink(network, uplinks) != "" {
			continue
		}
		for _, u := range uplinks {
			if nd.device == "@"+u || slices.ContainsFunc(devices[u], func(dev string) bool {
				return dev != "" && (dev == nd.device || dev == nd.l3)
			}) {
				out[network] = u
				break
			}
		}
	}
	return out
}
