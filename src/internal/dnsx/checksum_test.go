package dnsx

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/afero/af-conn/internal/checksum"
)

// withChecksum fills in the right UDP/TCP checksum of an ipPacket, then adds delta to it.
func withChecksum(b []byte, delta uint16) []byte {
	var src, dst, l4 []byte
	var proto byte
	if b[0]>>4 == 4 {
		src, dst, l4, proto = b[12:16], b[16:20], b[20:], b[9]
	} else {
		src, dst, l4, proto = b[8:24], b[24:40], b[40:], b[6]
	}
	off := 6
	if proto == ProtoTCP {
		off = 16
	}
	binary.BigEndian.PutUint16(l4[off:], 0)
	ph := append(append(append([]byte{}, src...), dst...), 0, 0, byte(len(l4)>>8), byte(len(l4)), 0, 0, 0, proto)
	binary.BigEndian.PutUint16(l4[off:], checksum.Internet(append(ph, l4...))+delta)
	return b
}

func TestChecksumOK(t *testing.T) {
	c6 := netip.MustParseAddrPort("[2001:db8::2]:40000")
	r6 := netip.MustParseAddrPort("[2001:db8:1::1]:53")
	msg := []byte("\x12\x34\x81\x80\x00\x00\x00\x00\x00\x00\x00\x00")
	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"udp4 right", withChecksum(ipPacket(ProtoUDP, resolver, client, msg), 0), true},
		{"udp4 none (0)", ipPacket(ProtoUDP, resolver, client, msg), true},
		{"udp4 wrong", withChecksum(ipPacket(ProtoUDP, resolver, client, msg), 1), false},
		{"udp6 right", withChecksum(ipPacket(ProtoUDP, r6, c6, msg), 0), true},
		{"udp6 none (0) is wrong", ipPacket(ProtoUDP, r6, c6, msg), false},
		{"udp6 wrong", withChecksum(ipPacket(ProtoUDP, r6, c6, msg), 7), false},
		{"tcp4 right", withChecksum(ipPacket(ProtoTCP, resolver, client, msg), 0), true},
		{"tcp4 wrong", withChecksum(ipPacket(ProtoTCP, resolver, client, msg), 1), false},
		{"tcp6 right", withChecksum(ipPacket(ProtoTCP, r6, c6, msg), 0), true},
	} {
		pk, err := DecodePacket(tc.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := pk.ChecksumOK(); got != tc.want {
			t.Errorf("%s: ChecksumOK %v, want %v", tc.name, got, tc.want)
		}
	}
}
