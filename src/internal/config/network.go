package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/afero/af-conn/internal/uci"
)

// resolveUplinks gives each uplink its device, metric and DNS servers from
// network and wireless. The device comes from, in order: connmgr's
// `option device`; for Wi-Fi, the `ifname` of the wifi-iface in mode 'sta'
// on the uplink's network; for a PPP protocol (3g, ppp, pppoe, pppoa, pptp,
// l2tp) the device netifd will make, PROTO-NETWORK (3g-modemnet,
// pppoe-wan); the network's `option device` (or the older `option ifname`);
// the default of its type (eth0, wlan0, wwan0). A network whose device is a
// modem's control node (/dev/cdc-wdm0 for qmi or mbim) has no device of
// its own until netifd reports its layer-3 device: the uplink's Device is
// then "" (never the default wwan0, which may be another modem or nothing).
// The daemon follows netifd's l3_device on top of this in any case.
func (c *Config) resolveUplinks(drafts []draft, network, wireless, connmgr file) error {
	sta := stations(wireless)
	devices := map[string]string{}
	for _, d := range drafts {
		u := d.u
		iface := network.pkg.Section(u.Name)
		if iface != nil && iface.Type != "interface" {
			iface = nil
		}
		// The built-in networks (ethnet, stanet, modemnet) are listed in the shipped
		// configuration of every hub, and a hub lacks those of the media it has not (no
		// modem, no modemnet): their uplink is just absent, as its status says. Another
		// name with no network is likely a typo.
		if iface == nil && !network.missing && u.Enabled && !isDefaultUplink(u.Name) {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s: no interface '%s' for uplink '%s'", network.path, u.Name, u.Name))
		}
		if !d.device {
			dev, err := uplinkDevice(u, iface, network, sta[u.Name], wireless)
			if err != nil {
				return err
			}
			u.Device = dev
		}
		if iface != nil {
			if err := readInterface(&u, iface, network); err != nil {
				return err
			}
		}
		if other, dup := devices[u.Device]; dup && u.Enabled && u.Device != "" {
			return sharedDevice(d, u, other, iface, network, connmgr)
		}
		if u.Enabled && u.Device != "" {
			devices[u.Device] = u.Name
		}
		c.Uplinks = append(c.Uplinks, u)
	}
	return nil
}

// sharedDevice reports two enabled uplinks on one device, at the line that
// gave the second its device.
func sharedDevice(d draft, u Uplink, other string, iface *uci.Section, network, connmgr file) error {
	var e *Error
	switch {
	case d.section != nil && d.device:
		e = connmgr.valueErr(d.section, d.section.Get("device"), u.Device, "")
	case iface != nil && (iface.Get("device") != nil || iface.Get("ifname") != nil):
		o := iface.Get("device")
		if o == nil {
			o = iface.Get("ifname")
		}
		e = network.valueErr(iface, o, u.Device, "")
	case d.section != nil:
		e = connmgr.valueErr(d.section, nil, u.Device, "")
	default:
		return fmt.Errorf("uplinks '%s' and '%s' both use device %s", other, u.Name, u.Device)
	}
	e.Problem = fmt.Sprintf("device %s is already used by uplink '%s'", u.Device, other)
	e.Expected = "a device of its own (option device of config uplink '" + u.Name + "' in connmgr)"
	return e
}

func uplinkDevice(u Uplink, iface *uci.Section, network file, sta *uci.Section, wireless file) (string, error) {
	if u.Kind == KindWiFi && sta != nil {
		if o := sta.Get("ifname"); o != nil {
			v := o.Values[len(o.Values)-1]
			if !validDevice(v) {
				return "", wireless.valueErr(sta, o, v, deviceAccepts)
			}
			return v, nil
		}
	}
	if iface != nil {
		if dev := pppDevice(iface, u.Name); dev != "" {
			return dev, nil
		}
		control := false
		for _, name := range []string{"device", "ifname"} {
			o := iface.Get(name)
			if o == nil {
				continue
			}
			v := o.Values[len(o.Values)-1]
			if strings.HasPrefix(v, "/dev/") {
				control = true
				continue // a modem's control device (proto qmi, mbim, 3g), not a network device
			}
			if !validDevice(v) {
				return "", network.valueErr(iface, o, v, deviceAccepts)
			}
			return v, nil
		}
		if control {
			return "", nil // netifd names the layer-3 device (l3_device)
		}
	}
	for _, d := range defaultUplinks {
		if d.kind == u.Kind {
			return d.device, nil
		}
	}
	return "", fmt.Errorf("uplink %s: no device for type %v", u.Name, u.Kind) // unreachable: every kind has a default
}

// pppProtos are netifd's protocols whose layer-3 device is a PPP (or
// tunnel) device named PROTO-NETWORK (netifd's ppp.sh: pppname).
var pppProtos = []string{"3g", "ppp", "pppoe", "pppoa", "pptp", "l2tp"}

// pppDevice is the device netifd makes for a PPP network, "" for other
// protocols. An explicit ifname that is not the carrier's (an older
// configuration naming the PPP device itself) is left to the caller.
func pppDevice(iface *uci.Section, name string) string {
	o := iface.Get("proto")
	if o == nil || !slices.Contains(pppProtos, o.Values[len(o.Values)-1]) {
		return ""
	}
	dev := o.Values[len(o.Values)-1] + "-" + name
	if len(dev) > 15 {
		dev = dev[:15] // IFNAMSIZ: pppd's ifname is cut there too
	}
	if !validDevice(dev) {
		return ""
	}
	return dev
}

// readInterface takes the metric and the static DNS servers of the
// uplink's network interface section.
func readInterface(u *Uplink, iface *uci.Section, network file) error {
	if o := iface.Get("metric"); o != nil {
		v := o.Values[len(o.Values)-1]
		m, err := strconv.Atoi(v)
		if err != nil || m < 0 {
			return network.valueErr(iface, o, v, "a route metric 0-2147483647")
		}
		u.Metric = m
	}
	if o := iface.Get("dns"); o != nil {
		for _, item := range o.Values {
			for _, v := range strings.Fields(item) { // netifd also takes 'a b' in one value
				a, err := netip.ParseAddr(v)
				if err != nil {
					return network.valueErr(iface, o, v, "an IPv4 or IPv6 address")
				}
				u.DNS = append(u.DNS, a)
			}
		}
	}
	return nil
}

// wifiIface is one enabled wifi-iface section of wireless.
type wifiIface struct {
	s        *uci.Section
	mode     string
	networks []string
	ifname   string
}

// wifiIfaces lists the wifi-ifaces that are not disabled (by their own
// `disabled` or their radio's).
func wifiIfaces(wireless file) []wifiIface {
	var out []wifiIface
	for _, s := range wireless.pkg.OfType("wifi-iface") {
		if isDisabled(s) {
			continue
		}
		if radio, ok := s.Value("device"); ok {
			if r := wireless.pkg.Section(radio); r != nil && r.Type == "wifi-device" && isDisabled(r) {
				continue
			}
		}
		w := wifiIface{s: s, mode: "ap"} // netifd's default mode
		if m, ok := s.Value("mode"); ok {
			w.mode = m
		}
		if o := s.Get("network"); o != nil {
			for _, v := range o.Values {
				w.networks = append(w.networks, strings.Fields(v)...)
			}
		}
		w.ifname, _ = s.Value("ifname")
		out = append(out, w)
	}
	return out
}

func isDisabled(s *uci.Section) bool {
	v, _ := s.Value("disabled")
	b, _ := parseBool(v)
	return b
}

// stations maps each network to its first wifi-iface in mode 'sta'.
func stations(wireless file) map[string]*uci.Section {
	out := map[string]*uci.Section{}
	for _, w := range wifiIfaces(wireless) {
		if w.mode != "sta" {
			continue
		}
		for _, n := range w.networks {
			if out[n] == nil {
				out[n] = w.s
			}
		}
	}
	return out
}

// findAP groups the access-point interfaces by network and finds each
// network's bridge. These are not uplinks: the firewall forwards them.
func (c *Config) findAP(network, wireless file) []AP {
	var aps []AP
	index := map[string]int{}
	for _, w := range wifiIfaces(wireless) {
		if w.mode != "ap" {
			continue
		}
		if w.ifname != "" && !validDevice(w.ifname) {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: access point ifname %s is not a device name: ignored", wireless.path, w.s.Line, quote(w.ifname)))
			w.ifname = ""
		}
		for _, n := range w.networks {
			i, ok := index[n]
			if !ok {
				i = len(aps)
				index[n] = i
				aps = append(aps, AP{Network: n})
			}
			if w.ifname != "" {
				aps[i].Devices = append(aps[i].Devices, w.ifname)
			}
		}
	}
	for i := range aps {
		aps[i].Bridge = bridgeOf(network, aps[i])
	}
	return aps
}

// bridgeOf finds the bridge of an AP network: the interface's own bridge
// (`option type 'bridge'`: netifd names it br-NETWORK), the bridge device
// the interface uses, else a `config device` bridge whose ports hold one of
// the AP interfaces, or that is named br-NETWORK.
func bridgeOf(network file, ap AP) string {
	bridges := map[string]*uci.Section{}
	var order []string
	for _, s := range network.pkg.OfType("device") {
		if t, _ := s.Value("type"); t == "bridge" {
			if name, ok := s.Value("name"); ok {
				bridges[name] = s
				order = append(order, name)
			}
		}
	}
	if iface := network.pkg.Section(ap.Network); iface != nil && iface.Type == "interface" {
		if t, _ := iface.Value("type"); t == "bridge" {
			return "br-" + ap.Network
		}
		for _, opt := range []string{"device", "ifname"} {
			if dev, ok := iface.Value(opt); ok && (bridges[dev] != nil || strings.HasPrefix(dev, "br-")) {
				return dev
			}
		}
	}
	for _, name := range order {
		for _, opt := range []string{"ports", "ifname"} { // ifname: the older spelling of ports
			if o := bridges[name].Get(opt); o != nil {
				for _, v := range o.Values {
					for _, port := range strings.Fields(v) {
						for _, d := range ap.Devices {
							if port == d {
								return name
							}
						}
					}
				}
			}
		}
	}
	if bridges["br-"+ap.Network] != nil {
		return "br-" + ap.Network
	}
	return ""
}

// isDefaultUplink tells whether name is one of the built-in uplink networks.
func isDefaultUplink(name string) bool {
	for _, d := range defaultUplinks {
		if d.name == name {
			return true
		}
	}
	return false
}
