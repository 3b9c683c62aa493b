package dnsx

import (
	"net/netip"
	"slices"
	"testing"
	"time"
)

func holes(from, n int, ttl time.Duration) []Pinhole {
	var ps []Pinhole
	for i := from; i < from+n; i++ {
		ps = append(ps, Pinhole{Addr: netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(1 + i%250)}), Timeout: ttl})
	}
	return ps
}

func addrs(ps []Pinhole) []netip.Addr {
	var out []netip.Addr
	for _, p := range ps {
		out = append(out, p.Addr)
	}
	return out
}

func TestLedgerPerReply(t *testing.T) {
	l := NewLedger(newClock().now, Limits{PerReply: 4, PerName: 10, Capacity: 100})
	open, revoke := l.Admit("api.afero.io", false, holes(0, 300, time.Hour))
	if len(open) != 4 || len(revoke) != 0 {
		t.Fatalf("open %d revoke %v", len(open), revoke)
	}
	if s := l.Stats(); s.Truncated != 296 || s.Live != 4 {
		t.Fatalf("stats %+v", s)
	}
}

// A name keeps at most PerName live addresses: new ones push out those that expire soonest,
// which are closed unless another name still holds them.
func TestLedgerPerName(t *testing.T) {
	c := newClock()
	l := NewLedger(c.now, Limits{PerReply: 4, PerName: 6, Capacity: 100})
	l.Admit("a.afero.io", false, holes(0, 4, time.Hour))   // 0-3, expire at 1h
	l.Admit("b.afero.io", false, holes(0, 1, 2*time.Hour)) // 0 is b's too
	c.advance(time.Minute)
	open, revoke := l.Admit("a.afero.io", false, holes(4, 4, time.Hour)) // 4-7
	if len(open) != 4 {
		t.Fatalf("open %v", open)
	}
	// a had 8: the two that expire soonest (0 and 1, both 1h from the start) leave a; 0 stays
	// open for b, 1 is closed.
	if want := addrs(holes(1, 1, 0)); !slices.Equal(revoke, want) {
		t.Fatalf("revoke %v, want %v", revoke, want)
	}
	if s := l.Stats(); s.NameEvicted != 1 || s.Live != 7 {
		t.Fatalf("stats %+v", s)
	}
}

// A full set: the hub's answers push out LAN-learned addresses first, then the hub's own that
// expire soonest; LAN answers push out only LAN-learned ones, else are refused.
func TestLedgerFullSetGivesWayToHub(t *testing.T) {
	c := newClock()
	l := NewLedger(c.now, Limits{PerReply: 10, PerName: 10, Capacity: 20})
	for i := 0; i < 5; i++ { // a LAN flood fills 20 with 50 answers
		l.Admit("flood"+string(rune('a'+i))+".afero.io", true, holes(100+10*i, 10, time.Duration(i+1)*time.Hour))
	}
	if s := l.Stats(); s.Live != 20 || s.LiveLAN != 20 || s.GaveWayLAN != 30 {
		t.Fatalf("after the LAN flood: %+v", s)
	}
	open, revoke := l.Admit("conclave.afero.io", false, holes(0, 10, time.Minute))
	if len(open) != 10 || len(revoke) != 10 {
		t.Fatalf("hub answer in a full set: open %d revoke %d", len(open), len(revoke))
	}
	open, revoke = l.Admit("api.afero.io", false, holes(10, 10, 2*time.Minute))
	if len(open) != 10 || len(revoke) != 10 {
		t.Fatalf("second hub answer: open %d revoke %d", len(open), len(revoke))
	}
	if s := l.Stats(); s.LiveLAN != 0 || s.Live != 20 || s.GaveWayLAN != 50 {
		t.Fatalf("stats %+v", s)
	}
	// Only the hub's left: a LAN answer is refused.
	open, revoke = l.Admit("lan.afero.io", true, holes(200, 3, time.Hour))
	if len(open) != 0 || len(revoke) != 0 || l.Stats().Refused != 3 {
		t.Fatalf("LAN answer in a set full of the hub's: open %v revoke %v %+v", open, revoke, l.Stats())
	}
	// A new hub answer pushes out the hub's own that expire soonest (conclave's, 1 min).
	open, revoke = l.Admit("aft.afero.io", false, holes(50, 2, time.Hour))
	if len(open) != 2 || len(revoke) != 2 {
		t.Fatalf("hub answer in a set full of the hub's: open %v revoke %v", open, revoke)
	}
	for _, a := range revoke {
		if !slices.Contains(addrs(holes(0, 10, 0)), a) {
			t.Fatalf("revoked %v, not one of the soonest to expire", a)
		}
	}
	if s := l.Stats(); s.GaveWayHub != 2 {
		t.Fatalf("stats %+v", s)
	}
	// Expired addresses free their room without anything to close.
	c.advance(3 * time.Minute)
	open, revoke = l.Admit("lan.afero.io", true, holes(200, 3, time.Hour))
	if len(open) != 3 || len(revoke) != 0 {
		t.Fatalf("after expiry: open %v revoke %v", open, revoke)
	}
}

// An address learned by a LAN client and then by the hub is the hub's: it no longer gives way
// as a LAN-learned one.
func TestLedgerHubTakesOver(t *testing.T) {
	l := NewLedger(newClock().now, Limits{PerReply: 10, PerName: 10, Capacity: 2})
	l.Admit("a.afero.io", true, holes(0, 1, time.Hour))
	l.Admit("a.afero.io", false, holes(0, 1, time.Hour))
	l.Admit("b.afero.io", true, holes(1, 1, time.Hour))
	_, revoke := l.Admit("c.afero.io", false, holes(2, 1, time.Hour))
	if !slices.Equal(revoke, addrs(holes(1, 1, 0))) {
		t.Fatalf("revoke %v", revoke)
	}
	if room := l.MakeRoom(5, true); len(room) != 0 {
		t.Fatalf("a LAN answer made room among the hub's: %v", room)
	}
	if room := l.MakeRoom(1, false); len(room) != 1 {
		t.Fatalf("MakeRoom for the hub: %v", room)
	}
}

// The per-name bound is no way for LAN clients to close the hub's own addresses: a LAN
// client asking the trusted resolver for the hub's name again and again (a CDN answers other
// addresses each time) pushes out only LAN-learned addresses of the name, never the hub's.
func TestLedgerPerNameLANSparesHub(t *testing.T) {
	c := newClock()
	l := NewLedger(c.now, Limits{PerReply: 4, PerName: 6, Capacity: 100})
	l.Admit("ota.afero.io", false, holes(0, 4, time.Hour)) // the hub's: 0-3
	hub := addrs(holes(0, 4, 0))
	for i := 1; i <= 10; i++ {
		c.advance(time.Minute)
		_, revoke := l.Admit("ota.afero.io", true, holes(4*i, 4, time.Hour))
		for _, a := range revoke {
			if slices.Contains(hub, a) {
				t.Fatalf("LAN answer %d closed the hub's %v (revoke %v)", i, a, revoke)
			}
		}
	}
	// The hub's answers still push out LAN-learned ones first.
	c.advance(time.Minute)
	_, revoke := l.Admit("ota.afero.io", false, holes(100, 2, time.Hour))
	for _, a := range revoke {
		if slices.Contains(hub, a) {
			t.Fatalf("the hub's answer closed the hub's %v while LAN-learned ones were live (revoke %v)", a, revoke)
		}
	}
	if nm := l.names["ota.afero.io"]; len(nm) > 6+4 {
		t.Fatalf("name holds %d addresses", len(nm))
	}
}
