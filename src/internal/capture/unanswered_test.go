package capture

import (
	"context"
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/bpf"

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

func TestSentFilterProgram(t *testing.T) {
	vm, err := bpf.NewVM(sentIPFilter(netip.MustParsePrefix("198.18.10.2/24")))
	if err != nil {
		t.Fatal(err)
	}
	cloud := "198.19.0.1"
	cases := []struct {
		name string
		pkt  []byte
		want int
	}{
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
		{"ipv6", append([]byte{0x60}, make([]byte, 39)...), 0},
	}
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

func FuzzSentFilter(f *testing.F) {
	f.Add(sentPacket("198.19.0.1", 0, 443, 0x18, 5))
	vm, err := bpf.NewVM(sentIPFilter(netip.MustParsePrefix("198.18.10.2/24")))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := vm.Run(b)
		if err == nil && n != 0 && n != snapLen4 {
			t.Fatalf("filter returned %d", n)
		}
		if n == snapLen4 && len(b) >= 20 {
			if b[0]>>4 != 4 || b[9] != 6 || binary.BigEndian.Uint16(b[6:])&0x1fff != 0 {
				t.Fatalf("accepted a packet that is not a first IPv4 TCP fragment: % x", b[:20])
			}
		}
	})
}

// An echo connection with a message every 200 ms: answered while the
// upstream works, unanswered (within the bound) once it is black-holed.
func TestSentUnansweredInWorld(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
	if err := w.TrackConnections(); err != nil {
		t.Fatal(err)
	}
	u := w.MustUplink("eth0")
	var n atomic.Int64
	var last atomic.Int64 // sent time of the last report
	s, err := WatchSent(SentConfig{Device: "eth0", Prefix: netip.PrefixFrom(u.Addr, 24), Bound: 300 * time.Millisecond,
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
	c, err := w.Device.Dial(ctx, "tcp4", testbed.EchoURL())
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
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	faultAt := time.Now()
	chat(1500 * time.Millisecond)
	if n.Load() == 0 || time.Unix(0, last.Load()).Before(faultAt) {
		t.Fatalf("black hole: %d reports (last for a send at %v, fault at %v), want one for a send after the fault",
			n.Load(), time.Unix(0, last.Load()).Format("15:04:05.000"), faultAt.Format("15:04:05.000"))
	}
}
