package dnsx

import (
	"container/heap"
	"net/netip"
	"slices"
	"time"
)

// Defaults of Limits.
const (
	// DefaultPerReply bounds the addresses one reply opens. CDNs and
	// multi-value answers give 8 or fewer; a reply of hundreds is a flood.
	DefaultPerReply = 32
	// DefaultPerName bounds the addresses live per question name (Cilium's
	// tofqdns keeps 50 per name).
	DefaultPerName = 50
	// DefaultCapacity is the learned set's size (firewall set_maxelem).
	DefaultCapacity = 65536
)

// Limits bound what DNS answers may open, so that no answer (a lying
// resolver's, or a flood of genuine ones) can fill the firewall's set.
type Limits struct {
	PerReply int // addresses opened from one reply; the rest are dropped (0: DefaultPerReply)
	PerName  int // addresses live per question name; its oldest give way (0: DefaultPerName)
	Capacity int // learned addresses live in all (0: DefaultCapacity)
}

func (l Limits) norm() Limits {
	if l.PerReply <= 0 {
		l.PerReply = DefaultPerReply
	}
	if l.PerName <= 0 {
		l.PerName = DefaultPerName
	}
	if l.Capacity <= 0 {
		l.Capacity = DefaultCapacity
	}
	l.PerReply = min(l.PerReply, l.PerName)
	return l
}

// BoundStats counts what the limits did.
type BoundStats struct {
	Truncated   uint64 // answered addresses beyond PerReply, never opened
	NameEvicted uint64 // addresses closed because their name was over PerName (its soonest to expire)
	GaveWayLAN  uint64 // LAN-learned addresses closed to make room in a full set
	GaveWayHub  uint64 // hub-learned addresses closed to make room for newer ones of the hub
	Refused     uint64 // LAN-learned addresses not opened: the set was full of the hub's
	Live        int    // learned addresses live now
	LiveLAN     int    // of which learned only from LAN clients' queries
}

type learned struct {
	lan     bool      // learned only from LAN clients' queries
	expires time.Time // the latest expiry any answer gave it
	names   []string  // the question names holding it
}

type expItem struct {
	exp  time.Time
	addr netip.Addr
}

// expHeap is a min-heap by expiry. Items go stale when their address is
// refreshed, changes origin or goes; they are skipped when they surface.
type expHeap []expItem

func (h expHeap) Len() int           { return len(h) }
func (h expHeap) Less(i, j int) bool { return h[i].exp.Before(h[j].exp) }
func (h expHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *expHeap) Push(x any)        { *h = append(*h, x.(expItem)) }
func (h *expHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}

// Ledger is the account of the addresses DNS answers opened: it applies
// Limits and says which addresses to close when a bound makes room. Pure;
// time comes from the injected clock. Not safe for concurrent use.
//
// What gives way when the set is full: for an answer to the hub's own
// query, LAN-learned addresses first, then the hub's own that expire
// soonest; for an answer to a LAN client's query, only LAN-learned ones (the
// answer is refused when none is left). So LAN clients can never push the
// hub's cloud out.
type Ledger struct {
	now     func() time.Time
	lim     Limits
	entries map[netip.Addr]*learned
	names   map[string]map[netip.Addr]time.Time // per name: address -> expiry for that name
	heaps   [2]expHeap                          // [0] hub-learned, [1] LAN-learned
	nLAN    int
	stats   BoundStats
}

// NewLedger makes a ledger.
func NewLedger(now func() time.Time, lim Limits) *Ledger {
	return &Ledger{now: now, lim: lim.norm(), entries: map[netip.Addr]*learned{}, names: map[string]map[netip.Addr]time.Time{}}
}

// SetLimits changes the limits (on reload); a smaller capacity takes effect
// as answers arrive.
func (l *Ledger) SetLimits(lim Limits) { l.lim = lim.norm() }

func heapOf(lan bool) int {
	if lan {
		return 1
	}
	return 0
}

func (l *Ledger) push(a netip.Addr, e *learned) {
	heap.Push(&l.heaps[heapOf(e.lan)], expItem{e.expires, a})
	if h := &l.heaps[heapOf(e.lan)]; len(*h) > 2*len(l.entries)+1024 {
		l.rebuild()
	}
}

// rebuild drops the stale items of both heaps.
func (l *Ledger) rebuild() {
	l.heaps[0], l.heaps[1] = l.heaps[0][:0], l.heaps[1][:0]
	for a, e := range l.entries {
		l.heaps[heapOf(e.lan)] = append(l.heaps[heapOf(e.lan)], expItem{e.expires, a})
	}
	heap.Init(&l.heaps[0])
	heap.Init(&l.heaps[1])
}

// top returns the live item at the top of heap i, popping stale ones.
func (l *Ledger) top(i int) (expItem, bool) {
	h := &l.heaps[i]
	for h.Len() > 0 {
		it := (*h)[0]
		if e := l.entries[it.addr]; e != nil && heapOf(e.lan) == i && e.expires.Equal(it.exp) {
			return it, true
		}
		heap.Pop(h)
	}
	return expItem{}, false
}

// drop forgets a learned address entirely.
func (l *Ledger) drop(a netip.Addr) {
	e := l.entries[a]
	if e == nil {
		return
	}
	for _, n := range e.names {
		if m := l.names[n]; m != nil {
			delete(m, a)
			if len(m) == 0 {
				delete(l.names, n)
			}
		}
	}
	if e.lan {
		l.nLAN--
	}
	delete(l.entries, a)
}

// expire forgets the addresses whose time is over (the kernel's set
// expires them by itself).
func (l *Ledger) expire(now time.Time) {
	for i := range l.heaps {
		for {
			it, ok := l.top(i)
			if !ok || it.exp.After(now) {
				break
			}
			heap.Pop(&l.heaps[i])
			l.drop(it.addr)
		}
	}
}

// victim picks the address that gives way to a new one learned from a LAN
// client's query (lan) or from the hub's own, skipping keep. ok is false
// when nothing may give way.
func (l *Ledger) victim(lan bool, keep map[netip.Addr]bool) (netip.Addr, bool) {
	order := []int{1, 0}
	if lan {
		order = []int{1}
	}
	for _, i := range order {
		var skipped []expItem
		found := false
		var it expItem
		for {
			var ok bool
			if it, ok = l.top(i); !ok {
				break
			}
			heap.Pop(&l.heaps[i])
			if keep[it.addr] {
				skipped = append(skipped, it)
				continue
			}
			found = true
			break
		}
		for _, s := range skipped {
			heap.Push(&l.heaps[i], s)
		}
		if found {
			if i == 1 {
				l.stats.GaveWayLAN++
			} else {
				l.stats.GaveWayHub++
			}
			l.drop(it.addr)
			return it.addr, true
		}
	}
	return netip.Addr{}, false
}

// Admit takes the pinholes of one trusted, whitelisted reply to a query for
// name (from a LAN client's query when lan) and applies the limits. It
// returns the pinholes to open and the addresses to close first (they gave
// way; an address opened by hand stays open, that is the firewall's call).
func (l *Ledger) Admit(name string, lan bool, ps []Pinhole) (open []Pinhole, revoke []netip.Addr) {
	now := l.now()
	l.expire(now)
	if len(ps) > l.lim.PerReply {
		l.stats.Truncated += uint64(len(ps) - l.lim.PerReply)
		ps = ps[:l.lim.PerReply]
	}
	keep := make(map[netip.Addr]bool, len(ps))
	for _, p := range ps {
		keep[p.Addr] = true
	}
	for _, p := range ps {
		exp := now.Add(p.Timeout)
		e := l.entries[p.Addr]
		if e == nil {
			for len(l.entries) >= l.lim.Capacity {
				a, ok := l.victim(lan, keep)
				if !ok {
					break
				}
				revoke = append(revoke, a)
			}
			if len(l.entries) >= l.lim.Capacity {
				l.stats.Refused++
				continue
			}
			e = &learned{lan: lan, expires: exp}
			l.entries[p.Addr] = e
			if lan {
				l.nLAN++
			}
			l.push(p.Addr, e)
		} else {
			moved := false
			if !lan && e.lan {
				e.lan, moved = false, true
				l.nLAN--
			}
			if exp.After(e.expires) {
				e.expires, moved = exp, true
			}
			if moved {
				l.push(p.Addr, e)
			}
		}
		if !slices.Contains(e.names, name) {
			e.names = append(e.names, name)
		}
		nm := l.names[name] // looked up each time: a victim may have been its last address
		if nm == nil {
			nm = map[netip.Addr]time.Time{}
			l.names[name] = nm
		}
		if exp.After(nm[p.Addr]) {
			nm[p.Addr] = exp
		}
		open = append(open, p)
	}
	if nm := l.names[name]; len(nm) > l.lim.PerName {
		revoke = append(revoke, l.trimName(name, lan, nm, keep, now)...)
	}
	// An address that gave way and came back in this same reply stays.
	revoke = slices.DeleteFunc(revoke, func(a netip.Addr) bool { return l.entries[a] != nil })
	return open, revoke
}

// trimName closes the name's addresses beyond PerName, LAN-learned ones
// first, then those that expire soonest (never one of this reply). An answer
// to a LAN client's query (lan) closes only LAN-learned addresses, as in a
// full set, so LAN clients cannot close the hub's own: the name then holds
// at most PerName plus one reply.
func (l *Ledger) trimName(name string, lan bool, nm map[netip.Addr]time.Time, keep map[netip.Addr]bool, now time.Time) []netip.Addr {
	var revoke []netip.Addr
	type cand struct {
		a   netip.Addr
		exp time.Time
		lan bool
	}
	var cs []cand
	for a, exp := range nm {
		e := l.entries[a]
		fromLAN := e == nil || e.lan
		if !keep[a] && (fromLAN || !lan) {
			cs = append(cs, cand{a, exp, fromLAN})
		}
	}
	slices.SortFunc(cs, func(x, y cand) int {
		if x.lan != y.lan {
			if x.lan {
				return -1
			}
			return 1
		}
		if c := x.exp.Compare(y.exp); c != 0 {
			return c
		}
		return x.a.Compare(y.a) // map order is random: ties go the same way every time
	})
	for _, c := range cs {
		if len(nm) <= l.lim.PerName {
			break
		}
		delete(nm, c.a)
		e := l.entries[c.a]
		if e == nil {
			continue
		}
		e.names = slices.DeleteFunc(e.names, func(n string) bool { return n == name })
		if len(e.names) == 0 {
			l.drop(c.a)
			if c.exp.After(now) {
				l.stats.NameEvicted++
				revoke = append(revoke, c.a)
			}
		}
	}
	return revoke
}

// MakeRoom picks n addresses to close for a newer one (the firewall said its
// set is full: addresses opened by hand share it), with the order of Admit.
func (l *Ledger) MakeRoom(n int, lan bool) []netip.Addr {
	var out []netip.Addr
	for range n {
		a, ok := l.victim(lan, nil)
		if !ok {
			break
		}
		out = append(out, a)
	}
	return out
}

// Forget removes addresses from the account (the firewall refused them).
func (l *Ledger) Forget(as []netip.Addr) {
	for _, a := range as {
		l.drop(a)
	}
}

// Stats returns the counters.
func (l *Ledger) Stats() BoundStats {
	s := l.stats
	s.Live, s.LiveLAN = len(l.entries), l.nLAN
	return s
}
