package capture

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/bpf"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
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

func withPorts(h []byte, src, dst uint16) []byte {
	binary.BigEndian.PutUint16(h[0:], src)
	binary.BigEndian.PutUint16(h[2:], dst)
	return h
}

func TestFilterProgram(t *testing.T) {
	vm := newVM(t, uplink.IPv4, "198.18.10.2/24", "2001:db8:10::2/64")
	cloud := "198.19.0.1"
	data := func(sport uint16) []byte { return withPorts(tcp(0x18, 1), sport, 40000) }
	cases := []struct {
		name string
		pkt  []byte
		want int
	}{
		{"tcp data from beyond", ipv4(cloud, 6, 0, data(443)), snapLen4},
		{"tcp pure ack from beyond", ipv4(cloud, 6, 0, withPorts(tcp(0x10, 0), 443, 40000)), snapLen4},
		{"tcp fin-ack from beyond", ipv4(cloud, 6, 0, withPorts(tcp(0x11, 0), 443, 40000)), snapLen4},
		{"tcp with options", ipv4(cloud, 6, 0, func() []byte { h := data(443); h[12] = 8 << 4; return h }()), snapLen4},
		{"tcp data from the gateway", ipv4("198.18.10.1", 6, 0, data(443)), 0},
		{"tcp syn-ack from beyond (portal could forge)", ipv4(cloud, 6, 0, withPorts(tcp(0x12, 0), 443, 40000)), 0},
		{"tcp rst-ack from beyond", ipv4(cloud, 6, 0, withPorts(tcp(0x14, 0), 443, 40000)), 0},
		{"tcp without ack", ipv4(cloud, 6, 0, withPorts(tcp(0x08, 1), 443, 40000)), 0},
		{"dns over tcp", ipv4(cloud, 6, 0, data(53)), 0},
		{"dns over tls", ipv4(cloud, 6, 0, data(853)), 0},
		{"ntp port", ipv4(cloud, 6, 0, data(123)), 0},
		{"dhcp ports", ipv4(cloud, 6, 0, data(67)), 0},
		{"udp from beyond", ipv4(cloud, 17, 0, make([]byte, 12)), 0},
		{"icmp echo reply", ipv4(cloud, 1, 0, []byte{0, 0, 0, 0, 0, 1, 0, 1}), 0},
		{"non-first fragment", ipv4(cloud, 6, 100, data(443)), 0},
		{"first fragment", ipv4(cloud, 6, 0x2000, data(443)), snapLen4},
		{"ipv6", ipv6("2001:db8:ff::1", 6, withPorts(tcp(0x18, 1), 443, 40000)), 0},
	}
	for _, c := range cases {
		got, err := vm.Run(c.pkt)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: filter returned %d, want %d", c.name, got, c.want)
		}
		if got > 0 {
			if p, ok := packetTuple(uplink.IPv4, c.pkt[:min(got, len(c.pkt))]); !ok || p.src.String() != cloud || p.srcPort != binary.BigEndian.Uint16(c.pkt[20:]) {
				t.Errorf("%s: tuple %+v, %v", c.name, p, ok)
			}
		}
	}
}

// newVM runs family f's filter for an uplink with the prefixes own.
func newVM(t testing.TB, f uplink.Family, own ...string) *bpf.VM {
	var ps []netip.Prefix
	for _, p := range own {
		ps = append(ps, netip.MustParsePrefix(p))
	}
	prog, err := ipFilter(f, ps)
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(prog)
	if err != nil {
		t.Fatal(err)
	}
	full, err := filter(f, ps)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := assemble(full); err != nil {
		t.Fatal(err)
	}
	return vm
}

// FuzzFilter runs the kernel program of each family on arbitrary bytes:
// it must never fault and only ever accept the headers or drop; what it
// accepts has a tuple, from outside the uplink's own prefixes.
func FuzzFilter(f *testing.F) {
	f.Add(ipv4("198.19.0.1", 6, 0, tcp(0x18, 3)), false)
	f.Add(ipv4("198.19.0.1", 1, 0, []byte{0}), false)
	f.Add([]byte{0x45}, false)
	f.Add(ipv6("2001:db8:ff::1", 6, tcp(0x18, 3)), true)
	f.Add(ipv6("2001:db8:ff::1", 0, ext(6, 0), tcp(0x10, 0)), true)
	f.Add(ipv6("2001:db8:ff::1", 44, frag(60, 0), ext(43, 1), ext(6, 0), tcp(0x10, 0)), true)
	own := []string{"198.18.10.2/24", "2001:db8:10::2/64", "2001:db8:99::7/128"}
	vms := map[uplink.Family]*bpf.VM{uplink.IPv4: newVM(f, uplink.IPv4, own...), uplink.IPv6: newVM(f, uplink.IPv6, own...)}
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		fam := uplink.IPv4
		if v6 {
			fam = uplink.IPv6
		}
		got, err := vms[fam].Run(b)
		if err != nil || (got != 0 && got != snapLen(fam)) {
			t.Fatalf("%x: %d %v", b, got, err)
		}
		if got == 0 {
			return
		}
		p, ok := packetTuple(fam, b[:min(len(b), got)])
		if !ok {
			t.Fatalf("%v filter accepted %x, but it has no tuple", fam, b)
		}
		for _, o := range own {
			if netip.MustParsePrefix(o).Masked().Contains(p.src) || p.src.IsLinkLocalUnicast() {
				t.Fatalf("%v filter accepted %x from %v, one of the uplink's own", fam, b, p.src)
			}
		}
	})
}

// FuzzPacketTuple feeds arbitrary bytes to the frame parsers: they must
// never panic, and what they return is of their family.
func FuzzPacketTuple(f *testing.F) {
	f.Add(ipv4("198.19.0.1", 6, 0, tcp(0x18, 3)), false)
	f.Add(ipv6("2001:db8:ff::1", 0, ext(60, 2), ext(6, 0), tcp(0x10, 0)), true)
	f.Add(ipv6("2001:db8:ff::1", 44, frag(6, 0x10), tcp(0x10, 0)), true)
	f.Fuzz(func(t *testing.T, b []byte, v6 bool) {
		fam := uplink.IPv4
		if v6 {
			fam = uplink.IPv6
		}
		// Of the family by header: an IPv6 header's ::ffff:a.b.c.d is still a 16-byte address
		// (FamilyOf would call it IPv4), looked up in conntrack as AF_INET6.
		if p, ok := packetTuple(fam, b); ok && (p.src.Is6() != v6 || p.dst.Is6() != v6) {
			t.Fatalf("%v parse of %x: %+v", fam, b, p)
		}
	})
}

// reports counts a capture's reports.
type reports struct {
	n     atomic.Int64
	badAt atomic.Int64 // reports whose since was not before at
	since atomic.Int64 // the last report's since (Unix ns)
	mu    sync.Mutex
	by    map[uplink.Family]int // reports by family
	// wrong counts reports whose Local is not of their family or not
	// the one want says.
	wrong int
	want  map[uplink.Family]netip.Addr
}

// count returns the reports of family f so far, and how many of all had
// the wrong local address.
func (r *reports) count(f uplink.Family) (n, wrong int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.by[f], r.wrong
}

// expect sets the local address the reports of family f must have.
func (r *reports) expect(f uplink.Family, local netip.Addr) {
	r.mu.Lock()
	r.want[f] = local
	r.mu.Unlock()
}

// after counts nothing: it says whether the last report's replies may
// have come after t.
func (r *reports) after(t time.Time) bool { return r.since.Load() >= t.UnixNano() }

// startIn starts a capture on the world's eth0 (period 100 ms), with
// conntrack running in the device namespace as on a stock OpenWrt.
// own6, if given, are eth0's IPv6 prefixes to watch too.
func startIn(t *testing.T, w *testbed.World, own6 ...netip.Prefix) (*testbed.Uplink, *reports) {
	if err := w.TrackConnections(); err != nil {
		t.Fatal(err)
	}
	u := w.MustUplink("eth0")
	r := &reports{by: map[uplink.Family]int{}, want: map[uplink.Family]netip.Addr{uplink.IPv4: u.Addr}}
	if len(own6) > 0 {
		r.want[uplink.IPv6] = own6[0].Addr()
	}
	c, err := Start(Config{Device: "eth0", Prefixes: append([]netip.Prefix{netip.PrefixFrom(u.Addr, 24)}, own6...), Period: 100 * time.Millisecond,
		OnAlive: func(a Alive) {
			r.n.Add(1)
			r.since.Store(a.Since.UnixNano())
			if !a.Since.Before(a.At) {
				r.badAt.Add(1)
			}
			r.mu.Lock()
			r.by[a.Family]++
			if uplink.FamilyOf(a.Local) != a.Family || a.Local != r.want[a.Family] {
				r.wrong++
			}
			r.mu.Unlock()
		}, Logf: t.Logf, Namespace: w.Device.Handle(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return u, r
}

// chat writes a line to the echo connection every 50 ms for d and reads
// what comes back (nothing, once the upstream is black-holed).
func chat(c net.Conn, d time.Duration) {
	go io.Copy(io.Discard, c)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		c.Write([]byte("ping\n"))
	}
}

// dialIn connects from ns to addr (closed when the test ends) and returns the connection and
// its local end.
func dialIn(t *testing.T, ns *testbed.NS, network, addr string) (net.Conn, netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, netip.MustParseAddrPort(c.LocalAddr().String())
}

// blackHoleUnderNoise black-holes eth0, calls prepare (if set), waits 300 ms (a report may still
// come for replies that arrived before the fault: its since says so, and the state machine does
// not let it outvote a later failed probe), then sends the noise while c keeps writing for 2 s:
// no report may say replies came after the noise began. what names the noise.
func blackHoleUnderNoise(t *testing.T, w *testbed.World, r *reports, c net.Conn, what string, prepare func(), noise ...testbed.Noise) {
	t.Helper()
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare()
	}
	time.Sleep(300 * time.Millisecond)
	noiseAt := time.Now()
	for _, n := range noise {
		stop, err := w.SendNoise("eth0", n)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	chat(c, 2*time.Second)
	if r.after(noiseAt) {
		t.Fatalf("black hole under %s: a report of replies since %v, after the noise began at %v", what,
			time.Unix(0, r.since.Load()).Format("15:04:05.000"), noiseAt.Format("15:04:05.000"))
	}
}

func TestCaptureInWorld(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
	u, r := startIn(t, w)
	c, local := dialIn(t, w.Device, "tcp4", testbed.EchoURL())

	chat(c, 1500*time.Millisecond)
	if r.n.Load() == 0 || r.badAt.Load() != 0 {
		t.Fatalf("echo replies: %d reports (%d with since not before at), want some", r.n.Load(), r.badAt.Load())
	}

	// Black hole: the connection's own segments go unanswered, and noise
	// arrives from beyond the subnet: UDP, and TCP ACKs carrying the
	// connection's very tuple (a blind spoofer: out of the window).
	beyond := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 11, 1}), 5000)
	blackHoleUnderNoise(t, w, r, c, "noise", nil,
		testbed.Noise{From: beyond, To: netip.AddrPortFrom(u.Addr, 40000), PerSecond: 50},
		testbed.Noise{From: netip.AddrPortFrom(testbed.EchoAddr, testbed.EchoPort), To: local, TCPFlags: 0x10, PerSecond: 50},
		testbed.Noise{From: netip.AddrPortFrom(testbed.EchoAddr, testbed.EchoPort), To: local, TCPFlags: 0x18, PerSecond: 50},
		testbed.Noise{From: beyond, To: netip.AddrPortFrom(u.Addr, 40001), TCPFlags: 0x10, PerSecond: 50})
}

// A download is sampled, not followed: at most one conntrack question and
// report per period.
func TestCaptureSamplesDownload(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}, NoEcho: true})
	_, r := startIn(t, w)
	w.Cloud.ServeDownload(t, netip.AddrPortFrom(testbed.EchoAddr, 8080).String(), 0)
	c, _ := dialIn(t, w.Device, "tcp4", netip.AddrPortFrom(testbed.EchoAddr, 8080).String())
	start := time.Now()
	n, _ := io.Copy(io.Discard, io.LimitReader(c, 50<<20))
	c.Close()
	el := time.Since(start)
	got := r.n.Load()
	t.Logf("%d bytes in %v, %d reports", n, el, got)
	if got == 0 || got > int64(el/(100*time.Millisecond))+1 {
		t.Fatalf("%d reports for %v of download at period 100ms", got, el)
	}
}

// A connection whose conntrack entry was deleted (connmgr's own flush when
// an uplink fails does that) is picked up in mid-stream by the device's
// next segment, and conntrack then tracks it with liberal windows: it
// accepts and counts any segment with the tuple. A blind spoofer of that
// tuple must still prove nothing.
func TestCapturePickedUpConnection(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
	u, r := startIn(t, w)
	spoofBlackHole(t, w, r, func(local netip.AddrPort) {
		if out, err := w.Device.Run("conntrack", "-D", "-p", "tcp", "--orig-src", u.Addr.String(),
			"--orig-port-src", fmt.Sprint(local.Port())); err != nil {
			t.Fatalf("conntrack -D: %v: %s", err, out)
		}
	})
}

// With net.netfilter.nf_conntrack_tcp_be_liberal on, conntrack checks no
// TCP window: a blind spoofer of a live connection's tuple must still
// prove nothing on a black-holed uplink.
func TestCaptureLiberalConntrack(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
	if err := w.Device.Sysctl("net.netfilter.nf_conntrack_tcp_be_liberal", "1"); err != nil {
		t.Fatal(err)
	}
	_, r := startIn(t, w)
	spoofBlackHole(t, w, r, func(netip.AddrPort) {})
}

// spoofBlackHole opens a connection to the echo service, black-holes
// eth0, calls prepare with the connection's local end, then has the
// device keep writing while a blind spoofer sends segments with the
// connection's tuple: no report may say replies came after that.
func spoofBlackHole(t *testing.T, w *testbed.World, r *reports, prepare func(local netip.AddrPort)) {
	c, local := dialIn(t, w.Device, "tcp4", testbed.EchoURL())
	chat(c, 500*time.Millisecond)
	blackHoleUnderNoise(t, w, r, c, "spoofed segments", func() { prepare(local) },
		testbed.Noise{From: netip.AddrPortFrom(testbed.EchoAddr, testbed.EchoPort), To: local, TCPFlags: 0x18, PerSecond: 50})
}

// A connection opened TO the device from beyond the subnet (a scanner
// that found an open port, with connmgr's firewall off) is the remote's:
// its segments are the original direction, the device's answers the
// reply direction, and nothing of it proves the uplink.
func TestCaptureInboundConnection(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
	u, r := startIn(t, w)
	ln, err := w.Device.Listen("tcp4", netip.AddrPortFrom(u.Addr, 8080).String())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }() // echoes: both directions busy
		}
	}()
	var c net.Conn
	err = u.Router.Do(func() (err error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IP{198, 18, 11, 1}}, Timeout: 5 * time.Second}
		c, err = d.Dial("tcp4", netip.AddrPortFrom(u.Addr, 8080).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chat(c, 1500*time.Millisecond)
	if n := r.n.Load(); n != 0 {
		t.Fatalf("an inbound connection from beyond the subnet made %d reports", n)
	}
}
