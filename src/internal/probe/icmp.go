package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/checksum"
	"github.com/afero/af-conn/internal/uplink"
)

// ICMP message types of the echo, per family (RFC 792, RFC 4443).
var (
	echoRequest = map[uplink.Family]byte{uplink.IPv4: 8, uplink.IPv6: 128}
	echoReply   = map[uplink.Family]byte{uplink.IPv4: 0, uplink.IPv6: 129}
)

// icmpEcho builds an echo request of family f: the same 16 bytes for both
// families but the type. The ICMPv6 checksum covers the IPv6 addresses and
// the kernel fills it in (RFC 3542 3.1), so it is left zero.
func icmpEcho(f uplink.Family, id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = echoRequest[f]
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "af-conn!")
	if f == uplink.IPv4 {
		binary.BigEndian.PutUint16(b[2:], checksum.Internet(b))
	}
	return b
}

// parseEchoReply reads an ICMP message of family f (the IP header already
// stripped) and returns its identifier and sequence if it is an echo
// reply.
func parseEchoReply(f uplink.Family, b []byte) (id, seq uint16, ok bool) {
	if len(b) < 8 || b[0] != echoReply[f] || b[1] != 0 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), true
}

// onlyEchoReplies makes a raw ICMPv6 socket receive echo replies only, not
// the neighbour discovery and router advertisements of the link.
func onlyEchoReplies(c syscall.RawConn) error {
	var f unix.ICMPv6Filter
	for i := range f.Data {
		f.Data[i] = ^uint32(0) // block all ...
	}
	r := echoReply[uplink.IPv6]
	f.Data[r>>5] &^= 1 << (r & 31) // ... but the echo reply
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptICMPv6Filter(int(fd), unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &f)
	}); err != nil {
		return err
	}
	return serr
}

// ping is one ICMP echo attempt from a raw socket bound to the uplink.
func (p *Prober) ping(ctx context.Context, t Target, dst netip.Addr) error {
	f := t.Family()
	lc := net.ListenConfig{Control: control(t.Device)}
	network, src := "ip4:icmp", "0.0.0.0"
	if f == uplink.IPv6 {
		network, src = "ip6:ipv6-icmp", "::"
		lc.Control = func(network, address string, c syscall.RawConn) error {
			if err := control(t.Device)(network, address, c); err != nil {
				return err
			}
			return onlyEchoReplies(c)
		}
	}
	if t.Source.IsValid() {
		src = t.Source.String()
	}
	var pc net.PacketConn
	err := t.in(func() (err error) {
		pc, err = lc.ListenPacket(ctx, network, src)
		return err
	})
	if err != nil {
		return fmt.Errorf("icmp socket on %s: %w", t.Device, err)
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetDeadline(time.Now()) })
	defer stop()
	n := p.icmpN.Add(1)
	id, seq := uint16(os.Getpid())^uint16(n>>16), uint16(n)
	if _, err := pc.WriteTo(icmpEcho(f, id, seq), &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		return fmt.Errorf("icmp echo to %s: %w", dst, err)
	}
	buf := make([]byte, 1500)
	for {
		m, from, err := pc.ReadFrom(buf)
		if err != nil {
			return fmt.Errorf("icmp echo to %s: no reply: %w", dst, err)
		}
		fa, ok := from.(*net.IPAddr)
		if !ok {
			continue
		}
		fromAddr, _ := netip.AddrFromSlice(fa.IP)
		if gid, gseq, ok := parseEchoReply(f, buf[:m]); ok && gid == id && gseq == seq && fromAddr.Unmap() == dst {
			return nil
		}
	}
}
