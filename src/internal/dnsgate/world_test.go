package dnsgate

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/testbed"
)

// world: a device namespace and a cloud namespace joined by a veth
// (up0 198.18.0.1 <-> cloud0 198.18.0.2, plus 198.18.0.3 for forgers),
// with a DNS server on 198.18.0.2:53 in the cloud.
type world struct {
	dev, cloud *testbed.NS
	upIdx      int
	resolver   netip.AddrPort
}

const queueNum = 21

var zone = map[string][]string{
	"api.afero.io.": {
		"api.afero.io. 300 IN CNAME a.lb.example.",
		"a.lb.example. 300 IN CNAME b.lb.example.",
		"b.lb.example. 300 IN CNAME c.edge.example.",
		"c.edge.example. 20 IN A 198.18.100.1",
		"c.edge.example. 20 IN A 198.18.100.2",
	},
	"evil.example.": {"evil.example. 60 IN A 198.18.100.66"},
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{dev: testbed.NewNS(t, "ns"), cloud: testbed.NewNS(t, "ns"), resolver: netip.MustParseAddrPort("198.18.0.2:53")}
	w.upIdx = testbed.Veth(t, w.dev, "up0", []string{"198.18.0.1/24"}, w.cloud, "cloud0", []string{"198.18.0.2/24", "198.18.0.3/24"})
	w.serveDNS(t)
	return w
}

// serveDNS runs a server answering from zone; names starting with
// "silent" get no answer (for forgery tests).
func (w *world) serveDNS(t *testing.T) {
	var pc net.PacketConn
	var err error
	w.cloud.MustDo(t, func() {
		lc := net.ListenConfig{Control: reuseAddr}
		pc, err = lc.ListenPacket(t.Context(), "udp4", w.resolver.String())
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(rw dns.ResponseWriter, q *dns.Msg) {
		name := strings.ToLower(q.Question[0].Name)
		if strings.HasPrefix(name, "silent") {
			return
		}
		m := new(dns.Msg)
		m.SetReply(q)
		for _, s := range zone[name] {
			rr, _ := dns.NewRR(s)
			m.Answer = append(m.Answer, rr)
		}
		if zone[name] == nil {
			m.Rcode = dns.RcodeNameError
		}
		rw.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
}

// holdRule queues DNS replies arriving on up0, as the firewall does.
func (w *world) holdRule(t *testing.T) {
	w.dev.MustRun(t, "iptables", "-A", "INPUT", "-i", "up0", "-p", "udp", "--sport", "53", "-j", "NFQUEUE", "--queue-num", "21", "--queue-bypass")
}

// client is a stub resolver socket in the device namespace.
func (w *world) client(t *testing.T) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	var err error
	w.dev.MustDo(t, func() { c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(w.resolver)) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// resolve asks name over c and returns the reply and when it arrived.
func resolve(t *testing.T, c *net.UDPConn, id uint16, name string) (*dns.Msg, time.Time) {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.Id = id
	b, _ := q.Pack()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("resolve %s: %v", name, err)
		}
		at := time.Now()
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) == nil && m.Id == id {
			return m, at
		}
	}
}

// recorder is an Opener that records what it was asked to open, taking
// delay to do so.
type recorder struct {
	mu    sync.Mutex
	delay time.Duration
	got   []dnsx.Pinhole
	fwd   []bool // per call: opened for forwarding only
	done  []time.Time
	gone  []netip.Addr
}

func (r *recorder) Forget(as []netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gone = append(r.gone, as...)
	return nil
}

func (r *recorder) Allow(ps []dnsx.Pinhole, forward bool) error {
	time.Sleep(r.delay)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, ps...)
	r.fwd = append(r.fwd, forward)
	r.done = append(r.done, time.Now())
	return nil
}

func (r *recorder) opened() ([]dnsx.Pinhole, []time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]dnsx.Pinhole(nil), r.got...), append([]time.Time(nil), r.done...)
}

type events struct {
	mu sync.Mutex
	ev []ReplyEvent
}

func (e *events) add(ev ReplyEvent) {
	e.mu.Lock()
	e.ev = append(e.ev, ev)
	e.mu.Unlock()
}

// wait polls until n events arrived.
func (e *events) wait(t *testing.T, n int) []ReplyEvent {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		e.mu.Lock()
		got := append([]ReplyEvent(nil), e.ev...)
		e.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d reply events, want %d", len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type whitelist []string

func (w whitelist) Match(s string) bool {
	for _, e := range w {
		if e == s {
			return true
		}
	}
	return false
}

func (w *world) start(t *testing.T, mode Mode, op Opener, ev *events) *Gate {
	t.Helper()
	var g *Gate
	var err error
	w.dev.MustDo(t, func() {
		g, err = Start(Config{
			Mode:     mode,
			QueueNum: queueNum,
			Uplinks:  []int{w.upIdx},
			Extractor: dnsx.Config{
				Policy:  dnsx.Policy{Grace: 10 * time.Second, MinTTL: 30 * time.Second},
				Matcher: whitelist{"api.afero.io"},
			},
			Opener:  op,
			OnReply: ev.add,
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func addrs(ps []dnsx.Pinhole) []string {
	var s []string
	for _, p := range ps {
		s = append(s, p.Addr.String()+"/"+p.Timeout.String())
	}
	return s
}

// reuseAddr lets a forger share the DNS server's address and port.
func reuseAddr(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		if serr == nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}
