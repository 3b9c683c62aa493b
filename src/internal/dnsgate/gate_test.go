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
)

var wantChain = []string{"198.18.100.1/40s", "198.18.100.2/40s"}

// Hold mode: the reply reaches the application only after Allow returned.
func TestHoldReleasesReplyAfterAllow(t *testing.T) {
	w := newWorld(t)
	w.holdRule(t)
	rec := &recorder{delay: 300 * time.Millisecond}
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
	if st.Stats.Whitelisted != 1 || st.Stats.NotWhitelisted != 1 || st.Queue.Packets != 2 || st.LatencyP99 < 300*time.Millisecond {
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
	w.dev.Do(t, func() { other, err = nfqueue.Open(nfqueue.Config{Num: queueNum}) })
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
				w.cloud.Do(t, func() {
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
