package testbed

import (
	"fmt"
	"net/netip"
	"strings"
)

// LAN is a client network behind the device, as an access point's clients are: a namespace
// with one client, on a link to the device whose end in the device is Dev. The device forwards
// and masquerades the client's traffic out of its uplinks, as fw4's wan zone does.
type LAN struct {
	NS      *NS
	Dev     string     // the device's interface toward the client, e.g. wlan0-1
	Client  netip.Addr // 198.18.100.2
	Gateway netip.Addr // the device's address on the LAN, 198.18.100.1
	Prefix  netip.Prefix
}

// natTable is the device's masquerade table (fw4 would do it in its own table).
const natTable = "testbed_nat"

// AddLAN creates the client namespace and wires it to the device through interface dev.
func (w *World) AddLAN(dev string) (*LAN, error) {
	ns, err := w.newNS("lan")
	if err != nil {
		return nil, err
	}
	l := &LAN{NS: ns, Dev: dev,
		Client:  netip.MustParseAddr("198.18.100.2"),
		Gateway: netip.MustParseAddr("198.18.100.1"),
		Prefix:  netip.MustParsePrefix("198.18.100.0/24"),
	}
	if err := runIP("link", "add", dev, "netns", w.Device.Name, "type", "veth", "peer", "name", "eth0", "netns", ns.Name); err != nil {
		return nil, err
	}
	if err := ns.IP("link set lo up", "addr add "+l.Client.String()+"/24 dev eth0", "link set eth0 up",
		"route add default via "+l.Gateway.String()); err != nil {
		return nil, err
	}
	if err := w.Device.IP("addr add "+l.Gateway.String()+"/24 dev "+dev, "link set "+dev+" up"); err != nil {
		return nil, err
	}
	if err := w.Device.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	var ups []string
	for _, u := range w.Uplinks {
		ups = append(ups, `"`+u.Dev+`"`)
	}
	if err := w.Device.Nft(fmt.Sprintf("table ip %s {\n\tchain post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tip saddr %s oifname { %s } masquerade\n\t}\n}\n",
		natTable, l.Prefix, strings.Join(ups, ", "))); err != nil {
		return nil, err
	}
	return l, nil
}
