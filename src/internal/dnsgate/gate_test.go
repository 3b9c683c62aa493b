package dnsgate

import (
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/nfqueue"
	"github.com/afero/af-conn/internal/testbed"
)

var wantChain = []string{"198.18.100.1/40s", "198.18.100.2/40s"}

// Hold mode: the reply reaches the application only after Allow returned.
func TestHoldReleasesReplyAfterAllow(t *testing.T) {
	w := newWorld(t)
	w.holdRule(t)
	// Slow, but within the hold bound (150 ms).
	rec := &recorder{delay: 100 * time.Millisecond}
	var ev events
	g := w.start(t, ModeHold, rec, &ev)
	if g.Mode() != ModeHold {
		t.Fatalf("mode %s: %+v", g.Mode(), g.Status())
	}
	c := w.client(t)
	m, arrived := resolve(t, c, 1, "api.afero.io.")
	if len(m.Answer) != 5 {
		t.Fatalf("reply %v", m)
	}
	got, done := rec.opened()
	if !reflect.DeepEqual(addrs(got), wantChain) {
		t.Fatalf("opened %v, want %v", addrs(got), wantChain)
	}
	if done[0].After(arrived) {
		t.Fatalf("reply arrived %v before the addresses were in (%v)", arrived, done[0])
	}
	// Not whitelisted: answered, nothing opened.
	if m, _ := resolve(t, c, 2, "evil.example."); len(m.Answer) != 1 {
		t.Fatalf("reply %v", m)
	}
	evs := ev.wait(t, 2)
	if evs[1].Result.Reason != dnsx.Trusted || len(evs[1].Result.Pinholes) != 0 {
		t.Fatalf("evil: %+v", evs[1])
	}
	if got, _ := rec.opened(); len(got) != 2 {
		t.Fatalf("opened %v", addrs(got))
	}
	st := g.Status()
	if st.Stats.Whitelisted != 1 || st.Stats.NotWhitelisted != 1 || st.Queue.Packets != 2 || st.LatencyP99 < 100*time.Millisecond || st.Hold.ReleasedLate != 0 {
		t.Fatalf("status %+v", st)
	}
}

// stuckOpener is an Opener whose Allow waits until it is let go, as one
// waits for a firewall lock held by a long restore.
type stuckOpener struct {
	recorder
	release chan struct{}
}

func (o *stuckOpener) Allow(ps []dnsx.Pinhole, forward bool) error {
	<-o.release
	return o.recorder.Allow(ps, forward)
}

// Hold mode with the handling stuck: the reply is released at the hold
// bound anyway, and its addresses are opened when the handling completes.
func TestHoldReleasesReplyWhenStuck(t *testing.T) {
	w := newWorld(t)
	w.holdRule(t)
	op := &stuckOpener{release: make(chan struct{})}
	var ev events
	g := w.start(t, ModeHold, op, &ev)
	c := w.client(t)
	start := time.Now()
	m, arrived := resolve(t, c, 1, "api.afero.io.")
	if len(m.Answer) != 5 {
		t.Fatalf("reply %v", m)
	}
	t.Logf("reply released after %v with the opener stuck", arrived.Sub(start))
	if got, _ := op.opened(); len(got) != 0 {
		t.Fatalf("opened %v while stuck", addrs(got))
	}
	// Another reply, queued behind the stuck one, is released too.
	if m, _ := resolve(t, c, 2, "evil.example."); len(m.Answer) != 1 {
		t.Fatalf("reply %v", m)
	}
	close(op.release)
	evs := ev.wait(t, 2)
	if got, _ := op.opened(); !reflect.DeepEqual(addrs(got), wantChain) {
		t.Fatalf("opened %v after the handling completed, want %v", addrs(got), wantChain)
	}
	if evs[1].Result.Reason != dnsx.Trusted || len(evs[1].Result.Pinholes) != 0 {
		t.Fatalf("evil: %+v", evs[1])
	}
	st := g.Status()
	if st.Hold.ReleasedLate != 2 || st.Queue.VerdictErrors != 0 || st.Hold.HoldMax < nfqueue.DefaultMaxHold {
		t.Fatalf("status %+v", st)
	}
}

func TestCaptureModeOpens(t *testing.T) {
	w := newWorld(t)
	rec := &recorder{}
	var ev events
	g := w.start(t, ModeCapture, rec, &ev)
	if g.Mode() != ModeCapture || g.Status().Fallback != "" {
		t.Fatalf("status %+v", g.Status())
	}
	resolve(t, w.client(t), 1, "api.afero.io.")
	ev.wait(t, 1)
	if got, _ := rec.opened(); !reflect.DeepEqual(addrs(got), wantChain) {
		t.Fatalf("opened %v", addrs(got))
	}
}

// Hold mode falls back to capture when the queue cannot be bound, and says
// why.
func TestHoldFallsBackToCapture(t *testing.T) {
	w := newWorld(t)
	var other *nfqueue.Queue
	var err error
	w.dev.MustDo(t, func() { other, err = nfqueue.Open(nfqueue.Config{Num: queueNum}) })
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	rec := &recorder{}
	var ev events
	g := w.start(t, ModeHold, rec, &ev)
	if st := g.Status(); st.Mode != ModeCapture || st.Fallback == "" {
		t.Fatalf("status %+v", st)
	}
	resolve(t, w.client(t), 1, "api.afero.io.")
	ev.wait(t, 1)
	if got, _ := rec.opened(); !reflect.DeepEqual(addrs(got), wantChain) {
		t.Fatalf("opened %v", addrs(got))
	}
}

// Forged replies of every kind open nothing, in both modes.
func TestForgedRepliesOpenNothing(t *testing.T) {
	for _, mode := range []Mode{ModeHold, ModeCapture} {
		t.Run(string(mode), func(t *testing.T) {
			w := newWorld(t)
			if mode == ModeHold {
				w.holdRule(t)
			}
			rec := &recorder{}
			var ev events
			g := w.start(t, mode, rec, &ev)
			wl := whitelist{"api.afero.io", "silent.afero.io"}
			g.SetMatcher(wl)

			c := w.client(t)
			other := w.client(t) // a port with no query pending
			client := c.LocalAddr().(*net.UDPAddr).AddrPort()
			q := new(dns.Msg)
			q.SetQuestion("silent.afero.io.", dns.TypeA)
			q.Id = 4242
			b, _ := q.Pack()
			if _, err := c.Write(b); err != nil { // the resolver never answers it
				t.Fatal(err)
			}
			// A forgery that overtakes the query (it waits for ARP) is
			// rightly unsolicited: wait until the query is on the wire.
			for deadline := time.Now().Add(20 * time.Second); g.Status().Stats.Tracker.Pending != 1; {
				if time.Now().After(deadline) {
					t.Fatalf("query never seen: %+v", g.Status())
				}
				time.Sleep(5 * time.Millisecond)
			}
			forge := func(id uint16, name string) []byte {
				m := new(dns.Msg)
				m.SetQuestion(name, dns.TypeA)
				m.Id, m.Response = id, true
				rr, _ := dns.NewRR(name + " 3600 IN A 198.18.100.99")
				m.Answer = []dns.RR{rr}
				b, _ := m.Pack()
				return b
			}
			send := func(from string, to netip.AddrPort, msg []byte) {
				t.Helper()
				var pc net.PacketConn
				var err error
				w.cloud.MustDo(t, func() {
					lc := net.ListenConfig{Control: reuseAddr}
					pc, err = lc.ListenPacket(t.Context(), "udp4", from)
				})
				if err != nil {
					t.Fatal(err)
				}
				defer pc.Close()
				if _, err := pc.WriteTo(msg, net.UDPAddrFromAddrPort(to)); err != nil {
					t.Fatal(err)
				}
			}
			// Not port 53 at all: neither queued nor captured.
			send("198.18.0.2:5353", client, forge(4242, "silent.afero.io."))
			cases := []struct {
				name string
				from string
				to   netip.AddrPort
				msg  []byte
				want dnsx.Reason
			}{
				{"wrong source", "198.18.0.3:53", client, forge(4242, "silent.afero.io."), dnsx.WrongSource},
				{"wrong ID", "198.18.0.2:53", client, forge(4243, "silent.afero.io."), dnsx.WrongID},
				{"another question", "198.18.0.2:53", client, forge(4242, "api.afero.io."), dnsx.WrongQuestion},
				{"unsolicited", "198.18.0.2:53", other.LocalAddr().(*net.UDPAddr).AddrPort(), forge(4242, "silent.afero.io."), dnsx.Unsolicited},
			}
			for i, tc := range cases {
				send(tc.from, tc.to, tc.msg)
				evs := ev.wait(t, i+1)
				if got := evs[i].Result.Reason; got != tc.want || evs[i].Err != nil {
					t.Errorf("%s: reason %v err %v, want %v", tc.name, got, evs[i].Err, tc.want)
				}
			}
			if got, _ := rec.opened(); len(got) != 0 {
				t.Fatalf("forgeries opened %v", addrs(got))
			}
			st := g.Status()
			if st.Rejected["wrong_source"] != 1 || st.Rejected["wrong_id"] != 1 || st.Rejected["wrong_question"] != 1 || st.Rejected["unsolicited"] != 1 {
				t.Errorf("rejected %v", st.Rejected)
			}
			// The genuine reply is still trusted afterwards.
			send("198.18.0.2:53", client, forge(4242, "silent.afero.io."))
			ev.wait(t, len(cases)+1)
			if got, _ := rec.opened(); len(got) != 1 || got[0].Addr != netip.MustParseAddr("198.18.100.99") {
				t.Fatalf("genuine reply opened %v", addrs(got))
			}
		})
	}
}

// A LAN client that the device forwards (and masquerades) for, asking the
// cloud resolver directly: in hold mode its query is taken on the LAN (the
// queued reply is seen after NAT is undone), in capture mode on the uplink
// (the reply is captured before NAT is undone). Both trust the reply.
func TestForwardedClient(t *testing.T) {
	for _, mode := range []Mode{ModeHold, ModeCapture} {
		t.Run(string(mode), func(t *testing.T) {
			testForwardedClient(t, mode, true)
		})
	}
	// Without the LAN capture, hold mode cannot match the forwarded query.
	t.Run("hold-without-lan", func(t *testing.T) { testForwardedClient(t, ModeHold, false) })
}

func testForwardedClient(t *testing.T, mode Mode, withLAN bool) {
	w := newWorld(t)
	lan := testbed.NewNS(t, "ns")
	lanIdx := testbed.Veth(t, w.dev, "lan0", []string{"198.18.2.1/24"}, lan, "eth0", []string{"198.18.2.2/24"})
	lan.MustRun(t, "ip", "route", "add", "default", "via", "198.18.2.1")
	w.dev.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	w.dev.MustRun(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "up0", "-j", "MASQUERADE")
	if mode == ModeHold {
		w.dev.MustRun(t, "iptables", "-A", "FORWARD", "-i", "up0", "-p", "udp", "--sport", "53", "-j", "NFQUEUE", "--queue-num", "21", "--queue-bypass")
	}
	var lans []int
	if withLAN {
		lans = []int{lanIdx}
	}
	// Slow, within the hold bound.
	rec := &recorder{delay: 50 * time.Millisecond}
	var ev events
	var g *Gate
	var err error
	w.dev.MustDo(t, func() {
		g, err = Start(Config{
			Mode: mode, QueueNum: queueNum, Uplinks: []int{w.upIdx}, LANs: lans,
			IsLocal:   func(a netip.Addr) bool { return a == netip.MustParseAddr("198.18.2.1") },
			Extractor: dnsx.Config{Policy: dnsx.Policy{Grace: 10 * time.Second, MinTTL: 30 * time.Second}, Matcher: whitelist{"api.afero.io"}},
			Opener:    rec, OnReply: ev.add,
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var c *net.UDPConn
	lan.MustDo(t, func() { c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(w.resolver)) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, arrived := resolve(t, c, 9, "api.afero.io.")
	evs := ev.wait(t, 1)
	got, done := rec.opened()
	if !withLAN {
		if evs[0].Result.Reason != dnsx.Unsolicited || len(got) != 0 {
			t.Fatalf("without LAN capture: event %+v, opened %v", evs[0], addrs(got))
		}
		return
	}
	if evs[0].Result.Reason != dnsx.Trusted {
		t.Fatalf("event %+v", evs[0])
	}
	if !reflect.DeepEqual(addrs(got), wantChain) {
		t.Fatalf("opened %v", addrs(got))
	}
	if mode == ModeHold && done[0].After(arrived) {
		t.Fatalf("reply reached the LAN client before the pinholes")
	}
	// Hold mode judges the reply after NAT is undone: it is the client's, and opens
	// forwarding only.
	if mode == ModeHold && !evs[0].Forward {
		t.Fatalf("a LAN client's answer was opened for the device itself")
	}
}
