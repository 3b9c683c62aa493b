package dnsx

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// names is a test whitelist: exact names, and "*.suffix" entries matching
// any name below suffix.
type names []string

func (n names) Match(s string) bool {
	for _, e := range n {
		if rest, ok := strings.CutPrefix(e, "*."); ok {
			if strings.HasSuffix(s, "."+rest) {
				return true
			}
		} else if e == s {
			return true
		}
	}
	return false
}

// reply builds a reply to (name, qtype) with the given records in zone-file
// syntax, compressed.
func reply(t testing.TB, id uint16, name string, qtype uint16, rrs ...string) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = id
	m.Response = true
	m.RecursionAvailable = true
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("rr %q: %v", s, err)
		}
		m.Answer = append(m.Answer, rr)
	}
	m.Compress = true
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack: %v", err)
	}
	return b
}

func query(t testing.TB, id uint16, name string, qtype uint16) []byte {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.Id = id
	b, err := m.Pack()
	if err != nil {
		t.Fatalf("pack: %v", err)
	}
	return b
}

// ipPacket wraps a DNS message in an IPv4 or IPv6 UDP or TCP packet.
func ipPacket(proto uint8, src, dst netip.AddrPort, msg []byte) []byte {
	var l4 []byte
	if proto == ProtoUDP {
		l4 = make([]byte, 8, 8+len(msg))
		binary.BigEndian.PutUint16(l4[4:], uint16(8+len(msg)))
		l4 = append(l4, msg...)
	} else {
		l4 = make([]byte, 20, 22+len(msg))
		l4[12] = 5 << 4
		l4 = binary.BigEndian.AppendUint16(l4, uint16(len(msg)))
		l4 = append(l4, msg...)
	}
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	if src.Addr().Is4() {
		h := make([]byte, 20, 20+len(l4))
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		h[8] = 64
		h[9] = proto
		s, d := src.Addr().As4(), dst.Addr().As4()
		copy(h[12:], s[:])
		copy(h[16:], d[:])
		return append(h, l4...)
	}
	h := make([]byte, 40, 40+len(l4))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = 64
	s, d := src.Addr().As16(), dst.Addr().As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, l4...)
}

var (
	client   = netip.MustParseAddrPort("198.18.0.2:40000")
	resolver = netip.MustParseAddrPort("198.18.1.1:53")
)

func netipMust(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func netipFrom(ip []byte) (netip.Addr, bool) {
	if v4 := net.IP(ip).To4(); v4 != nil && len(ip) == 4 {
		return netip.AddrFrom4([4]byte(v4)), true
	}
	return netip.AddrFromSlice(ip)
}

// tcpNumbers sets the sequence and acknowledgement numbers of an ipPacket TCP segment.
func tcpNumbers(b []byte, seq, ack uint32) []byte {
	l4 := b[20:]
	if b[0]>>4 == 6 {
		l4 = b[40:]
	}
	binary.BigEndian.PutUint32(l4[4:], seq)
	binary.BigEndian.PutUint32(l4[8:], ack)
	l4[13] |= TCPFlagACK
	return b
}
