package dnsx

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newClock() *fakeClock { return &fakeClock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func ex(proto uint8, cl, res string, id uint16, name string, qtype uint16) Exchange {
	return Exchange{
		Proto:    proto,
		Client:   netip.MustParseAddrPort(cl),
		Resolver: netip.MustParseAddrPort(res),
		ID:       id,
		Question: Question{Name: name, Type: qtype, Class: ClassINET},
	}
}

func TestTrackerVerdicts(t *testing.T) {
	const (
		cl  = "198.18.0.2:40000"
		res = "198.18.1.1:53"
	)
	q := ex(ProtoUDP, cl, res, 0x1234, "api.afero.io", TypeA)
	tests := []struct {
		name  string
		reply Exchange
		want  Reason
	}{
		{"exact answer", q, Trusted},
		{"other client port", ex(ProtoUDP, "198.18.0.2:40001", res, 0x1234, "api.afero.io", TypeA), Unsolicited},
		{"other client address", ex(ProtoUDP, "198.18.0.3:40000", res, 0x1234, "api.afero.io", TypeA), Unsolicited},
		{"TCP instead of UDP", ex(ProtoTCP, cl, res, 0x1234, "api.afero.io", TypeA), Unsolicited},
		{"other resolver address", ex(ProtoUDP, cl, "198.18.1.2:53", 0x1234, "api.afero.io", TypeA), WrongSource},
		{"other resolver port", ex(ProtoUDP, cl, "198.18.1.1:5353", 0x1234, "api.afero.io", TypeA), WrongPort},
		{"other ID", ex(ProtoUDP, cl, res, 0x1235, "api.afero.io", TypeA), WrongID},
		{"other name", ex(ProtoUDP, cl, res, 0x1234, "evil.example", TypeA), WrongQuestion},
		{"other type", ex(ProtoUDP, cl, res, 0x1234, "api.afero.io", TypeAAAA), WrongQuestion},
		{"other class", func() Exchange { e := q; e.Question.Class = 3; return e }(), WrongQuestion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			tr := NewTracker(c.now, 0, 0)
			tr.Query(q)
			if got := tr.Reply(tt.reply); got != tt.want {
				t.Fatalf("Reply = %v, want %v", got, tt.want)
			}
			// A rejected reply leaves the query pending: the real one is
			// still trusted afterwards, once.
			if tt.want != Trusted {
				if got := tr.Reply(q); got != Trusted {
					t.Fatalf("genuine reply after forgery = %v", got)
				}
			}
			if got := tr.Reply(q); got != Unsolicited {
				t.Fatalf("second reply = %v, want unsolicited", got)
			}
			s := tr.Stats()
			if s.Pending != 0 || s.Verdicts[Trusted] != 1 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestTrackerUnsolicitedWithNoQueries(t *testing.T) {
	tr := NewTracker(newClock().now, 0, 0)
	if got := tr.Reply(ex(ProtoUDP, "198.18.0.2:1", "198.18.1.1:53", 1, "a", TypeA)); got != Unsolicited {
		t.Fatal(got)
	}
}

func TestTrackerCaseInsensitiveQuestion(t *testing.T) {
	// Names arrive normalized by the parser; a 0x20-randomized question
	// is the same question.
	m1, _ := Parse(query(t, 5, "Api.AFERO.io.", TypeA))
	m2, _ := Parse(reply(t, 5, "aPI.afero.IO.", TypeA))
	if m1 == nil || m2 == nil {
		t.Fatal("parse")
	}
	tr := NewTracker(newClock().now, 0, 0)
	tr.Query(Exchange{Proto: ProtoUDP, Client: client, Resolver: resolver, ID: 5, Question: m1.Question})
	if got := tr.Reply(Exchange{Proto: ProtoUDP, Client: client, Resolver: resolver, ID: 5, Question: m2.Question}); got != Trusted {
		t.Fatal(got)
	}
}

func TestTrackerExpiry(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, 10*time.Second, 0)
	a := ex(ProtoUDP, "198.18.0.2:1000", "198.18.1.1:53", 1, "a.example", TypeA)
	b := ex(ProtoUDP, "198.18.0.2:1001", "198.18.1.1:53", 2, "b.example", TypeA)
	tr.Query(a)
	c.advance(5 * time.Second)
	tr.Query(b)
	c.advance(5 * time.Second) // a is exactly 10 s old: expired
	if got := tr.Reply(a); got != Unsolicited {
		t.Errorf("expired query answered: %v", got)
	}
	c.advance(4999 * time.Millisecond)
	if got := tr.Reply(b); got != Trusted {
		t.Errorf("query 9.999 s old: %v", got)
	}
	s := tr.Stats()
	if s.Expired != 1 || s.Pending != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestTrackerDuplicateQueries(t *testing.T) {
	// A retransmitted query (same ID, port, question) may be answered
	// twice; a third reply is not trusted.
	tr := NewTracker(newClock().now, 0, 0)
	q := ex(ProtoUDP, "198.18.0.2:1000", "198.18.1.1:53", 1, "a.example", TypeA)
	tr.Query(q)
	tr.Query(q)
	for i, want := range []Reason{Trusted, Trusted, Unsolicited} {
		if got := tr.Reply(q); got != want {
			t.Errorf("reply %d: %v, want %v", i, got, want)
		}
	}
}

func TestTrackerSeveralPendingOnOneFlow(t *testing.T) {
	// One socket, several queries (A and AAAA of a name, as getaddrinfo
	// sends them): each reply finds its own query, in any order.
	tr := NewTracker(newClock().now, 0, 0)
	qa := ex(ProtoUDP, "198.18.0.2:1000", "198.18.1.1:53", 7, "a.example", TypeA)
	qaaaa := ex(ProtoUDP, "198.18.0.2:1000", "198.18.1.1:53", 8, "a.example", TypeAAAA)
	tr.Query(qa)
	tr.Query(qaaaa)
	if got := tr.Reply(qaaaa); got != Trusted {
		t.Fatal(got)
	}
	if got := tr.Reply(qa); got != Trusted {
		t.Fatal(got)
	}
	// The most specific reason is reported: ID right, question wrong.
	tr.Query(qa)
	tr.Query(qaaaa)
	wrongQ := qa
	wrongQ.Question.Name = "b.example"
	if got := tr.Reply(wrongQ); got != WrongQuestion {
		t.Fatal(got)
	}
}

func TestTrackerBounded(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, time.Minute, 3)
	var qs []Exchange
	for i := 0; i < 5; i++ {
		q := ex(ProtoUDP, "198.18.0.2:1000", "198.18.1.1:53", uint16(i), "a.example", TypeA)
		qs = append(qs, q)
		tr.Query(q)
		c.advance(time.Second)
	}
	if s := tr.Stats(); s.Pending != 3 || s.Evicted != 2 {
		t.Fatalf("stats %+v", s)
	}
	for i, q := range qs {
		want := Trusted
		if i < 2 {
			want = WrongID
		}
		if got := tr.Reply(q); got != want {
			t.Errorf("query %d: %v, want %v", i, got, want)
		}
	}
}

// Many queries answered out of order keep the table and queue small.
func TestTrackerQueueCompaction(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, time.Second, 0)
	for i := 0; i < 10000; i++ {
		q := ex(ProtoUDP, "198.18.0.2:1000", "198.18.1.1:53", uint16(i), "a.example", TypeA)
		tr.Query(q)
		if tr.Reply(q) != Trusted {
			t.Fatal("not trusted")
		}
		c.advance(time.Millisecond)
	}
	if len(tr.hub.q)-tr.hub.head > 1100 || len(tr.flows) != 0 {
		t.Fatalf("queue %d head %d flows %d", len(tr.hub.q), tr.hub.head, len(tr.flows))
	}
}

func trustOnly(addrs ...string) func(netip.Addr) bool {
	m := map[netip.Addr]bool{}
	for _, a := range addrs {
		m[netip.MustParseAddr(a)] = true
	}
	return func(a netip.Addr) bool { return m[a] }
}

// A reply from a resolver that is not an uplink's opens nothing, even when it answers a query
// that was really sent to it; the query is not even tracked.
func TestTrackerUntrustedResolver(t *testing.T) {
	tr := NewTracker(newClock().now, 0, 0)
	tr.SetTrusted(trustOnly("198.18.1.1"))
	rogue := ex(ProtoUDP, "198.18.0.2:1000", "198.18.9.9:53", 1, "api.afero.io", TypeA)
	tr.Query(rogue)
	tr.QueryLAN(ex(ProtoTCP, "198.18.100.2:1000", "198.18.9.9:53", 1, "api.afero.io", TypeA))
	if got := tr.Reply(rogue); got != UntrustedResolver {
		t.Fatalf("rogue reply: %v", got)
	}
	good := ex(ProtoUDP, "198.18.0.2:1001", "198.18.1.1:53", 2, "api.afero.io", TypeA)
	tr.Query(good)
	if got := tr.Reply(good); got != Trusted {
		t.Fatalf("uplink resolver's reply: %v", got)
	}
	s := tr.Stats()
	if s.Untrusted != 2 || s.Queries != 1 || s.Verdicts[UntrustedResolver] != 1 || s.Pending != 0 {
		t.Fatalf("stats %+v", s)
	}
	// The set follows changes.
	tr.SetTrusted(trustOnly("198.18.9.9"))
	tr.Query(rogue)
	if got := tr.Reply(rogue); got != Trusted {
		t.Fatalf("after the resolver became trusted: %v", got)
	}
}

// A LAN client flooding queries evicts its own, then other LAN queries, never the hub's.
func TestTrackerLANFloodSparesHub(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, 0, 100)
	tr.SetClientQuota(10)
	hub := ex(ProtoUDP, "198.18.10.2:1000", "198.18.1.1:53", 1, "api.afero.io", TypeA)
	tr.Query(hub)
	victim := ex(ProtoUDP, "198.18.100.3:2000", "198.18.1.1:53", 1, "b.afero.io", TypeA)
	tr.QueryLAN(victim)
	for i := 0; i < 10000; i++ {
		tr.QueryLAN(ex(ProtoUDP, "198.18.100.2:3000", "198.18.1.1:53", uint16(i), "x.afero.io", TypeA))
	}
	s := tr.Stats()
	if s.OverQuota != 9990 || s.LANPending != 11 || s.Pending != 12 || s.Evicted != 0 {
		t.Fatalf("after one client's flood: %+v", s)
	}
	if got := tr.Reply(victim); got != Trusted {
		t.Fatalf("another LAN client's query: %v", got)
	}
	// Many clients fill the LAN table: its oldest go, the hub's query stays.
	for i := 0; i < 1000; i++ {
		cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 101, byte(i)}), 4000)
		tr.QueryLAN(Exchange{Proto: ProtoUDP, Client: cl, Resolver: netip.MustParseAddrPort("198.18.1.1:53"), ID: uint16(i), Question: Question{"y.afero.io", TypeA, ClassINET}})
	}
	s = tr.Stats()
	if s.LANPending != 100 || s.LANEvicted == 0 || s.Evicted != 0 {
		t.Fatalf("after many clients: %+v", s)
	}
	if m := tr.ReplyMatch(hub); m.Reason != Trusted || m.LAN {
		t.Fatalf("the hub's own query after the flood: %+v", m)
	}
}

// A forwarded LAN query is tracked once: its copy leaving the uplink after source NAT is an
// alias, so the reply is trusted (once) in either address view and is the LAN client's.
func TestTrackerNATCopyTrackedOnce(t *testing.T) {
	for _, view := range []string{"before NAT", "after NAT", "port rewritten"} {
		t.Run(view, func(t *testing.T) {
			c := newClock()
			tr := NewTracker(c.now, 0, 0)
			lan := ex(ProtoUDP, "198.18.100.2:5555", "198.18.1.1:53", 9, "api.afero.io", TypeA)
			natted := ex(ProtoUDP, "198.18.10.2:5555", "198.18.1.1:53", 9, "api.afero.io", TypeA)
			if view == "port rewritten" {
				natted.Client = netip.MustParseAddrPort("198.18.10.2:6000")
			}
			tr.QueryLAN(lan)
			c.advance(time.Millisecond)
			tr.Query(natted)
			s := tr.Stats()
			if s.Pending != 1 || s.LANPending != 1 || s.Forwarded != 1 {
				t.Fatalf("stats %+v", s)
			}
			reply := lan
			if view != "before NAT" {
				reply = natted
			}
			// A copy whose port NAT rewrote is recognised by ID and question
			// alone, as the hub's own query could be: its answer is not LAN-only.
			if m := tr.ReplyMatch(reply); m.Reason != Trusted || m.LAN != (view != "port rewritten") {
				t.Fatalf("reply: %+v", m)
			}
			if got := tr.Reply(lan); got != Unsolicited {
				t.Fatalf("second reply, before NAT: %v", got)
			}
			if got := tr.Reply(natted); got != Unsolicited {
				t.Fatalf("second reply, after NAT: %v", got)
			}
			if s := tr.Stats(); s.Pending != 0 || len(tr.nat) != 0 || len(tr.flows) != 0 || len(tr.clients) != 0 {
				t.Fatalf("left behind: %+v nat %d flows %d clients %d", s, len(tr.nat), len(tr.flows), len(tr.clients))
			}
		})
	}
}

// The hub's own query identical to an old LAN query (same ID and question) but from another
// port is the hub's, not a NAT copy.
func TestTrackerHubQueryNotTakenForNATCopy(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, 0, 0)
	tr.QueryLAN(ex(ProtoUDP, "198.18.100.2:5555", "198.18.1.1:53", 9, "api.afero.io", TypeA))
	c.advance(3 * time.Second)
	hub := ex(ProtoUDP, "198.18.10.2:7000", "198.18.1.1:53", 9, "api.afero.io", TypeA)
	tr.Query(hub)
	if s := tr.Stats(); s.Forwarded != 0 || s.Pending != 2 || s.LANPending != 1 {
		t.Fatalf("stats %+v", s)
	}
	if m := tr.ReplyMatch(hub); m.Reason != Trusted || m.LAN {
		t.Fatalf("the hub's reply: %+v", m)
	}
}

// A LAN client's query evicted (over its quota, or the LAN table full) before its copy leaves
// the uplink - the uplink's queue delays the copies of a burst of queries, the capture sees
// them arrive from the LAN at once - must not become the hub's own query when the copy is seen:
// a LAN client would fill the hub's table and push the hub's own queries out.
func TestTrackerEvictedLANQueryCopyIsNotHubs(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, 0, 100)
	tr.SetClientQuota(10)
	hub := ex(ProtoUDP, "198.18.10.2:1000", "198.18.1.1:53", 1, "api.afero.io", TypeA)
	tr.Query(hub)
	const burst = 400 // 390 evicted: within the 4 x 100 remembered
	lanQ := func(i int) Exchange {
		return ex(ProtoUDP, netip.AddrPortFrom(netip.MustParseAddr("198.18.100.2"), uint16(20000+i)).String(), "198.18.1.1:53", uint16(i), "x.afero.io", TypeA)
	}
	for i := 0; i < burst; i++ { // arriving from the LAN
		tr.QueryLAN(lanQ(i))
	}
	c.advance(300 * time.Millisecond) // the uplink's queue
	for i := 0; i < burst; i++ {      // leaving the uplink, source NAT kept the port
		cp := lanQ(i)
		cp.Client = netip.AddrPortFrom(netip.MustParseAddr("198.18.10.2"), cp.Client.Port())
		tr.Query(cp)
	}
	if s := tr.Stats(); s.Evicted != 0 || s.Pending-s.LANPending != 1 {
		t.Errorf("the LAN client's copies entered the hub's table: %+v", s)
	}
	if m := tr.ReplyMatch(hub); m.Reason != Trusted || m.LAN {
		t.Fatalf("the hub's own query after the LAN burst: %+v", m)
	}
}

// A LAN client cannot get the hub's own query taken for the NAT copy of one of its queries by
// sending (never forwarded, TTL 1) queries for the hub's name with every ID: the NAT copy
// with a rewritten port is ambiguous, and its answer must not be LAN-only (in capture mode that
// made the hub's answer open forwarding only: the hub locked out of its cloud).
func TestTrackerHubQueryNotLANInNATWindow(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, 0, 0)
	for i := 0; i < 4096; i++ {
		cl := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 100, byte(2 + i/256)}), 5555)
		tr.QueryLAN(Exchange{Proto: ProtoUDP, Client: cl, Resolver: netip.MustParseAddrPort("198.18.1.1:53"), ID: uint16(i * 16), Question: Question{"api.afero.io", TypeA, ClassINET}})
	}
	c.advance(time.Second)
	hub := ex(ProtoUDP, "198.18.10.2:7000", "198.18.1.1:53", 16*77, "api.afero.io", TypeA)
	tr.Query(hub)
	if m := tr.ReplyMatch(hub); m.Reason != Trusted || m.LAN {
		t.Fatalf("the hub's reply: %+v", m)
	}
}

// Evicted LAN queries kept for their NAT copy go once their time is over.
func TestTrackerGravesExpire(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, 0, 100)
	tr.SetClientQuota(10)
	for i := 0; i < 50; i++ {
		tr.QueryLAN(ex(ProtoUDP, netip.AddrPortFrom(netip.MustParseAddr("198.18.100.2"), uint16(20000+i)).String(), "198.18.1.1:53", uint16(i), "x.afero.io", TypeA))
	}
	if len(tr.graves) != 40 {
		t.Fatalf("%d graves, want 40", len(tr.graves))
	}
	c.advance(DefaultPendingTTL)
	tr.Query(ex(ProtoUDP, "198.18.10.2:1000", "198.18.1.1:53", 1, "api.afero.io", TypeA))
	if len(tr.graves) != 0 || len(tr.nat) != 0 || len(tr.flows) != 1 {
		t.Fatalf("left behind: graves %d nat %d flows %d", len(tr.graves), len(tr.nat), len(tr.flows))
	}
}

// A link-local resolver is one server per link: trusted as fe80::1 on ifindex 4 (the zone the
// gate gives it), the same address on ifindex 2 is another, untrusted server; a global
// address is judged without its zone.
func TestTrackerLinkLocalResolverByLink(t *testing.T) {
	tr := NewTracker(newClock().now, 0, 0)
	tr.SetTrusted(func(a netip.Addr) bool {
		return a == netip.MustParseAddr("fe80::1%4") || a == netip.MustParseAddr("2001:db8::53")
	})
	cl := "[2001:db8:30::2]:40000"
	for _, c := range []struct {
		res  string
		want Reason
	}{
		{"[fe80::1%4]:53", Trusted},
		{"[fe80::1%2]:53", UntrustedResolver},
		{"[fe80::1]:53", UntrustedResolver},
		{"[2001:db8::53%4]:53", Trusted},
	} {
		q := ex(ProtoUDP, cl, c.res, 7, "api.afero.io", TypeAAAA)
		tr.Query(q)
		if got := tr.Reply(q); got != c.want {
			t.Errorf("reply from %s: %v, want %v", c.res, got, c.want)
		}
	}
}

// With the host's own queries known (the firewall marks them), a query leaving an uplink
// unmarked is a LAN client's: its copy after NAT rewrote the port stays the LAN client's, one
// whose LAN sighting was lost never enters the hub's table, and the hub's own query is never
// taken for a LAN query's copy. (With Query alone, the rewritten copy counted as the hub's, and
// an unseen one took a place in the hub's table.)
func TestTrackerForwardedKnown(t *testing.T) {
	c := newClock()
	tr := NewTracker(c.now, 4, 0)
	lanQ := ex(ProtoUDP, "198.18.100.2:5555", "198.18.1.1:53", 7, "api.afero.io", TypeA)
	tr.QueryLAN(lanQ)
	cp := lanQ
	cp.Client = netip.MustParseAddrPort("198.18.10.2:61000") // NAT rewrote the port
	tr.QueryForwarded(cp)
	if m := tr.ReplyMatch(cp); m.Reason != Trusted || !m.LAN {
		t.Fatalf("reply to the rewritten copy: %+v, want the LAN client's", m)
	}
	// Copies whose LAN sighting was lost (capture dropped): more than the hub's table holds.
	hub := ex(ProtoUDP, "198.18.10.2:7000", "198.18.1.1:53", 9, "api.afero.io", TypeA)
	tr.QueryHub(hub)
	for i := 0; i < 10; i++ {
		tr.QueryForwarded(ex(ProtoUDP, fmt.Sprintf("198.18.10.2:%d", 20000+i), "198.18.1.1:53", uint16(100+i), "x.afero.io", TypeA))
	}
	if s := tr.Stats(); s.Evicted != 0 || s.ForwardedUnseen != 10 {
		t.Fatalf("stats %+v: unseen copies pushed the hub's query out", s)
	}
	if m := tr.ReplyMatch(hub); m.Reason != Trusted || m.LAN {
		t.Fatalf("the hub's reply: %+v", m)
	}
	if m := tr.ReplyMatch(ex(ProtoUDP, "198.18.10.2:20009", "198.18.1.1:53", 109, "x.afero.io", TypeA)); m.Reason != Trusted || !m.LAN {
		t.Fatalf("reply to an unseen copy: %+v, want a LAN client's", m)
	}
	// A LAN client sending the hub's question with the hub's ID (never forwarded) does not
	// make the hub's own query its copy.
	tr.QueryLAN(ex(ProtoUDP, "198.18.100.3:5555", "198.18.1.1:53", 11, "api.afero.io", TypeA))
	hub2 := ex(ProtoUDP, "198.18.10.2:7001", "198.18.1.1:53", 11, "api.afero.io", TypeA)
	tr.QueryHub(hub2)
	if m := tr.ReplyMatch(hub2); m.Reason != Trusted || m.LAN {
		t.Fatalf("the hub's reply after a LAN query of the same ID: %+v", m)
	}
}
