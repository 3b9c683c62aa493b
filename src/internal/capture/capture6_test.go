package capture

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
)

// ipv6 builds an IPv6 packet to 2001:db8:10::2 from src whose first next
// header is next, with the headers and payload given.
func ipv6(src string, next byte, parts ...[]byte) []byte {
	b := make([]byte, 40)
	b[0] = 0x60
	var l int
	for _, p := range parts {
		l += len(p)
		b = append(b, p...)
	}
	binary.BigEndian.PutUint16(b[4:], uint16(l))
	b[6], b[7] = next, 64
	s := netip.MustParseAddr(src).As16()
	copy(b[8:], s[:])
	d := netip.MustParseAddr("2001:db8:10::2").As16()
	copy(b[24:], d[:])
	return b
}

// ext is an extension header (hop-by-hop, routing, destination options)
// of (units+1)*8 bytes followed by next.
func ext(next byte, units byte) []byte {
	b := make([]byte, (int(units)+1)*8)
	b[0], b[1] = next, units
	return b
}

// frag is a fragment header followed by next, with the offset-and-flags
// field off (offset in its top 13 bits, M in bit 0).
func frag(next byte, off uint16) []byte {
	b := make([]byte, 8)
	b[0] = next
	binary.BigEndian.PutUint16(b[2:], off)
	return b
}

func TestFilterProgram6(t *testing.T) {
	vm := newVM(t, uplink.IPv6, "198.18.10.2/24", "2001:db8:10::2/64", "2001:db8:99::7/128")
	cloud := "2001:db8:ff::1"
	data := func(sport uint16) []byte { return withPorts(tcp(0x18, 1), sport, 40000) }
	cases := []struct {
		name string
		pkt  []byte
		want int
	}{
		{"tcp data from beyond", ipv6(cloud, 6, data(443)), snapLen6},
		{"tcp pure ack from beyond", ipv6(cloud, 6, withPorts(tcp(0x10, 0), 443, 40000)), snapLen6},
		{"nat64 address", ipv6("64:ff9b::c613:1", 6, data(443)), snapLen6},
		{"from the uplink's /64 (a neighbour)", ipv6("2001:db8:10::1", 6, data(443)), 0},
		{"from the uplink's other prefix (/128)", ipv6("2001:db8:99::7", 6, data(443)), 0},
		{"next to the /128", ipv6("2001:db8:99::8", 6, data(443)), snapLen6},
		{"from a link-local address (the gateway)", ipv6("fe80::1", 6, data(443)), 0},
		{"syn-ack", ipv6(cloud, 6, withPorts(tcp(0x12, 0), 443, 40000)), 0},
		{"rst-ack", ipv6(cloud, 6, withPorts(tcp(0x14, 0), 443, 40000)), 0},
		{"without ack", ipv6(cloud, 6, withPorts(tcp(0x08, 1), 443, 40000)), 0},
		{"dns over tcp", ipv6(cloud, 6, data(53)), 0},
		{"dns over tls", ipv6(cloud, 6, data(853)), 0},
		{"ntp port", ipv6(cloud, 6, data(123)), 0},
		{"dhcpv6 port", ipv6(cloud, 6, data(547)), 0},
		{"udp", ipv6(cloud, 17, withPorts(make([]byte, 12), 443, 40000)), 0},
		{"icmpv6 echo reply", ipv6(cloud, 58, []byte{129, 0, 0, 0, 0, 1, 0, 1}), 0},
		{"hop-by-hop then tcp", ipv6(cloud, 0, ext(6, 0), data(443)), snapLen6},
		{"destination options, routing, then tcp", ipv6(cloud, 60, ext(43, 2), ext(6, 1), data(443)), snapLen6},
		{"first fragment", ipv6(cloud, 44, frag(6, 1), data(443)), snapLen6},
		{"non-first fragment", ipv6(cloud, 44, frag(6, 0x10), data(443)), 0},
		{"extension headers, then dns", ipv6(cloud, 0, ext(60, 0), ext(6, 0), data(53)), 0},
		{"three extension headers", ipv6(cloud, 0, ext(60, 0), ext(43, 0), ext(6, 0), data(443)), snapLen6},
		{"four extension headers", ipv6(cloud, 0, ext(60, 0), ext(43, 0), ext(60, 0), ext(6, 0), data(443)), 0},
		{"authentication header (not walked)", ipv6(cloud, 51, ext(6, 1), data(443)), 0},
		{"extension headers past the snap length", ipv6(cloud, 0, ext(60, 12), ext(6, 12), data(443)), 0},
		{"extension header cut short", ipv6(cloud, 0, []byte{6}), 0},
		{"tcp header cut short", ipv6(cloud, 6, []byte{1, 187, 156}), 0},
		{"ipv4", ipv4("198.19.0.1", 6, 0, data(443)), 0},
	}
	for _, c := range cases {
		got, err := vm.Run(c.pkt)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: filter returned %d, want %d", c.name, got, c.want)
			continue
		}
		p, ok := packetTuple(uplink.IPv6, c.pkt[:min(len(c.pkt), snapLen6)])
		if got == 0 {
			continue
		}
		want := tuple{src: netip.AddrFrom16([16]byte(c.pkt[8:24])), dst: netip.MustParseAddr("2001:db8:10::2"), srcPort: 443, dstPort: 40000}
		if !ok || p != want {
			t.Errorf("%s: tuple %+v, %v; want %+v", c.name, p, ok, want)
		}
	}
}

// eth0's IPv6 in the capture tests (the test bed's dual-stack world): the
// device's address, the cloud's echo service, and an address beyond the
// subnet that the router owns (its cloud side).
var (
	dev6    = netip.MustParseAddr("2001:db8:10::2")
	echo6   = netip.AddrPortFrom(testbed.Echo6Addr, testbed.EchoPort)
	beyond6 = netip.MustParseAddr("2001:db8:11::1")
)

// world6 is a dual-stack world with eth0 only (its IPv6 default route via
// the router's link-local fe80::1, as netifd installs one); it returns
// eth0's IPv6 prefix.
func world6(t *testing.T) (*testbed.World, netip.Prefix) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}, IPv6: testbed.V6Static})
	if a := w.MustUplink("eth0").Addr6; a != dev6 {
		t.Fatalf("eth0's IPv6 address is %v, want %v", a, dev6)
	}
	return w, netip.PrefixFrom(dev6, 64)
}

// Passive liveness over IPv6, next to IPv4 on the same uplink: replies of
// the device's own IPv6 connection are reported as IPv6 (to the uplink's
// IPv6 address), an IPv4 one's as IPv4; and once the upstream is
// black-holed, IPv6 noise from beyond the subnet (UDP, a blind spoofer of
// the connection's tuple, ACKs to another port) proves nothing.
func TestCaptureInWorld6(t *testing.T) {
	w, own6 := world6(t)
	_, r := startIn(t, w, own6)
	c4, _ := dialIn(t, w.Device, "tcp4", testbed.EchoURL())
	chat(c4, time.Second)
	n4, wrong := r.count(uplink.IPv4)
	if n6, _ := r.count(uplink.IPv6); n4 == 0 || n6 != 0 || wrong != 0 {
		t.Fatalf("IPv4 replies: %d IPv4 and %d IPv6 reports, %d to the wrong address", n4, n6, wrong)
	}

	c, local := dialIn(t, w.Device, "tcp6", echo6.String())
	if local.Addr() != dev6 {
		t.Fatalf("IPv6 connection from %v, want %v", local, dev6)
	}
	chat(c, 1500*time.Millisecond)
	n6, wrong := r.count(uplink.IPv6)
	if n6 == 0 || wrong != 0 || r.badAt.Load() != 0 {
		t.Fatalf("IPv6 replies: %d IPv6 reports, %d to the wrong address, %d with since not before at", n6, wrong, r.badAt.Load())
	}

	before := r.n.Load()
	blackHoleUnderNoise(t, w, r, c, "IPv6 noise", nil,
		testbed.Noise{From: netip.AddrPortFrom(beyond6, 5000), To: netip.AddrPortFrom(dev6, 40000), PerSecond: 50},
		testbed.Noise{From: echo6, To: local, TCPFlags: 0x10, PerSecond: 50},
		testbed.Noise{From: echo6, To: local, TCPFlags: 0x18, PerSecond: 50},
		testbed.Noise{From: netip.AddrPortFrom(beyond6, 443), To: netip.AddrPortFrom(dev6, 40001), TCPFlags: 0x10, PerSecond: 50})
	t.Logf("%d reports before the black hole, %d after it", before, r.n.Load()-before)
}

// IPv6 is forwarded without NAT: a LAN client's connection through the
// hub has the client's own address, and its replies arrive on the uplink
// addressed to the client. They prove the uplink's IPv6 like the hub's
// own (Local says the client's address); a blind spoofer of that
// connection's tuple on a black-holed uplink proves nothing.
func TestCaptureForwarded6(t *testing.T) {
	w, own6 := world6(t)
	lan, err := w.AddLAN("lan0")
	if err != nil {
		t.Fatal(err)
	}
	client := netip.MustParseAddr("2001:db8:100::2")
	if err := lan.NS.IP("addr add "+client.String()+"/64 dev eth0 nodad", "route add ::/0 via 2001:db8:100::1"); err != nil {
		t.Fatal(err)
	}
	if err := w.Device.IP("addr add 2001:db8:100::1/64 dev lan0 nodad"); err != nil {
		t.Fatal(err)
	}
	if err := w.Device.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
		t.Fatal(err)
	}
	// The delegated prefix is routed to the hub, as the ISP does.
	if err := w.MustUplink("eth0").Router.IP("route add 2001:db8:100::/64 via " + dev6.String()); err != nil {
		t.Fatal(err)
	}
	if err := w.Cloud.IP("route add 2001:db8:100::/64 via 2001:db8:11::1"); err != nil {
		t.Fatal(err)
	}
	lan.NS.WaitNoTentative(t, 5*time.Second)
	_, r := startIn(t, w, own6)
	r.expect(uplink.IPv6, client)
	c, local := dialIn(t, lan.NS, "tcp6", echo6.String())
	if local.Addr() != client {
		t.Fatalf("the client's connection is from %v, want %v (forwarded, not masqueraded)", local, client)
	}
	chat(c, 1500*time.Millisecond)
	if n6, wrong := r.count(uplink.IPv6); n6 == 0 || wrong != 0 {
		t.Fatalf("forwarded IPv6 replies: %d reports, %d with the wrong local address", n6, wrong)
	}
	blackHoleUnderNoise(t, w, r, c, "spoofed segments to the client", nil,
		testbed.Noise{From: echo6, To: local, TCPFlags: 0x18, PerSecond: 50})
}

// The filters hold maxPrefixes own prefixes of each family (each one
// excluded, its neighbour not), and refuse more with a clear error
// rather than build a program whose jumps do not reach.
func TestFilterPrefixLimit(t *testing.T) {
	var own []netip.Prefix
	for i := range maxPrefixes {
		own = append(own, netip.MustParsePrefix(fmt.Sprintf("2001:db8:%x::7/128", i+1)), netip.MustParsePrefix(fmt.Sprintf("198.18.%d.2/32", i+1)))
	}
	data := withPorts(tcp(0x18, 1), 443, 40000)
	for _, f := range []uplink.Family{uplink.IPv4, uplink.IPv6} {
		prog, err := filter(f, own)
		if err != nil {
			t.Fatalf("%v, %d prefixes: %v", f, maxPrefixes, err)
		}
		if _, err := assemble(prog); err != nil {
			t.Fatal(err)
		}
		vm := newVM(t, f, prefixStrings(own)...)
		for i := range maxPrefixes {
			in, next := fmt.Sprintf("2001:db8:%x::7", i+1), fmt.Sprintf("2001:db8:%x::8", i+1)
			pkt := func(src string) []byte { return ipv6(src, 6, data) }
			if f == uplink.IPv4 {
				in, next = fmt.Sprintf("198.18.%d.2", i+1), fmt.Sprintf("198.18.%d.3", i+1)
				pkt = func(src string) []byte { return ipv4(src, 6, 0, data) }
			}
			if got, _ := vm.Run(pkt(in)); got != 0 {
				t.Errorf("%v: from own %s accepted", f, in)
			}
			if got, _ := vm.Run(pkt(next)); got != snapLen(f) {
				t.Errorf("%v: from %s (beyond) dropped", f, next)
			}
		}
	}
	more := append(own, netip.MustParsePrefix("2001:db8:ee::/64"))
	if _, err := filter(uplink.IPv6, more); err == nil || !strings.Contains(err.Error(), "more than 8 ipv6 prefixes") {
		t.Fatalf("%d IPv6 prefixes: %v", maxPrefixes+1, err)
	}
	if _, err := Start(Config{Device: "eth0", Prefixes: more, OnAlive: func(Alive) {}}); err == nil || !strings.Contains(err.Error(), "capture on eth0: more than 8 ipv6 prefixes") {
		t.Fatalf("Start with %d IPv6 prefixes: %v", maxPrefixes+1, err)
	}
}

func prefixStrings(ps []netip.Prefix) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return out
}
