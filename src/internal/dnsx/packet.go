package dnsx

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/afero/af-conn/internal/checksum"
)

// Errors of DecodePacket.
var (
	ErrNotIP       = errors.New("not an IPv4 or IPv6 packet")
	ErrFragment    = errors.New("IP fragment")
	ErrTransport   = errors.New("not UDP or TCP")
	ErrTCPSegment  = errors.New("TCP segment does not hold exactly one DNS message")
	ErrPacketShort = errors.New("packet truncated")
)

// TCP flags of Packet.Flags.
const (
	TCPFlagSYN = 0x02
	TCPFlagACK = 0x10
)

// Packet is an IP packet carrying DNS: its transport, source and
// destination, and the DNS message (for TCP without the length prefix).
type Packet struct {
	Proto   uint8
	Src     netip.AddrPort
	Dst     netip.AddrPort
	Payload []byte
	// Seq and Ack are a TCP segment's sequence and acknowledgement numbers and Flags its
	// flags (0 for UDP).
	Seq, Ack uint32
	Flags    uint8
	l4       []byte // the transport header and data, for ChecksumOK
}

// DecodePacket decodes an IPv4 or IPv6 packet starting at the network
// header (what AF_PACKET SOCK_DGRAM and NFQUEUE hand out). UDP payloads are
// taken whole. A TCP segment counts only if it holds exactly one DNS message
// with its two-octet length prefix (how resolvers send small replies);
// segmented TCP streams are not reassembled. IPv4 fragments and IPv6
// extension headers are not handled: DNS over UDP of that size does not
// carry whitelist answers in practice, and the error is counted.
func DecodePacket(b []byte) (Packet, error) {
	if len(b) < 1 {
		return Packet{}, fmt.Errorf("ip: empty: %w", ErrPacketShort)
	}
	var pk Packet
	var l4 []byte
	var src, dst netip.Addr
	switch b[0] >> 4 {
	case 4:
		if len(b) < 20 {
			return Packet{}, fmt.Errorf("ipv4 header: %d bytes: %w", len(b), ErrPacketShort)
		}
		ihl := int(b[0]&0xf) * 4
		total := int(binary.BigEndian.Uint16(b[2:]))
		if ihl < 20 || total < ihl || total > len(b) {
			return Packet{}, fmt.Errorf("ipv4 header: ihl %d total %d of %d bytes: %w", ihl, total, len(b), ErrPacketShort)
		}
		if frag := binary.BigEndian.Uint16(b[6:]); frag&0x3fff != 0 {
			return Packet{}, fmt.Errorf("ipv4 flags/offset 0x%04x: %w", frag, ErrFragment)
		}
		pk.Proto = b[9]
		src = netip.AddrFrom4([4]byte(b[12:16]))
		dst = netip.AddrFrom4([4]byte(b[16:20]))
		l4 = b[ihl:total]
	case 6:
		if len(b) < 40 {
			return Packet{}, fmt.Errorf("ipv6 header: %d bytes: %w", len(b), ErrPacketShort)
		}
		plen := int(binary.BigEndian.Uint16(b[4:]))
		if 40+plen > len(b) {
			return Packet{}, fmt.Errorf("ipv6 payload length %d of %d bytes: %w", plen, len(b)-40, ErrPacketShort)
		}
		pk.Proto = b[6]
		src = netip.AddrFrom16([16]byte(b[8:24]))
		dst = netip.AddrFrom16([16]byte(b[24:40]))
		l4 = b[40 : 40+plen]
	default:
		return Packet{}, fmt.Errorf("ip version %d: %w", b[0]>>4, ErrNotIP)
	}
	switch pk.Proto {
	case ProtoUDP:
		if len(l4) < 8 {
			return Packet{}, fmt.Errorf("udp header: %d bytes: %w", len(l4), ErrPacketShort)
		}
		ulen := int(binary.BigEndian.Uint16(l4[4:]))
		if ulen < 8 || ulen > len(l4) {
			return Packet{}, fmt.Errorf("udp length %d of %d bytes: %w", ulen, len(l4), ErrPacketShort)
		}
		pk.Payload = l4[8:ulen]
	case ProtoTCP:
		if len(l4) < 20 {
			return Packet{}, fmt.Errorf("tcp header: %d bytes: %w", len(l4), ErrPacketShort)
		}
		doff := int(l4[12]>>4) * 4
		if doff < 20 || doff > len(l4) {
			return Packet{}, fmt.Errorf("tcp data offset %d of %d bytes: %w", doff, len(l4), ErrPacketShort)
		}
		data := l4[doff:]
		if len(data) < 2 || int(binary.BigEndian.Uint16(data)) != len(data)-2 {
			return Packet{}, fmt.Errorf("tcp payload of %d bytes: %w", len(data), ErrTCPSegment)
		}
		pk.Payload = data[2:]
		pk.Seq, pk.Ack, pk.Flags = binary.BigEndian.Uint32(l4[4:]), binary.BigEndian.Uint32(l4[8:]), l4[13]
	default:
		return Packet{}, fmt.Errorf("ip protocol %d: %w", pk.Proto, ErrTransport)
	}
	pk.l4 = l4
	pk.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
	pk.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
	return pk, nil
}

// ChecksumOK says whether the packet's UDP or TCP checksum is right (an IPv4 UDP checksum of 0
// means none was computed). A packet with a wrong one is dropped by the host's own stack, so
// what it says must not be believed either; the caller asks only when the kernel has not
// already vouched for the packet (see dnscap.Frame.ChecksumTrusted).
func (pk Packet) ChecksumOK() bool {
	if len(pk.l4) < 8 {
		return false
	}
	if pk.Proto == ProtoUDP && pk.Src.Addr().Is4() && binary.BigEndian.Uint16(pk.l4[6:]) == 0 {
		return true
	}
	src, dst := pk.Src.Addr().AsSlice(), pk.Dst.Addr().AsSlice()
	pseudo := make([]byte, 0, 2*len(src)+8+len(pk.l4))
	pseudo = append(pseudo, src...)
	pseudo = append(pseudo, dst...)
	pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(pk.l4)))
	pseudo = append(pseudo, 0, 0, 0, pk.Proto)
	return checksum.Internet(append(pseudo, pk.l4...)) == 0
}
