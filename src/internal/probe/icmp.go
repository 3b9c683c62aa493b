package probe

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/afero/af-conn/internal/checksum"
)

// icmpEcho builds an ICMP echo request.
func icmpEcho(id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "af-conn!")
	binary.BigEndian.PutUint16(b[2:], checksum.Internet(b))
	return b
}

// parseEchoReply reads an ICMP message (IPv4 header already stripped) and
// returns its identifier and sequence if it is an echo reply.
func parseEchoReply(b []byte) (id, seq uint16, ok bool) {
	if len(b) < 8 || b[0] != 0 || b[1] != 0 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:]), true
}

// ping is one ICMP echo attempt from a raw socket bound to the uplink.
func (p *Prober) ping(ctx context.Context, t Target, dst netip.Addr) error {
	lc := net.ListenConfig{Control: control(t.Device)}
	src := "0.0.0.0"
	if t.Source.IsValid() {
		src = t.Source.String()
	}
	var pc net.PacketConn
	err := t.in(func() (err error) {
		pc, err = lc.ListenPacket(ctx, "ip4:icmp", src)
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
	if _, err := pc.WriteTo(icmpEcho(id, seq), &net.IPAddr{IP: dst.AsSlice()}); err != nil {
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
		if gid, gseq, ok := parseEchoReply(buf[:m]); ok && gid == id && gseq == seq && fromAddr.Unmap() == dst {
			return nil
		}
	}
}
