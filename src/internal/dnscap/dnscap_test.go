package dnscap

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/testbed"
)

type seen struct {
	Ifindex int
	Dir     Direction
	Pkt     dnsx.Packet
	Err     error
}

type collector struct {
	mu     sync.Mutex
	frames []seen
}

func (c *collector) handle(f Frame) {
	pk, err := dnsx.DecodePacket(f.Data)
	pk.Payload = append([]byte(nil), pk.Payload...)
	c.mu.Lock()
	c.frames = append(c.frames, seen{f.Ifindex, f.Dir, pk, err})
	c.mu.Unlock()
}

func (c *collector) snapshot() []seen {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]seen(nil), c.frames...)
}

// waitFor polls until pred holds for some frame.
func (c *collector) waitFor(t *testing.T, what string, pred func(seen) bool) seen {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.snapshot() {
			if pred(s) {
				return s
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no frame: %s; have %+v", what, c.snapshot())
	return seen{}
}

type pair struct {
	dev, peer *testbed.NS
	devIdx    int
	devAddr   netip.Addr
	peerAddr  netip.Addr
}

func newPair(t *testing.T) *pair {
	p := &pair{dev: testbed.NewNS(t, "ns"), peer: testbed.NewNS(t, "ns"),
		devAddr: netip.MustParseAddr("198.18.0.1"), peerAddr: netip.MustParseAddr("198.18.0.2")}
	p.devIdx = testbed.Veth(t, p.dev, "up0", []string{"198.18.0.1/24"}, p.peer, "peer0", []string{"198.18.0.2/24"})
	return p
}

func (p *pair) open(t *testing.T, c Config, h func(Frame)) *Socket {
	t.Helper()
	var s *Socket
	var err error
	p.dev.MustDo(t, func() { s, err = Open(c, h) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func run(t *testing.T, s *Socket) {
	done := make(chan error, 1)
	go func() { done <- s.Run() }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; !errors.Is(err, ErrClosed) {
			t.Errorf("Run: %v", err)
		}
	})
}

// echo53 starts a UDP server on port in peer that answers "r:"+query.
func (p *pair) echo(t *testing.T, port int) {
	t.Helper()
	var c *net.UDPConn
	var err error
	p.peer.MustDo(t, func() { c, err = net.ListenUDP("udp4", &net.UDPAddr{Port: port}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP(append([]byte("r:"), buf[:n]...), from)
		}
	}()
}

// ask sends msg from dev to peer:port and waits for the echo.
func (p *pair) ask(t *testing.T, port int, msg string) netip.AddrPort {
	t.Helper()
	var c *net.UDPConn
	var err error
	p.dev.MustDo(t, func() { c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.peerAddr.AsSlice(), Port: port}) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, 65536)
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "r:"+msg {
		t.Fatalf("echo: %q %v", buf[:n], err)
	}
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func TestCaptureBothDirections(t *testing.T) {
	p := newPair(t)
	p.echo(t, 53)
	p.echo(t, 5353)
	var col collector
	run(t, p.open(t, Config{Ifindexes: []int{p.devIdx}, Incoming: true, Outgoing: true}, col.handle))
	p.ask(t, 5353, "not dns")
	local := p.ask(t, 53, "q1")
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	server := netip.AddrPortFrom(p.peerAddr, 53)
	q := col.waitFor(t, "outgoing query", func(s seen) bool { return s.Dir == Outgoing })
	r := col.waitFor(t, "incoming reply", func(s seen) bool { return s.Dir == Incoming })
	if q.Err != nil || q.Ifindex != p.devIdx || q.Pkt.Src != local || q.Pkt.Dst != server || string(q.Pkt.Payload) != "q1" {
		t.Errorf("query %+v", q)
	}
	if r.Err != nil || r.Pkt.Src != server || r.Pkt.Dst != local || string(r.Pkt.Payload) != "r:q1" {
		t.Errorf("reply %+v", r)
	}
	for _, s := range col.snapshot() {
		if s.Pkt.Src.Port() == 5353 || s.Pkt.Dst.Port() == 5353 {
			t.Errorf("port 5353 captured: %+v", s)
		}
	}
	if n := len(col.snapshot()); n != 2 {
		t.Errorf("%d frames, want 2", n)
	}
}

func TestCaptureOutgoingOnlyAndDrain(t *testing.T) {
	p := newPair(t)
	p.echo(t, 53)
	var col collector
	s := p.open(t, Config{Incoming: false, Outgoing: true}, col.handle)
	// No Run: Drain alone must hand over what the kernel queued.
	p.ask(t, 53, "q2")
	s.Drain()
	got := col.snapshot()
	if len(got) != 1 || got[0].Dir != Outgoing || string(got[0].Pkt.Payload) != "q2" {
		t.Fatalf("frames %+v", got)
	}
}

func TestCaptureInterfaceFilter(t *testing.T) {
	p := newPair(t)
	p.echo(t, 53)
	var col collector
	s := p.open(t, Config{Ifindexes: []int{1}, Incoming: true, Outgoing: true}, col.handle)
	run(t, s)
	p.ask(t, 53, "q3")
	time.Sleep(100 * time.Millisecond)
	s.Drain()
	if got := col.snapshot(); len(got) != 0 {
		t.Fatalf("captured on the wrong interface: %+v", got)
	}
	if err := s.SetInterfaces(Config{Ifindexes: []int{1, p.devIdx}, Incoming: true, Outgoing: true}); err != nil {
		t.Fatal(err)
	}
	p.ask(t, 53, "q4")
	col.waitFor(t, "q4 after SetInterfaces", func(s seen) bool { return string(s.Pkt.Payload) == "q4" })
}

func TestCaptureTCPAndIPv6Loopback(t *testing.T) {
	ns := testbed.NewNS(t, "ns")
	var col collector
	var s *Socket
	var ln net.Listener
	var err error
	ns.MustDo(t, func() {
		if s, err = Open(Config{Ifindexes: []int{1}, Outgoing: true, Incoming: true}, col.handle); err != nil {
			return
		}
		ln, err = net.Listen("tcp6", "[::1]:53")
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	run(t, s)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			buf := make([]byte, 100)
			c.Read(buf)
			c.Close()
		}
	}()
	var c net.Conn
	ns.MustDo(t, func() { c, err = net.Dial("tcp6", "[::1]:53") })
	if err != nil {
		t.Fatal(err)
	}
	// One DNS message with its length prefix in one segment.
	c.Write([]byte{0, 3, 'a', 'b', 'c'})
	defer c.Close()
	got := col.waitFor(t, "TCP DNS segment over ::1", func(s seen) bool { return s.Err == nil && string(s.Pkt.Payload) == "abc" })
	if got.Pkt.Proto != dnsx.ProtoTCP || !got.Pkt.Dst.Addr().Is6() || got.Pkt.Dst.Port() != 53 {
		t.Fatalf("%+v", got)
	}
}

// A fragmented datagram: only the first fragment (offset 0) is captured,
// and it is reported as a fragment.
func TestCaptureFragments(t *testing.T) {
	p := newPair(t)
	var col collector
	s := p.open(t, Config{Ifindexes: []int{p.devIdx}, Outgoing: true}, col.handle)
	var c *net.UDPConn
	var err error
	p.dev.MustDo(t, func() { c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.peerAddr.AsSlice(), Port: 53}) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 4000)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	s.Drain()
	got := col.snapshot()
	if len(got) != 1 || !errors.Is(got[0].Err, dnsx.ErrFragment) {
		t.Fatalf("frames %+v", got)
	}
}

// TestCaptureMark: a socket for marked packets only gets what the firewall marked, the other
// socket everything else.
func TestCaptureMark(t *testing.T) {
	p := newPair(t)
	p.echo(t, 53)
	// The firewall's rule: the bit on DNS queries, here only those of sockets without a mark.
	p.dev.MustRun(t, "nft", "add table inet m; add chain inet m o { type filter hook output priority 0; }; add rule inet m o udp dport 53 meta mark 0 meta mark set meta mark or 0x400000")
	var marked, rest collector
	const mark = 0x400000
	sm := p.open(t, Config{Outgoing: true, Mark: mark, Marked: true}, marked.handle)
	sr := p.open(t, Config{Outgoing: true, Mark: mark}, rest.handle)
	p.ask(t, 53, "hub")
	// A socket with a mark of its own (SO_MARK 1): the rule leaves it alone.
	var c *net.UDPConn
	var err error
	p.dev.MustDo(t, func() { c, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: p.peerAddr.AsSlice(), Port: 53}) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, _ := c.SyscallConn()
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, 1) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if _, err := c.Write([]byte("other")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	sm.Drain()
	sr.Drain()
	m, r := marked.snapshot(), rest.snapshot()
	if len(m) != 1 || string(m[0].Pkt.Payload) != "hub" {
		t.Fatalf("marked socket: %+v", m)
	}
	if len(r) != 1 || string(r[0].Pkt.Payload) != "other" {
		t.Fatalf("the other socket: %+v", r)
	}
}
