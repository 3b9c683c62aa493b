package testbed

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/checksum"
)

// Routers that should not be there (red-team tests of router advertisements): a second router
// on an uplink's link (AddRouter6), and router advertisements a test writes byte by byte and
// sends from any namespace (SendRAs), as an attacker with a raw socket does.

// Router6 is a second IPv6 router on an uplink's link, beside the world's own.
type Router6 struct {
	NS *NS
	// LinkLocal is its address on the link, the gateway of the default route its RAs make.
	LinkLocal netip.Addr
}

// Router6Options shape a second router.
type Router6Options struct {
	// LinkLocal is its address (fe80::/64); its MAC address is made from it.
	LinkLocal netip.Addr
	// Preference is the default router preference its RAs carry: "high", "medium" or "low".
	Preference string
	// Lifetime is its router lifetime in seconds (radvd's AdvDefaultLifetime).
	Lifetime int
	// Prefix, if valid, is advertised on-link (not for SLAAC, as the world's routers do).
	Prefix netip.Prefix
	// Forward makes it route to the cloud (through the uplink's own router); without it every
	// packet it is given to forward is dropped without a word: a black hole.
	Forward bool
}

// AddRouter6 puts a second router on uplink dev's link (a macvlan on the world's router's end
// of the link, moved into a namespace of its own) and starts its radvd. It returns once the
// device's kernel has a default route through it.
func (w *World) AddRouter6(dev string, o Router6Options) (*Router6, error) {
	u := w.Uplink(dev)
	if u == nil || !u.Gateway6.IsValid() {
		return nil, fmt.Errorf("testbed: no IPv6 uplink %s", dev)
	}
	if !o.LinkLocal.Is6() || !o.LinkLocal.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("testbed: second router's address %v is no link-local IPv6 address", o.LinkLocal)
	}
	ll := o.LinkLocal.As16()
	ns, err := w.AddLinkHost(dev, net.HardwareAddr{0x02, 0x00, 0x5e, ll[13], ll[14], ll[15]})
	if err != nil {
		return nil, err
	}
	cmds := []string{"addr add " + o.LinkLocal.String() + "/64 dev " + LinkHostDev}
	if o.Forward {
		// Through the world's router, whose global address on the link is ::1 of the prefix.
		cmds = append(cmds, fmt.Sprintf("addr add 2001:db8:%d::99/64 dev %s nodad", 10*u.Index, LinkHostDev),
			fmt.Sprintf("route add ::/0 via 2001:db8:%d::1", 10*u.Index))
	} else {
		cmds = append(cmds, "route add blackhole ::/0")
	}
	if err := ns.IP(cmds...); err != nil {
		return nil, err
	}
	prefix := ""
	if o.Prefix.IsValid() {
		prefix = fmt.Sprintf("\tprefix %s {\n\t\tAdvOnLink on;\n\t\tAdvAutonomous off;\n\t};\n", o.Prefix)
	}
	conf := fmt.Sprintf("interface "+LinkHostDev+" {\n\tAdvSendAdvert on;\n\tMinRtrAdvInterval 3;\n\tMaxRtrAdvInterval 4;\n"+
		"\tAdvDefaultLifetime %d;\n\tAdvDefaultPreference %s;\n%s};\n", o.Lifetime, o.Preference, prefix)
	if err := w.startRadvd(ns, conf); err != nil {
		return nil, err
	}
	r := &Router6{NS: ns, LinkLocal: o.LinkLocal}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := w.Device.Run("ip", "-6", "route", "show", "default", "dev", dev)
		if err == nil && containsWord(out, "via "+o.LinkLocal.String()) {
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("testbed: no default route via the second router %s on %s within 10 s: %s", o.LinkLocal, dev, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// LinkHostDev is the interface of an AddLinkHost namespace on the uplink's link.
const LinkHostDev = "link0"

// AddLinkHost puts a host of its own namespace on uplink dev's link, beside the world's router
// (a macvlan of MAC address mac on the router's end of the link, moved into the namespace):
// its interface LinkHostDev is up, with no address at all (not even link-local).
func (w *World) AddLinkHost(dev string, mac net.HardwareAddr) (*NS, error) {
	u := w.Uplink(dev)
	if u == nil {
		return nil, fmt.Errorf("testbed: no uplink %s", dev)
	}
	ns, err := w.newNS("lh")
	if err != nil {
		return nil, err
	}
	if err := w.prepareV6(ns); err != nil {
		return nil, err
	}
	if err := u.Router.IP("link add "+LinkHostDev+" link todev address "+mac.String()+" type macvlan mode bridge",
		"link set "+LinkHostDev+" netns "+ns.Name); err != nil {
		return nil, err
	}
	if err := ns.IP("link set lo up", "link set "+LinkHostDev+" addrgenmode none", "link set "+LinkHostDev+" up"); err != nil {
		return nil, err
	}
	return ns, nil
}

// startRadvd runs radvd with configuration conf in ns until the world closes.
func (w *World) startRadvd(ns *NS, conf string) error {
	dir, err := os.MkdirTemp("", "afconn-radvd-")
	if err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	w.OnClose(func() error { return os.RemoveAll(dir) })
	path := filepath.Join(dir, "radvd.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return fmt.Errorf("testbed: %w", err)
	}
	p, err := ns.Start(nil, "radvd", "-n", "-m", "stderr", "-C", path, "-p", filepath.Join(dir, "radvd.pid"))
	if err != nil {
		return err
	}
	w.OnClose(func() error { p.Stop(5 * time.Second); return nil })
	return nil
}

// containsWord tells whether s contains sub followed by a space, a newline or its end (so that
// "via fe80::1" does not match "via fe80::10").
func containsWord(s, sub string) bool {
	for i := 0; ; {
		j := strings.Index(s[i:], sub)
		if j < 0 {
			return false
		}
		end := i + j + len(sub)
		if end == len(s) || s[end] == ' ' || s[end] == '\n' {
			return true
		}
		i += j + 1
	}
}

// RA is one router advertisement (RFC 4861 4.2, RFC 4191, RFC 8106) to all nodes.
type RA struct {
	Src        netip.Addr // the router's link-local address
	Preference string     // "high", "medium" (or ""), "low"
	Lifetime   uint16     // router lifetime, seconds; 0 is no default router
	// Prefixes are advertised on-link and for SLAAC (L and A set), valid and preferred for
	// PrefixLifetime seconds (0: an hour).
	Prefixes       []netip.Prefix
	PrefixLifetime uint32
	RDNSS          []netip.Addr // recursive DNS servers (lifetime an hour)
	// SrcMAC, if set, is the frame's source and the RA's source link-layer address (a spoofer
	// of a router's RAs gives the router's own).
	SrcMAC net.HardwareAddr
}

// MAC is the source MAC address SendRAs gives ra: SrcMAC, else one made from its link-local
// address.
func (ra RA) MAC() net.HardwareAddr {
	if len(ra.SrcMAC) == 6 {
		return ra.SrcMAC
	}
	a := ra.Src.As16()
	return net.HardwareAddr{0x02, 0x00, 0x5f, a[13], a[14], a[15]}
}

// Frame is ra as an Ethernet frame from ra.MAC() to all nodes (33:33:00:00:00:01, ff02::1),
// hop limit 255, with its checksum.
func (ra RA) Frame() ([]byte, error) {
	if !ra.Src.Is6() || !ra.Src.IsLinkLocalUnicast() {
		return nil, fmt.Errorf("testbed: RA source %v is no link-local IPv6 address", ra.Src)
	}
	prf := map[string]byte{"high": 0x08, "medium": 0, "": 0, "low": 0x18}
	flags, ok := prf[ra.Preference]
	if !ok {
		return nil, fmt.Errorf("testbed: RA preference %q: want high, medium or low", ra.Preference)
	}
	mac := ra.MAC()
	icmp := []byte{134, 0, 0, 0, 64, flags, byte(ra.Lifetime >> 8), byte(ra.Lifetime), 0, 0, 0, 0, 0, 0, 0, 0}
	icmp = append(append(icmp, 1, 1), mac...) // source link-layer address
	for _, p := range ra.Prefixes {
		if !p.Addr().Is6() {
			return nil, fmt.Errorf("testbed: RA prefix %v is not IPv6", p)
		}
		life := ra.PrefixLifetime
		if life == 0 {
			life = 3600
		}
		o := []byte{3, 4, byte(p.Bits()), 0xc0}
		o = binary.BigEndian.AppendUint32(o, life)
		o = binary.BigEndian.AppendUint32(o, life)
		o = append(o, 0, 0, 0, 0)
		a := p.Masked().Addr().As16()
		icmp = append(append(icmp, o...), a[:]...)
	}
	if len(ra.RDNSS) > 0 {
		o := []byte{25, byte(1 + 2*len(ra.RDNSS)), 0, 0}
		o = binary.BigEndian.AppendUint32(o, 3600)
		for _, s := range ra.RDNSS {
			a := s.As16()
			o = append(o, a[:]...)
		}
		icmp = append(icmp, o...)
	}
	src, dst := ra.Src.As16(), netip.MustParseAddr("ff02::1").As16()
	// The checksum covers the pseudo-header: source, destination, length, next header 58.
	pseudo := append(append(append(src[:0:0], src[:]...), dst[:]...), 0, 0, byte(len(icmp)>>8), byte(len(icmp)), 0, 0, 0, 58)
	binary.BigEndian.PutUint16(icmp[2:], checksum.Internet(append(pseudo, icmp...)))
	frame := []byte{0x33, 0x33, 0, 0, 0, 1}
	frame = append(append(frame, mac...), 0x86, 0xdd)
	frame = append(frame, 0x60, 0, 0, 0, byte(len(icmp)>>8), byte(len(icmp)), 58, 255)
	frame = append(append(append(frame, src[:]...), dst[:]...), icmp...)
	return frame, nil
}

// SendRAs sends each RA out of interface dev of ns as a raw Ethernet frame (a packet socket:
// any source address, no address of the sender's needed), pausing every between two.
func (n *NS) SendRAs(dev string, ras []RA, every time.Duration) error {
	frames := make([][]byte, len(ras))
	for i, ra := range ras {
		f, err := ra.Frame()
		if err != nil {
			return err
		}
		frames[i] = f
	}
	var fd int
	var ifi *net.Interface
	err := n.Do(func() (err error) {
		if ifi, err = net.InterfaceByName(dev); err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("testbed: packet socket on %s: %w", dev, err)
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrLinklayer{Protocol: 0xdd86, Ifindex: ifi.Index, Halen: 6}
	copy(sa.Addr[:], []byte{0x33, 0x33, 0, 0, 0, 1})
	for _, f := range frames {
		if err := unix.Sendto(fd, f, 0, sa); err != nil {
			return fmt.Errorf("testbed: send RA on %s: %w", dev, err)
		}
		if every > 0 {
			time.Sleep(every)
		}
	}
	return nil
}
