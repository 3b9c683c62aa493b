package testbed

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/checksum"
)

// Noise is traffic a router sends the device that is no reply to anything the device sent:
// scans, spoofers, the ISP's own chatter. It arrives whatever fault the router applies to
// forwarded traffic (it is the router's own).
type Noise struct {
	// From is the source address written in each packet (beyond the device's subnet for
	// noise that must not be mistaken for the neighbourhood).
	From netip.AddrPort
	// To is where it goes on the device (its uplink address, some port).
	To netip.AddrPort
	// TCPFlags, if not zero, makes the noise TCP segments with these flags (0x10: ACK) and
	// random sequence numbers (what a blind spoofer of an existing connection's tuple sends);
	// zero makes it UDP datagrams of 32 bytes.
	TCPFlags byte
	// PerSecond is the rate.
	PerSecond int
}

// SendNoise starts sending n from the router of uplink dev until stop is called. The packets
// are written whole (raw socket), so the source address can be anything.
func (w *World) SendNoise(dev string, n Noise) (stop func(), err error) {
	u := w.Uplink(dev)
	if u == nil {
		return nil, fmt.Errorf("testbed: no uplink %s", dev)
	}
	v6 := n.From.Addr().Is6()
	if n.PerSecond <= 0 || !n.From.Addr().IsValid() || n.To.Addr().Is6() != v6 || n.From.Addr().Is4In6() || n.To.Addr().Is4In6() {
		return nil, fmt.Errorf("testbed: noise %+v: want addresses of one family and a rate", n)
	}
	// IPPROTO_RAW: the packet is written whole, IP header included (for
	// IPv6 too: the kernel sets IPV6_HDRINCL for it).
	family, to := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Addr: n.To.Addr().As16()})
	if !v6 {
		family, to = unix.AF_INET, &unix.SockaddrInet4{Addr: n.To.Addr().As4()}
	}
	var fd int
	err = u.Router.Do(func() (err error) {
		fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("testbed: raw socket in %s: %w", u.Router.Name, err)
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		defer unix.Close(fd)
		t := time.NewTicker(time.Second / time.Duration(n.PerSecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			unix.Sendto(fd, n.packet(), 0, to)
		}
	}()
	return func() { close(done); <-finished }, nil
}

// packet builds one noise packet, checksums right (so it is not dropped as corrupt).
func (n Noise) packet() []byte {
	var l4 []byte
	proto := byte(unix.IPPROTO_UDP)
	if n.TCPFlags != 0 {
		proto = unix.IPPROTO_TCP
		l4 = make([]byte, 20+8)
		binary.BigEndian.PutUint32(l4[4:], rand.Uint32()) // seq
		binary.BigEndian.PutUint32(l4[8:], rand.Uint32()) // ack
		l4[12] = 5 << 4
		l4[13] = n.TCPFlags
		binary.BigEndian.PutUint16(l4[14:], 502)
	} else {
		l4 = make([]byte, 8+32)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	binary.BigEndian.PutUint16(l4[0:], n.From.Port())
	binary.BigEndian.PutUint16(l4[2:], n.To.Port())
	src, dst := n.From.Addr().AsSlice(), n.To.Addr().AsSlice()
	// The pseudo-header's fields differ in width between the families,
	// not in the sum: zeros add nothing.
	pseudo := append(append(append([]byte{}, src...), dst...), 0, proto, byte(len(l4)>>8), byte(len(l4)))
	sum := checksum.Internet(append(pseudo, l4...))
	if proto == unix.IPPROTO_TCP {
		binary.BigEndian.PutUint16(l4[16:], sum)
	} else {
		binary.BigEndian.PutUint16(l4[6:], sum)
	}
	if len(src) == 16 {
		ip := make([]byte, 40, 40+len(l4))
		ip[0] = 0x60
		binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
		ip[6], ip[7] = proto, 64
		copy(ip[8:], src)
		copy(ip[24:], dst)
		return append(ip, l4...)
	}
	ip := make([]byte, 20, 20+len(l4))
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8], ip[9] = 64, proto
	copy(ip[12:], src)
	copy(ip[16:], dst)
	binary.BigEndian.PutUint16(ip[10:], checksum.Internet(ip))
	return append(ip, l4...)
}
