package capture

// The kernel filters, one per family, and the parsers of what they accept.
// The packet socket is SOCK_DGRAM, so offset 0 is the IP header on every
// link type.

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/uplink"
)

// What the filters copy of a wanted packet: the headers up to the TCP
// ports. IPv4: the header (at most 60 bytes) and the ports. IPv6: the
// header, extension headers up to maxTCPOffset6 and the ports.
const (
	snapLen4      = 64
	maxTCPOffset6 = 200
	snapLen6      = maxTCPOffset6 + 4
)

// maxExtHeaders6 is how many IPv6 extension headers (hop-by-hop, routing,
// destination options, fragment) the filter walks before the TCP header;
// a packet with more, or with another one (AH, ESP, ...), is dropped. The
// cloud's replies carry none; more would only cost the filter time.
const maxExtHeaders6 = 3

// maxPrefixes bounds the uplink's own prefixes per family (each costs the
// filter a few instructions; jumps reach 255 instructions at most).
const maxPrefixes = 8

func snapLen(f uplink.Family) int {
	if f == uplink.IPv6 {
		return snapLen6
	}
	return snapLen4
}

// excludedPorts are the source ports whose replies prove a service, not
// the cloud: DNS, DNS over TLS, NTP, DHCP (DHCPv6: 547, 546).
var excludedPorts = []uint32{53, 853, 123, 67, 68, 547, 546}

// filter is the kernel program for family f: accept (the headers of) a
// packet addressed to this host (not broadcast, multicast or outgoing)
// that ipFilter wants.
func filter(f uplink.Family, own []netip.Prefix) ([]bpf.Instruction, error) {
	ip, err := ipFilter(f, own)
	if err != nil {
		return nil, err
	}
	return append([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_HOST, SkipFalse: 1},
		bpf.Jump{Skip: 1},
		bpf.RetConstant{Val: 0},
	}, ip...), nil
}

// ipFilter is the part of filter that looks at the IP packet only (the
// part x/net/bpf's VM can run in tests): a TCP segment of family f, not a
// non-first fragment, from outside the own prefixes (and, for IPv6, not
// from a link-local address: that is the neighbourhood too), from none of
// excludedPorts, with ACK and without SYN or RST.
func ipFilter(f uplink.Family, own []netip.Prefix) ([]bpf.Instruction, error) {
	var a asm
	if err := a.ipHeader(f, own, false); err != nil {
		return nil, err
	}
	// The TCP header is at X.
	a.add(bpf.LoadIndirect{Off: 0, Size: 2}) // source port
	for _, p := range excludedPorts {
		a.jumpIf(bpf.JumpEqual, p, "drop", "")
	}
	a.add(bpf.LoadIndirect{Off: 13, Size: 1}) // flags
	a.jumpIf(bpf.JumpBitsSet, 0x02|0x04, "drop", "")
	a.jumpIf(bpf.JumpBitsSet, 0x10, "accept", "drop")
	a.label("drop")
	a.add(bpf.RetConstant{Val: 0})
	a.label("accept")
	a.add(bpf.RetConstant{Val: uint32(snapLen(f))})
	return a.program()
}

// ipHeader checks the IP header of family f, the remote address outside
// own (the source of a received packet, the destination of a sent one:
// sent), and leaves X at the TCP header.
func (a *asm) ipHeader(f uplink.Family, own []netip.Prefix, sent bool) error {
	if f == uplink.IPv6 {
		off := uint32(8)
		if sent {
			off = 24
		}
		return a.ip6(own, off)
	}
	off := uint32(12)
	if sent {
		off = 16
	}
	return a.ip4(own, off)
}

// ip4 checks the IPv4 header, the address at off outside own, and leaves
// X at the TCP header.
func (a *asm) ip4(own []netip.Prefix, off uint32) error {
	a.add(bpf.LoadAbsolute{Off: 0, Size: 1}, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.jumpIf(bpf.JumpNotEqual, 0x40, "drop", "")
	a.add(bpf.LoadAbsolute{Off: 0, Size: 1}, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x0f})
	a.jumpIf(bpf.JumpLessThan, 5, "drop", "") // a header shorter than 20 bytes is no header
	if err := a.notFrom(uplink.IPv4, own, off); err != nil {
		return err
	}
	a.add(bpf.LoadAbsolute{Off: 6, Size: 2}) // fragment offset
	a.jumpIf(bpf.JumpBitsSet, 0x1fff, "drop", "")
	a.add(bpf.LoadAbsolute{Off: 9, Size: 1})
	a.jumpIf(bpf.JumpNotEqual, unix.IPPROTO_TCP, "drop", "")
	a.add(bpf.LoadMemShift{Off: 0}) // X = IPv4 header length
	return nil
}

// ip6 checks the IPv6 header, the address at off neither link-local nor
// inside own, walks up to maxExtHeaders6 extension headers and leaves X
// at the TCP header.
func (a *asm) ip6(own []netip.Prefix, off uint32) error {
	a.add(bpf.LoadAbsolute{Off: 0, Size: 1}, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0})
	a.jumpIf(bpf.JumpNotEqual, 0x60, "drop", "")
	a.add(bpf.LoadAbsolute{Off: off, Size: 4}, bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xffc00000})
	a.jumpIf(bpf.JumpEqual, 0xfe800000, "drop", "") // fe80::/10
	if err := a.notFrom(uplink.IPv6, own, off); err != nil {
		return err
	}
	a.add(bpf.LoadAbsolute{Off: 6, Size: 1}, bpf.LoadConstant{Dst: bpf.RegX, Val: 40})
	// A: the next header's type; X: its offset.
	for i := range maxExtHeaders6 {
		ext, frag, next := fmt.Sprint("ext", i), fmt.Sprint("frag", i), fmt.Sprint("next", i)
		a.jumpIf(bpf.JumpEqual, unix.IPPROTO_TCP, "tcp", "")
		a.jumpIf(bpf.JumpEqual, unix.IPPROTO_HOPOPTS, ext, "")
		a.jumpIf(bpf.JumpEqual, unix.IPPROTO_ROUTING, ext, "")
		a.jumpIf(bpf.JumpEqual, unix.IPPROTO_DSTOPTS, ext, "")
		a.jumpIf(bpf.JumpEqual, unix.IPPROTO_FRAGMENT, frag, "drop")
		a.label(ext) // X += (length + 1) * 8
		a.add(
			bpf.LoadIndirect{Off: 0, Size: 1}, bpf.StoreScratch{Src: bpf.RegA, N: 0},
			bpf.LoadIndirect{Off: 1, Size: 1},
			bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: 1}, bpf.ALUOpConstant{Op: bpf.ALUOpShiftLeft, Val: 3},
			bpf.ALUOpX{Op: bpf.ALUOpAdd}, bpf.TAX{},
			bpf.LoadScratch{Dst: bpf.RegA, N: 0},
		)
		a.jump(next)
		a.label(frag) // a non-first fragment has no TCP header; X += 8
		a.add(bpf.LoadIndirect{Off: 2, Size: 2})
		a.jumpIf(bpf.JumpBitsSet, 0xfff8, "drop", "")
		a.add(
			bpf.LoadIndirect{Off: 0, Size: 1}, bpf.StoreScratch{Src: bpf.RegA, N: 0},
			bpf.TXA{}, bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: 8}, bpf.TAX{},
			bpf.LoadScratch{Dst: bpf.RegA, N: 0},
		)
		a.label(next)
	}
	a.jumpIf(bpf.JumpEqual, unix.IPPROTO_TCP, "", "drop")
	a.label("tcp") // within what the filter copies, with the ports
	a.add(bpf.TXA{})
	a.jumpIf(bpf.JumpGreaterThan, maxTCPOffset6, "drop", "")
	return nil
}

// notFrom drops a packet whose address at offset off (the source, or a
// sent packet's destination) is inside one of the own prefixes of family f.
func (a *asm) notFrom(f uplink.Family, own []netip.Prefix, off uint32) error {
	n := 0
	for _, p := range own {
		if uplink.FamilyOf(p.Addr()) != f {
			continue
		}
		if n++; n > maxPrefixes {
			return fmt.Errorf("more than %d %v prefixes", maxPrefixes, f)
		}
		p = p.Masked()
		b := p.Addr().Unmap().AsSlice()
		other := fmt.Sprint("notin", n)
		for w := 0; w*32 < p.Bits(); w++ {
			mask := ^uint32(0)
			if bits := p.Bits() - w*32; bits < 32 {
				mask <<= 32 - bits
			}
			a.add(bpf.LoadAbsolute{Off: off + uint32(4*w), Size: 4})
			if mask != ^uint32(0) {
				a.add(bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask})
			}
			a.jumpIf(bpf.JumpNotEqual, binary.BigEndian.Uint32(b[4*w:]), other, "")
		}
		a.jump("drop") // every word matched (or a /0)
		a.label(other)
	}
	return nil
}

// asm builds a classic BPF program whose jumps name their targets.
type asm struct {
	prog   []bpf.Instruction
	labels map[string]int
	jumps  []jumpTo
}

// jumpTo is a jump at prog[at] to labels t and f ("" is the next
// instruction).
type jumpTo struct {
	at   int
	t, f string
}

func (a *asm) add(ins ...bpf.Instruction) { a.prog = append(a.prog, ins...) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) jumpIf(cond bpf.JumpTest, val uint32, t, f string) {
	a.jumps = append(a.jumps, jumpTo{len(a.prog), t, f})
	a.add(bpf.JumpIf{Cond: cond, Val: val})
}

// jumpIfX is jumpIf comparing A with X.
func (a *asm) jumpIfX(cond bpf.JumpTest, t, f string) {
	a.jumps = append(a.jumps, jumpTo{len(a.prog), t, f})
	a.add(bpf.JumpIfX{Cond: cond})
}

func (a *asm) jump(to string) {
	a.jumps = append(a.jumps, jumpTo{len(a.prog), to, ""})
	a.add(bpf.Jump{})
}

// program resolves the jumps: all go forward, conditional ones at most
// 255 instructions.
func (a *asm) program() ([]bpf.Instruction, error) {
	skip := func(j jumpTo, to string) (uint32, error) {
		if to == "" {
			return 0, nil
		}
		at, ok := a.labels[to]
		if !ok || at <= j.at {
			return 0, fmt.Errorf("filter: jump from %d to %q (%d)", j.at, to, at)
		}
		return uint32(at - j.at - 1), nil
	}
	for _, j := range a.jumps {
		t, err := skip(j, j.t)
		if err != nil {
			return nil, err
		}
		f, err := skip(j, j.f)
		if err != nil {
			return nil, err
		}
		switch ins := a.prog[j.at].(type) {
		case bpf.Jump:
			ins.Skip = t
			a.prog[j.at] = ins
		case bpf.JumpIf:
			if t > 255 || f > 255 {
				return nil, fmt.Errorf("filter: jump from %d too far (%d, %d)", j.at, t, f)
			}
			ins.SkipTrue, ins.SkipFalse = uint8(t), uint8(f)
			a.prog[j.at] = ins
		case bpf.JumpIfX:
			if t > 255 || f > 255 {
				return nil, fmt.Errorf("filter: jump from %d too far (%d, %d)", j.at, t, f)
			}
			ins.SkipTrue, ins.SkipFalse = uint8(t), uint8(f)
			a.prog[j.at] = ins
		}
	}
	return a.prog, nil
}

// packetTuple reads the tuple of a packet of family f the filter
// accepted (any bytes: false when they hold no TCP ports where the
// filter would have found them).
func packetTuple(f uplink.Family, b []byte) (tuple, bool) {
	t, _, ok := packetTCP(f, b)
	return t, ok
}

// packetTCP is packetTuple that also returns the offset of the TCP header.
func packetTCP(f uplink.Family, b []byte) (tuple, int, bool) {
	if f == uplink.IPv6 {
		return packetTuple6(b)
	}
	if len(b) < 20 || b[0]>>4 != 4 {
		return tuple{}, 0, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+4 {
		return tuple{}, 0, false
	}
	return tuple{
		src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])),
		srcPort: binary.BigEndian.Uint16(b[ihl:]), dstPort: binary.BigEndian.Uint16(b[ihl+2:]),
	}, ihl, true
}

// tcpSeq is the sequence number of the TCP header at off in b, if b holds it.
func tcpSeq(b []byte, off int) (uint32, bool) {
	if off < 0 || len(b) < off+8 {
		return 0, false
	}
	return binary.BigEndian.Uint32(b[off+4:]), true
}

// packetTuple6 walks the extension headers as the filter does.
func packetTuple6(b []byte) (tuple, int, bool) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return tuple{}, 0, false
	}
	next, off := b[6], 40
	for range maxExtHeaders6 {
		if next == unix.IPPROTO_TCP || len(b) < off+8 {
			break
		}
		switch next {
		case unix.IPPROTO_HOPOPTS, unix.IPPROTO_ROUTING, unix.IPPROTO_DSTOPTS:
			next, off = b[off], off+(int(b[off+1])+1)*8
		case unix.IPPROTO_FRAGMENT:
			if binary.BigEndian.Uint16(b[off+2:])&0xfff8 != 0 {
				return tuple{}, 0, false
			}
			next, off = b[off], off+8
		default:
			return tuple{}, 0, false
		}
	}
	if next != unix.IPPROTO_TCP || off > maxTCPOffset6 || len(b) < off+4 {
		return tuple{}, 0, false
	}
	return tuple{
		src: netip.AddrFrom16([16]byte(b[8:24])), dst: netip.AddrFrom16([16]byte(b[24:40])),
		srcPort: binary.BigEndian.Uint16(b[off:]), dstPort: binary.BigEndian.Uint16(b[off+2:]),
	}, off, true
}
