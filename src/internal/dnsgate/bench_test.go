package dnsgate

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/dnsx"
)

// The pinhole benchmark (root; prints figures, asserts nothing about speed):
//
//	sudo AFCONN_BENCH=1 go test ./internal/dnsgate -run TestBenchPinholes -v -count=1
//
// AFCONN_BENCH_N sets the number of resolutions per mode (default 1000).
// For each mode (hold, capture) it resolves N fresh whitelisted names (each
// behind a CNAME, each answering a never-seen address) and connects by TCP
// to the answer at once. The device's output chain drops TCP SYNs to
// addresses not in the set, with a counter: every count is a first SYN
// that met the firewall before its address did (the kernel retransmits it
// a second later). Addresses go into a kernel nft set with timeouts over
// netlink (google/nftables, no process per address). It then sends 10,000
// forged replies of five kinds and counts the set's elements and Allow
// calls (both must stay 0).

func benchN() int {
	if n, err := strconv.Atoi(os.Getenv("AFCONN_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// nftOpener adds addresses to table inet afbench, set allow4, over
// netlink, one batch per reply.
type nftOpener struct {
	mu    sync.Mutex
	c     *nftables.Conn
	set   *nftables.Set
	calls int
}

func newNftOpener(t *testing.T, nsName string) *nftOpener {
	f, err := os.Open("/run/netns/" + nsName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	c, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())), nftables.AsLasting())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseLasting() })
	table := &nftables.Table{Name: "afbench", Family: nftables.TableFamilyINet}
	return &nftOpener{c: c, set: &nftables.Set{Table: table, Name: "allow4", KeyType: nftables.TypeIPAddr, HasTimeout: true}}
}

func (o *nftOpener) Forget(as []netip.Addr) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var els []nftables.SetElement
	for _, a := range as {
		if a.Is4() {
			els = append(els, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	if err := o.c.SetDeleteElements(o.set, els); err != nil {
		return err
	}
	return o.c.Flush()
}

func (o *nftOpener) Allow(ps []dnsx.Pinhole, _ bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	els := make([]nftables.SetElement, 0, len(ps))
	for _, p := range ps {
		if p.Addr.Is4() {
			els = append(els, nftables.SetElement{Key: p.Addr.AsSlice(), Timeout: p.Timeout})
		}
	}
	if err := o.c.SetAddElements(o.set, els); err != nil {
		return err
	}
	return o.c.Flush()
}

// benchAddr is the fresh address of name number i.
func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(1 + i/250), byte(1 + i%250)})
}

// setupBench adds to w: a DNS zone of fresh names, a TCP sink on every
// 198.19.0.0/16 address in the cloud, the route to it in the device, and
// the device's lock-down table.
func (w *world) setupBench(t *testing.T) {
	w.cloud.MustRun(t, "ip", "route", "add", "local", "198.19.0.0/16", "dev", "lo")
	w.dev.MustRun(t, "ip", "route", "add", "198.19.0.0/16", "via", "198.18.0.2")
	w.cloud.ServeHello(t, "0.0.0.0:80")
	for i := 0; i < 4*benchN(); i++ {
		name := fmt.Sprintf("h%d.afero.io.", i)
		zone[name] = []string{
			fmt.Sprintf("%s 60 IN CNAME e%d.edge.example.", name, i),
			fmt.Sprintf("e%d.edge.example. 60 IN A %s", i, benchAddr(i)),
		}
	}
	script := `table inet afbench {
	set allow4 { type ipv4_addr; flags timeout; }
	chain out {
		type filter hook output priority 0; policy accept;
		ip daddr 198.19.0.0/16 tcp flags syn ip daddr != @allow4 counter drop
	}
}`
	if out, err := w.dev.Run("nft", "-f", writeTemp(t, script)); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
}

func writeTemp(t *testing.T, s string) string {
	p := t.TempDir() + "/rules.nft"
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var counterRe = regexp.MustCompile(`counter packets (\d+)`)

func (w *world) dropCounter(t *testing.T) int {
	out := w.dev.MustRun(t, "nft", "list", "chain", "inet", "afbench", "out")
	m := counterRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no counter in %s", out)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func (w *world) setSize(t *testing.T) int {
	out := w.dev.MustRun(t, "nft", "list", "set", "inet", "afbench", "allow4")
	i := strings.Index(out, "elements = {")
	if i < 0 {
		return 0
	}
	return strings.Count(out[i:], "198.")
}

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	s = append([]time.Duration(nil), s...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

func TestBenchPinholes(t *testing.T) {
	if os.Getenv("AFCONN_BENCH") == "" {
		t.Skip("benchmark: set AFCONN_BENCH=1")
	}
	n := benchN()
	for mi, mode := range []Mode{ModeHold, ModeCapture} {
		t.Run(string(mode), func(t *testing.T) {
			w := newWorld(t)
			w.setupBench(t)
			if mode == ModeHold {
				w.holdRule(t)
			}
			op := newNftOpener(t, w.dev.Name)
			var ev events
			g := w.start(t, mode, op, &ev)
			g.SetMatcher(suffix("afero.io"))
			if g.Mode() != mode {
				t.Fatalf("mode %s", g.Mode())
			}
			c := w.client(t)
			var connects []time.Duration
			var ferr error
			start := time.Now()
			w.dev.MustDo(t, func() {
				for i := 0; i < n && ferr == nil; i++ {
					idx := mi*2*n + i
					m, err := resolveErr(c, uint16(i), fmt.Sprintf("h%d.afero.io.", idx))
					if err != nil {
						ferr = err
						return
					}
					a, ok := m.Answer[len(m.Answer)-1].(*dns.A)
					if !ok {
						ferr = fmt.Errorf("answer %v", m.Answer)
						return
					}
					t0 := time.Now()
					conn, err := net.DialTimeout("tcp4", net.JoinHostPort(a.A.String(), "80"), 10*time.Second)
					if err != nil {
						ferr = fmt.Errorf("connect %s: %w", a.A, err)
						return
					}
					connects = append(connects, time.Since(t0))
					conn.Close()
				}
			})
			if ferr != nil {
				t.Fatal(ferr)
			}
			elapsed := time.Since(start)
			evs := ev.wait(t, n)
			var lat []time.Duration
			for _, e := range evs {
				if len(e.Result.Pinholes) > 0 && e.Err == nil {
					lat = append(lat, e.Latency)
				}
			}
			drops := w.dropCounter(t)
			slow := 0
			for _, d := range connects {
				if d > 500*time.Millisecond {
					slow++
				}
			}
			fmt.Printf("BENCH dns-pinhole mode=%s resolutions=%d first_syn_ok=%d/%d syn_drops=%d connects_over_500ms=%d "+
				"reply_to_set_p50=%v reply_to_set_p99=%v reply_to_set_max=%v connect_p50=%v connect_p99=%v set_elements=%d wall=%v\n",
				mode, n, n-drops, n, drops, slow, pct(lat, 50), pct(lat, 99), pct(lat, 100), pct(connects, 50), pct(connects, 99),
				w.setSize(t), elapsed.Round(time.Millisecond))

			// Forged replies against a pending query that the resolver
			// never answers.
			before := op.calls
			sizeBefore := w.setSize(t)
			forged := w.forgeMany(t, c, 10000)
			time.Sleep(500 * time.Millisecond)
			st := g.Status()
			fmt.Printf("BENCH dns-forged mode=%s forged_sent=%d allow_calls=%d new_set_elements=%d judged=%v\n",
				mode, forged, op.calls-before, w.setSize(t)-sizeBefore, st.Rejected)
			if op.calls != before || w.setSize(t) != sizeBefore {
				t.Errorf("forged replies opened holes")
			}
		})
	}
}

type suffix string

func (s suffix) Match(name string) bool { return strings.HasSuffix(name, "."+string(s)) }

func resolveErr(c *net.UDPConn, id uint16, name string) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.Id = id
	b, _ := q.Pack()
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", name, err)
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) == nil && m.Id == id && len(m.Answer) > 0 {
			return m, nil
		}
	}
}

// forgeMany sends count forged replies in five kinds (wrong source, wrong
// source port, wrong ID, another question, unsolicited) to the client c,
// which has a query for silent.afero.io pending. It returns how many were
// sent.
func (w *world) forgeMany(t *testing.T, c *net.UDPConn, count int) int {
	q := new(dns.Msg)
	q.SetQuestion("silent.afero.io.", dns.TypeA)
	q.Id = 0xbeef
	b, _ := q.Pack()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	client := c.LocalAddr().(*net.UDPAddr).AddrPort()
	other := netip.AddrPortFrom(client.Addr(), client.Port()^1)
	mk := func(id uint16, name string, i int) []byte {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		m.Id, m.Response = id, true
		rr, _ := dns.NewRR(fmt.Sprintf("%s 3600 IN A %s", name, benchAddr(3000+i%1000)))
		m.Answer = []dns.RR{rr}
		b, _ := m.Pack()
		return b
	}
	type sender struct {
		pc net.PacketConn
	}
	open := func(addr string) net.PacketConn {
		var pc net.PacketConn
		var err error
		w.cloud.MustDo(t, func() {
			lc := net.ListenConfig{Control: reuseAddr}
			pc, err = lc.ListenPacket(t.Context(), "udp4", addr)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		return pc
	}
	wrongSrc, wrongPort, right := open("198.18.0.3:53"), open("198.18.0.2:5353"), open("198.18.0.2:53")
	sent := 0
	for i := 0; i < count; i++ {
		var pc net.PacketConn
		var msg []byte
		to := client
		switch i % 5 {
		case 0:
			pc, msg = wrongSrc, mk(0xbeef, "silent.afero.io.", i)
		case 1:
			pc, msg = wrongPort, mk(0xbeef, "silent.afero.io.", i)
		case 2:
			pc, msg = right, mk(uint16(i), "silent.afero.io.", i)
			if uint16(i) == 0xbeef {
				continue
			}
		case 3:
			pc, msg = right, mk(0xbeef, fmt.Sprintf("x%d.afero.io.", i), i)
		case 4:
			pc, msg, to = right, mk(0xbeef, "silent.afero.io.", i), other
		}
		if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(to)); err != nil {
			t.Fatal(err)
		}
		sent++
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // stay under the socket buffers
		}
	}
	return sent
}
