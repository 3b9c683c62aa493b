package capture

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/afero/af-conn/internal/uplink"

	"github.com/afero/af-conn/internal/testbed"
)

// sentPacket is an IPv4 TCP segment from the device to dst with flags and
// payload bytes of data.
func sentPacket(dst string, frag uint16, dport uint16, flags byte, payload int) []byte {
	b := ipv4("198.18.10.2", 6, frag, withPorts(tcp(flags, payload), 40000, dport))
	d := netip.MustParseAddr(dst).As4()
	copy(b[16:], d[:])
	return b
}

func sentVM(t testing.TB, f uplink.Family, own ...string) *bpf.VM {
	t.Helper()
	var ps []netip.Prefix
	for _, o := range own {
		ps = append(ps, netip.MustParsePrefix(o))
	}
	prog, err := sentIPFilter(f, ps)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

// sentCase is a packet and what the sent-traffic filter must return.
type sentCase struct {
	name string
	pkt  []byte
	want int
}

func runSentCases(t *testing.T, vm *bpf.VM, cases []sentCase) {
	t.Helper()
	for _, c := range cases {
		got, err := vm.Run(c.pkt)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: filter returned %d, want %d", c.name, got, c.want)
		}
	}
}

func TestSentFilterProgram(t *testing.T) {
	vm := sentVM(t, uplink.IPv4, "198.18.10.2/24")
	cloud := "198.19.0.1"
	cases := []sentCase{
		{"data to beyond", sentPacket(cloud, 0, 443, 0x18, 5), snapLen4},
		{"one byte of data", sentPacket(cloud, 0, 443, 0x10, 1), snapLen4},
		{"syn to beyond", sentPacket(cloud, 0, 443, 0x02, 0), snapLen4},
		{"fin to beyond", sentPacket(cloud, 0, 443, 0x11, 0), snapLen4},
		{"data with tcp options", func() []byte {
			b := sentPacket(cloud, 0, 443, 0x18, 12)
			b[20+12] = 8 << 4 // 32-byte header: 0 bytes of data left
			return b
		}(), 0},
		{"data with tcp options and payload", func() []byte {
			b := sentPacket(cloud, 0, 443, 0x18, 13)
			b[20+12] = 8 << 4
			return b
		}(), snapLen4},
		{"pure ack asks nothing", sentPacket(cloud, 0, 443, 0x10, 0), 0},
		{"reset asks nothing", sentPacket(cloud, 0, 443, 0x14, 0), 0},
		{"to the gateway", sentPacket("198.18.10.1", 0, 443, 0x18, 5), 0},
		{"dns over tcp", sentPacket(cloud, 0, 53, 0x18, 5), 0},
		{"ntp port", sentPacket(cloud, 0, 123, 0x18, 5), 0},
		{"udp", func() []byte {
			b := ipv4("198.18.10.2", 17, 0, make([]byte, 20))
			d := netip.MustParseAddr(cloud).As4()
			copy(b[16:], d[:])
			return b
		}(), 0},
		{"non-first fragment", sentPacket(cloud, 100, 443, 0x18, 5), 0},
		{"ipv6", to6("2001:db8:ff::1", ipv6("2001:db8:10::2", 6, withPorts(tcp(0x18, 5), 40000, 443))), 0},
	}
	runSentCases(t, vm, cases)
}

// to6 makes an IPv6 packet built by ipv6 (to the device) one the device
// sends: from its address to dst.
func to6(dst string, b []byte) []byte {
	copy(b[8:24], b[24:40])
	d := netip.MustParseAddr(dst).As16()
	copy(b[24:], d[:])
	return b
}

func TestSentFilterProgram6(t *testing.T) {
	vm := sentVM(t, uplink.IPv6, "2001:db8:10::2/64", "2001:db8:99::7/128")
	cloud := "2001:db8:ff::1"
	seg := func(dport uint16, flags byte, payload int) []byte {
		return withPorts(tcp(flags, payload), 40000, dport)
	}
	pkt := func(dst string, next byte, parts ...[]byte) []byte {
		return to6(dst, ipv6("2001:db8:10::2", next, parts...))
	}
	cases := []sentCase{
		{"data to beyond", pkt(cloud, 6, seg(443, 0x18, 5)), snapLen6},
		{"one byte of data", pkt(cloud, 6, seg(443, 0x10, 1)), snapLen6},
		{"syn to beyond", pkt(cloud, 6, seg(443, 0x02, 0)), snapLen6},
		{"fin to beyond", pkt(cloud, 6, seg(443, 0x11, 0)), snapLen6},
		{"data after a hop-by-hop and a destination options header", pkt(cloud, 0, ext(60, 0), ext(6, 1), seg(443, 0x18, 5)), snapLen6},
		{"first fragment with data", pkt(cloud, 44, frag(6, 0x0001), seg(443, 0x18, 5)), snapLen6},
		{"non-first fragment", pkt(cloud, 44, frag(6, 0x0100), seg(443, 0x18, 5)), 0},
		{"data with tcp options", func() []byte {
			b := pkt(cloud, 6, seg(443, 0x18, 12))
			b[40+12] = 8 << 4 // 32-byte header: no data left
			return b
		}(), 0},
		{"data with tcp options and payload", func() []byte {
			b := pkt(cloud, 6, seg(443, 0x18, 13))
			b[40+12] = 8 << 4
			return b
		}(), snapLen6},
		{"options after an extension header, no data", func() []byte {
			b := pkt(cloud, 60, ext(6, 0), seg(443, 0x18, 12))
			b[48+12] = 8 << 4
			return b
		}(), 0},
		{"pure ack asks nothing", pkt(cloud, 6, seg(443, 0x10, 0)), 0},
		{"reset asks nothing", pkt(cloud, 6, seg(443, 0x14, 5)), 0},
		{"to a neighbour in the prefix", pkt("2001:db8:10::1", 6, seg(443, 0x18, 5)), 0},
		{"to the other own prefix", pkt("2001:db8:99::7", 6, seg(443, 0x18, 5)), 0},
		{"to the link-local gateway", pkt("fe80::1", 6, seg(443, 0x18, 5)), 0},
		{"dns over tcp", pkt(cloud, 6, seg(53, 0x18, 5)), 0},
		{"dhcpv6 port", pkt(cloud, 6, seg(547, 0x18, 5)), 0},
		{"udp", pkt(cloud, 17, make([]byte, 20)), 0},
		{"esp", pkt(cloud, 50, ext(6, 0), seg(443, 0x18, 5)), 0},
		{"ipv4", sentPacket("198.19.0.1", 0, 443, 0x18, 5), 0},
	}
	runSentCases(t, vm, cases)
}

// FuzzSentFilter runs each family's sent-traffic program on arbitrary
// bytes: it never faults, only accepts the headers or drops, and what it
// accepts is a TCP segment of the family to outside the uplink's own
// prefixes (not link-local), to no excluded port, without RST.
func FuzzSentFilter(f *testing.F) {
	f.Add(sentPacket("198.19.0.1", 0, 443, 0x18, 5), false)
	f.Add(to6("2001:db8:ff::1", ipv6("2001:db8:10::2", 6, withPorts(tcp(0x18, 5), 40000, 443))), true)
	f.Add(to6("2001:db8:ff::1", ipv6("2001:db8:10::2", 0, ext(44, 0), frag(6, 1), withPorts(tcp(0x02, 0), 40000, 443))), true)
	own := []string{"198.18.10.2/24", "2001:db8:10::2/64", "2001:db8:99::7/128"}
	vms := map[uplink.Family]*bpf.VM{uplink.IPv4: sentVM(f, uplink.IPv4, own[0]), uplink.IPv6: sentVM(f, uplink.IPv6, own[1:]...)}
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		fam := uplink.IPv4
		if v6 {
			fam = uplink.IPv6
		}
		n, err := vms[fam].Run(b)
		if err != nil || (n != 0 && n != snapLen(fam)) {
			t.Fatalf("%x: %d %v", b, n, err)
		}
		if n == 0 {
			return
		}
		if fam == uplink.IPv4 && (len(b) < 20 || b[0]>>4 != 4 || b[9] != 6 || binary.BigEndian.Uint16(b[6:])&0x1fff != 0) {
			t.Fatalf("accepted a packet that is not a first IPv4 TCP fragment: %x", b)
		}
		p, ok := packetTuple(fam, b[:min(len(b), n)])
		if !ok {
			t.Fatalf("%v filter accepted %x, but it has no tuple", fam, b)
		}
		if p.dst.IsLinkLocalUnicast() || slices.Contains(excludedPorts, uint32(p.dstPort)) {
			t.Fatalf("%v filter accepted %x to %v port %d", fam, b, p.dst, p.dstPort)
		}
		for _, o := range own {
			if netip.MustParsePrefix(o).Masked().Contains(p.dst) {
				t.Fatalf("%v filter accepted %x to %v, inside the uplink's own %s", fam, b, p.dst, o)
			}
		}
	})
}

// An echo connection with a message every 200 ms: answered while the
// upstream works, unanswered (within the bound) once it is black-holed;
// in each family, the other family's traffic left alone.
func TestSentUnansweredInWorld(t *testing.T) {
	t.Run("ipv4", func(t *testing.T) { sentUnanswered(t, uplink.IPv4) })
	t.Run("ipv6", func(t *testing.T) { sentUnanswered(t, uplink.IPv6) })
}

func sentUnanswered(t *testing.T, fam uplink.Family) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}, IPv6: testbed.V6Static})
	if err := w.TrackConnections(); err != nil {
		t.Fatal(err)
	}
	u := w.MustUplink("eth0")
	own, network, echo := netip.PrefixFrom(u.Addr, 24), "tcp4", testbed.EchoURL()
	if fam == uplink.IPv6 {
		own, network, echo = u.Prefix6, "tcp6", testbed.Echo6URL()
	}
	var n atomic.Int64
	var last atomic.Int64 // sent time of the last report
	s, err := WatchSent(SentConfig{Device: "eth0", Prefixes: []netip.Prefix{own}, Bound: 300 * time.Millisecond,
		Period: 100 * time.Millisecond, Namespace: w.Device.Handle(t),
		OnUnanswered: func(sent, at time.Time) {
			if at.Sub(sent) < 300*time.Millisecond {
				t.Errorf("report %v after the send, before the bound", at.Sub(sent))
			}
			n.Add(1)
			last.Store(sent.UnixNano())
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := w.Device.Dial(ctx, network, echo)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chat := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			c.Write([]byte("ping\n"))
		}
	}
	go func() {
		b := make([]byte, 100)
		for {
			if _, err := c.Read(b); err != nil {
				return
			}
		}
	}()
	chat(2 * time.Second)
	if n.Load() != 0 || s.Samples() == 0 {
		t.Fatalf("working upstream: %d of %d samples reported unanswered, want 0 of some", n.Load(), s.Samples())
	}
	other := 4
	if fam == uplink.IPv4 {
		other = 6
	}
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true, Family: other}); err != nil {
		t.Fatal(err)
	}
	chat(1500 * time.Millisecond)
	if n.Load() != 0 {
		t.Fatalf("only the other family black-holed: %d reports", n.Load())
	}
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true, Family: int(fam)}); err != nil {
		t.Fatal(err)
	}
	faultAt := time.Now()
	chat(1500 * time.Millisecond)
	if n.Load() == 0 || time.Unix(0, last.Load()).Before(faultAt) {
		t.Fatalf("black hole: %d reports (last for a send at %v, fault at %v), want one for a send after the fault",
			n.Load(), time.Unix(0, last.Load()).Format("15:04:05.000"), faultAt.Format("15:04:05.000"))
	}
}
