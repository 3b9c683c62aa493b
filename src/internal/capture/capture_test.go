package capture

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/afero/af-conn/internal/probe"
	"github.com/afero/af-conn/internal/testbed"
)

// ipv4 builds an IPv4 packet from src with protocol proto and payload
// (the transport header included).
func ipv4(src string, proto byte, frag uint16, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = proto
	s := netip.MustParseAddr(src).As4()
	copy(b[12:], s[:])
	copy(b[16:], []byte{198, 18, 10, 2})
	copy(b[20:], payload)
	return b
}

func tcp(flags byte, payload int) []byte {
	h := make([]byte, 20+payload)
	h[12] = 5 << 4
	h[13] = flags
	return h
}

func TestFilterProgram(t *testing.T) {
	vm, err := bpf.NewVM(ipFilter(netip.MustParsePrefix("198.18.10.2/24")))
	if err != nil {
		t.Fatal(err)
	}
	cloud := "198.19.0.1"
	cases := []struct {
		name string
		pkt  []byte
		want int
	}{
		{"udp from beyond", ipv4(cloud, 17, 0, make([]byte, 12)), 1},
		{"udp from the gateway", ipv4("198.18.10.1", 17, 0, make([]byte, 12)), 0},
		{"tcp data from beyond", ipv4(cloud, 6, 0, tcp(0x18, 1)), 1},
		{"tcp syn-ack from beyond (portal could forge)", ipv4(cloud, 6, 0, tcp(0x12, 0)), 0},
		{"tcp rst from beyond", ipv4(cloud, 6, 0, tcp(0x04, 0)), 0},
		{"tcp with options, no data", ipv4(cloud, 6, 0, func() []byte { h := tcp(0x10, 12); h[12] = 8 << 4; return h }()), 0},
		{"icmp echo reply", ipv4(cloud, 1, 0, []byte{0, 0, 0, 0, 0, 1, 0, 1}), 1},
		{"icmp unreachable", ipv4(cloud, 1, 0, []byte{3, 1, 0, 0, 0, 0, 0, 0}), 0},
		{"non-first fragment", ipv4(cloud, 17, 100, make([]byte, 12)), 0},
		{"first fragment", ipv4(cloud, 17, 0x2000, make([]byte, 12)), 1},
		{"ipv6", append([]byte{0x60}, make([]byte, 39)...), 0},
		{"other protocol", ipv4(cloud, 47, 0, make([]byte, 8)), 0},
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
	if _, err := assemble(filter(netip.MustParsePrefix("198.18.10.2/24"))); err != nil {
		t.Fatal(err)
	}
}

// FuzzFilter runs the kernel program on arbitrary bytes: it must never
// fault and only ever accept one byte or drop.
func FuzzFilter(f *testing.F) {
	f.Add(ipv4("198.19.0.1", 6, 0, tcp(0x18, 3)))
	f.Add(ipv4("198.19.0.1", 1, 0, []byte{0}))
	f.Add([]byte{0x45})
	vm, err := bpf.NewVM(ipFilter(netip.MustParsePrefix("198.18.10.2/24")))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := vm.Run(b)
		if err != nil || got > 1 {
			t.Fatalf("%x: %d %v", b, got, err)
		}
	})
}

// startIn starts a capture on the world's eth0 (period 100 ms) counting
// reports.
func startIn(t *testing.T, w *testbed.World) (*testbed.Uplink, *atomic.Int64) {
	u := w.MustUplink("eth0")
	alive := new(atomic.Int64)
	c, err := Start(Config{Device: "eth0", Prefix: netip.PrefixFrom(u.Addr, 24), Period: 100 * time.Millisecond,
		OnAlive: func(time.Time) { alive.Add(1) }, Namespace: w.Device.Handle(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return u, alive
}

func TestCaptureInWorld(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
	u, alive := startIn(t, w)

	ns := w.Device.Handle(t)
	p, err := probe.New(probe.Config{Host: testbed.EchoAddr.String(), Port: testbed.EchoPort})
	if err != nil {
		t.Fatal(err)
	}
	tg := probe.Target{Device: "eth0", Source: u.Addr, Namespace: ns}
	waitAlive := func(what string, want bool) {
		t.Helper()
		before := alive.Load()
		for range 10 {
			if r := p.Probe(context.Background(), tg, 300*time.Millisecond, 0); r.OK != want {
				t.Fatalf("%s: probe %+v", what, r)
			}
			time.Sleep(120 * time.Millisecond)
		}
		if got := alive.Load() > before; got != want {
			t.Fatalf("%s: alive reported %v, want %v", what, got, want)
		}
	}
	waitAlive("echo traffic", true)

	// Traffic from the gateway (on the subnet) proves nothing.
	before := alive.Load()
	for range 5 {
		w.Device.Run("ping", "-c1", "-W1", u.Gateway.String())
	}
	time.Sleep(200 * time.Millisecond)
	if alive.Load() != before {
		t.Fatal("gateway pings counted as upstream life")
	}

	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	waitAlive("black hole", false)
}

// A flood is sampled, not followed: at most one report per period.
func TestCaptureSamplesFlood(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}, NoEcho: true})
	u, alive := startIn(t, w)
	pc, err := w.Cloud.ListenPacket("udp4", "198.19.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	dst := &net.UDPAddr{IP: u.Addr.AsSlice(), Port: 9}
	start := time.Now()
	sent := 0
	for time.Since(start) < time.Second {
		pc.WriteTo([]byte("x"), dst)
		sent++
	}
	time.Sleep(150 * time.Millisecond)
	el := time.Since(start)
	got := alive.Load()
	t.Logf("%d packets sent in 1 s, %d samples in %v", sent, got, el)
	if got == 0 || got > int64(el/(100*time.Millisecond))+1 {
		t.Fatalf("%d samples for %v of flood at period 100ms", got, el)
	}
}
