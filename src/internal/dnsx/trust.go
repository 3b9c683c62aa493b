package dnsx

import (
	"net/netip"
	"time"
)

// Transport protocol numbers (IANA), as in the IP header.
const (
	ProtoTCP uint8 = 6
	ProtoUDP uint8 = 17
)

// Exchange identifies one DNS query on the wire, or the reply to it: the
// transport, the client's and the resolver's address and port, the DNS ID
// and the question. For a reply, Client is the destination and Resolver the
// source.
type Exchange struct {
	Proto    uint8
	Client   netip.AddrPort
	Resolver netip.AddrPort
	ID       uint16
	Question Question
	// TCP only: for a query, Seq is the client's sequence number after the query and Ack the
	// resolver's next one it expects; for a reply, the segment's own numbers. A reply must
	// acknowledge the query and follow the resolver's earlier bytes, within tcpWindow: what
	// TCP itself checks, which capture mode would otherwise skip.
	Seq, Ack uint32
	// AckUnknown: the query's segment acknowledged nothing (its data rode on the SYN, TCP
	// Fast Open), so where the resolver's bytes start is not known and not checked.
	AckUnknown bool
}

// Reason says why a reply was or was not trusted. The values index Counts.
type Reason uint8

const (
	Trusted           Reason = iota
	UntrustedResolver        // the reply comes from an address that is no resolver of an uplink
	Unsolicited              // no query pending from the reply's destination address and port
	WrongSource              // queries pending from there, none to the reply's source address
	WrongPort                // ... to that address, none from the reply's source port
	WrongID                  // ... none with the reply's DNS ID
	WrongQuestion            // ... none with the reply's question (name, type, class)
	WrongSequence            // ... none on the TCP stream where the reply's segment lies
	NumReasons
)

var reasonNames = [NumReasons]string{"trusted", "untrusted_resolver", "unsolicited", "wrong_source", "wrong_port", "wrong_id", "wrong_question", "wrong_sequence"}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return "reason?"
}

// Defaults of the Tracker.
const (
	// DefaultPendingTTL is how long a query waits for its reply. Resolvers
	// time out in a few seconds; TCP fallback and slow upstreams get more.
	DefaultPendingTTL = 15 * time.Second
	// DefaultMaxPending bounds each of the two tables (the hub's own
	// queries, LAN clients' queries): a table holding more than this many
	// queries younger than DefaultPendingTTL loses its oldest.
	DefaultMaxPending = 4096
	// DefaultClientPending bounds one LAN client's pending queries: a
	// client over it loses its own oldest, never another client's.
	DefaultClientPending = 256
	// natWindow is how long after a LAN client's query arrives its
	// forwarded copy (leaving an uplink after source NAT) is recognised by
	// ID, question and resolver when NAT changed the source port.
	natWindow = 2 * time.Second
	// tcpWindow: how far past the query's end a TCP reply may acknowledge, and past the
	// resolver's next byte at the query it may start (replies to earlier pipelined queries):
	// a blind forger hits it once in 2^24 tries, on top of the port and the ID.
	tcpWindow = 1 << 20
	// graveFactor: how many evicted LAN queries per LAN table entry are
	// remembered until their copies leave (a burst queued on a slow uplink).
	graveFactor = 4
)

type flowKey struct {
	proto  uint8
	client netip.AddrPort
}

// natKey is what a LAN query and its copy after source NAT have in common.
type natKey struct {
	proto    uint8
	resolver netip.AddrPort
	id       uint16
	q        Question
}

type pending struct {
	key     flowKey
	alias   flowKey // the flow after source NAT (LAN queries seen leaving an uplink)
	aliased bool
	lan     bool
	// rewritten: the alias came from a copy whose source port NAT changed,
	// recognised by ID, question and resolver alone; the hub's own query
	// may look the same (a LAN client can send its queries with every ID),
	// so the answer is not told to be a LAN client's.
	rewritten  bool
	grave      bool // evicted before its NAT copy was seen: kept in nat to absorb it
	resolver   netip.AddrPort
	id         uint16
	q          Question
	seq, ack   uint32 // TCP: see Exchange
	ackUnknown bool
	seenOnLAN  bool // QueryLAN: arrived from a LAN interface
	added      time.Time
	expires    time.Time
	done       bool // answered, expired or evicted: lazily dropped from the queues
}

// fifo is a queue of pending queries in insertion order (which is also
// expiry order); dead entries are skipped lazily.
type fifo struct {
	q    []*pending
	head int
}

func (f *fifo) push(p *pending) { f.q = append(f.q, p) }

// front returns the oldest live entry, nil when there is none.
func (f *fifo) front() *pending {
	for f.head < len(f.q) && f.q[f.head].done {
		f.q[f.head] = nil
		f.head++
	}
	f.compact()
	if f.head < len(f.q) {
		return f.q[f.head]
	}
	return nil
}

// compact drops the dead head when it is large.
func (f *fifo) compact() {
	if f.head > 64 && f.head*2 > len(f.q) {
		n := copy(f.q, f.q[f.head:])
		clear(f.q[n:])
		f.q = f.q[:n]
		f.head = 0
	}
}

// pool is one table of pending queries with its bound.
type pool struct {
	fifo
	n   int
	max int
}

// TrackerStats counts what the tracker did.
type TrackerStats struct {
	Queries    uint64 // queries added (the hub's own and LAN clients')
	LANQueries uint64 // of which from LAN clients
	Forwarded  uint64 // LAN queries seen again leaving an uplink after NAT (tracked once)
	// ForwardedUnseen: queries leaving an uplink known not to be the host's whose LAN
	// sighting was not seen (tracked as LAN queries of their own).
	ForwardedUnseen uint64
	Untrusted       uint64 // queries to a resolver that is not trusted: not tracked
	Expired         uint64 // queries that got no reply in time
	Evicted         uint64 // the hub's own queries dropped because its table was full
	LANEvicted      uint64 // LAN queries dropped because the LAN table was full
	OverQuota       uint64 // LAN queries dropped because their client was over its quota
	Pending         int    // queries waiting now (both tables)
	LANPending      int    // of which from LAN clients
	Verdicts        [NumReasons]uint64
	LANTrusted      uint64 // trusted replies that answered a LAN client's query
}

// Tracker is the anti-forgery table: it remembers the queries this host
// sent (or forwarded) to a trusted resolver and accepts a reply only if it
// comes from a trusted resolver and answers one of them - same transport,
// client address and port, resolver address and port, DNS ID and question
// (name compared case-insensitively, type, class) - and only once. Queries
// expire after the pending TTL.
//
// The hub's own queries and LAN clients' queries live in two tables, each
// bounded, so a LAN flood never evicts the hub's own queries; each LAN
// client also has a quota. A LAN client's query is seen twice, arriving
// from the LAN and leaving an uplink after source NAT: the second sighting
// becomes an alias of the first (the reply may be seen in either address
// view), never a second entry. Not safe for concurrent use; time comes from
// the injected clock.
type Tracker struct {
	now     func() time.Time
	ttl     time.Duration
	trusted func(netip.Addr) bool
	quota   int
	hub     pool
	lan     pool
	flows   map[flowKey][]*pending
	nat     map[natKey][]*pending // LAN queries whose NAT copy was not seen yet
	clients map[netip.Addr]*pool
	// graves are LAN queries evicted before their NAT copy was seen, oldest
	// first, at most graveFactor times lan.max: their copies (same source
	// port) are forwarded LAN queries, never the hub's own.
	graves []*pending
	stats  TrackerStats
}

// NewTracker makes a tracker. ttl and max of 0 take the defaults; max
// bounds each table. Every resolver is trusted until SetTrusted says
// otherwise.
func NewTracker(now func() time.Time, ttl time.Duration, maxPending int) *Tracker {
	if ttl <= 0 {
		ttl = DefaultPendingTTL
	}
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	return &Tracker{now: now, ttl: ttl, quota: min(DefaultClientPending, maxPending),
		hub: pool{max: maxPending}, lan: pool{max: maxPending},
		flows: make(map[flowKey][]*pending), nat: make(map[natKey][]*pending),
		clients: make(map[netip.Addr]*pool)}
}

// SetTrusted sets which resolver addresses are trusted (addresses arrive
// unmapped, without zone, except link-local IPv6 ones: those keep the zone
// the gate gave them, the ifindex of their link). nil trusts every resolver.
func (t *Tracker) SetTrusted(f func(netip.Addr) bool) { t.trusted = f }

// SetClientQuota bounds the pending queries of one LAN client (0: the
// default).
func (t *Tracker) SetClientQuota(n int) {
	if n <= 0 {
		n = DefaultClientPending
	}
	t.quota = n
}

func (t *Tracker) trusts(a netip.Addr) bool {
	if t.trusted == nil {
		return true
	}
	if a = a.Unmap(); !a.Is6() || !a.IsLinkLocalUnicast() {
		a = a.WithZone("")
	}
	return t.trusted(a)
}

// Query records a query this host sent, seen leaving an uplink. When LAN
// clients' queries are watched (QueryLAN), a forwarded LAN query seen here
// after source NAT is recognised and kept as the LAN client's.
func (t *Tracker) Query(x Exchange) {
	now := t.now()
	t.expire(now)
	if !t.trusts(x.Resolver.Addr()) {
		t.stats.Untrusted++
		return
	}
	if t.natCopy(x, now) {
		t.stats.Forwarded++
		return
	}
	if t.hub.n >= t.hub.max {
		t.evict(&t.hub)
		t.stats.Evicted++
	}
	t.add(x, now, false)
}

// QueryHub records a query this host itself sent, known to be its own (the
// firewall marked it: dnsgate's hub socket). Unlike Query it is never taken
// for the NAT copy of a LAN client's query, whatever LAN clients sent.
func (t *Tracker) QueryHub(x Exchange) {
	now := t.now()
	t.expire(now)
	if !t.trusts(x.Resolver.Addr()) {
		t.stats.Untrusted++
		return
	}
	if t.hub.n >= t.hub.max {
		t.evict(&t.hub)
		t.stats.Evicted++
	}
	t.add(x, now, false)
}

// QueryForwarded records a query seen leaving an uplink that is known not
// to be this host's own (the firewall marks those): the copy of a LAN
// client's query after source NAT. It is the LAN client's even when NAT
// rewrote its source port; one whose LAN sighting was never seen (the
// capture dropped it) is tracked as a LAN query of its own, under the quota
// of its address after NAT. It never enters the hub's table.
func (t *Tracker) QueryForwarded(x Exchange) {
	now := t.now()
	t.expire(now)
	if !t.trusts(x.Resolver.Addr()) {
		t.stats.Untrusted++
		return
	}
	if t.natCopySure(x, now) {
		t.stats.Forwarded++
		return
	}
	t.stats.ForwardedUnseen++
	t.addLAN(x, now, false)
}

// QueryLAN records a query a LAN client sent through this host (seen
// arriving from the LAN, before NAT).
func (t *Tracker) QueryLAN(x Exchange) {
	now := t.now()
	t.expire(now)
	if !t.trusts(x.Resolver.Addr()) {
		t.stats.Untrusted++
		return
	}
	t.addLAN(x, now, true)
}

// addLAN adds a LAN query within the bounds; nat: it may have a NAT copy to come.
func (t *Tracker) addLAN(x Exchange, now time.Time, nat bool) {
	c := t.clients[x.Client.Addr()]
	if c != nil && c.n >= t.quota {
		t.evict(c)
		t.stats.OverQuota++
	}
	if t.lan.n >= t.lan.max {
		t.evict(&t.lan)
		t.stats.LANEvicted++
	}
	p := t.add(x, now, true)
	p.seenOnLAN = nat
	if nat {
		nk := natKey{x.Proto, x.Resolver, x.ID, x.Question}
		t.nat[nk] = append(t.nat[nk], p)
	}
}

func (t *Tracker) add(x Exchange, now time.Time, lan bool) *pending {
	p := &pending{
		key:        flowKey{x.Proto, x.Client},
		lan:        lan,
		resolver:   x.Resolver,
		id:         x.ID,
		q:          x.Question,
		seq:        x.Seq,
		ack:        x.Ack,
		ackUnknown: x.AckUnknown,
		added:      now,
		expires:    now.Add(t.ttl),
	}
	t.flows[p.key] = append(t.flows[p.key], p)
	t.stats.Queries++
	if !lan {
		t.hub.push(p)
		t.hub.n++
		return p
	}
	t.stats.LANQueries++
	t.lan.push(p)
	t.lan.n++
	c := t.clients[x.Client.Addr()]
	if c == nil {
		c = &pool{}
		t.clients[x.Client.Addr()] = c
	}
	c.push(p)
	c.n++
	return p
}

// natCopy makes x, seen leaving an uplink, an alias of the LAN query it is
// the NAT copy of, if any: same transport, resolver, ID and question, and
// the same source port (NAT keeps it when it can) or, failing that, a LAN
// query seen within natWindow.
func (t *Tracker) natCopy(x Exchange, now time.Time) bool { return t.aliasCopy(x, now, false) }

// natCopySure is natCopy for a query known not to be the host's: a copy
// whose port NAT rewrote is still surely the LAN client's.
func (t *Tracker) natCopySure(x Exchange, now time.Time) bool { return t.aliasCopy(x, now, true) }

func (t *Tracker) aliasCopy(x Exchange, now time.Time, sure bool) bool {
	nk := natKey{x.Proto, x.Resolver, x.ID, x.Question}
	list := t.nat[nk]
	if len(list) == 0 {
		return false
	}
	pick := -1
	for i, p := range list {
		if p.key.client.Port() == x.Client.Port() {
			pick = i
			break
		}
		if pick < 0 && !p.grave && now.Sub(p.added) < natWindow {
			pick = i
		}
	}
	if pick < 0 {
		return false
	}
	p := list[pick]
	t.unNAT(nk, list, pick)
	if p.grave {
		// The copy of an evicted LAN query: not tracked at all.
		p.grave = false
		return true
	}
	p.rewritten = !sure && p.key.client.Port() != x.Client.Port()
	p.alias, p.aliased = flowKey{x.Proto, x.Client}, true
	t.flows[p.alias] = append(t.flows[p.alias], p)
	return true
}

func (t *Tracker) unNAT(nk natKey, list []*pending, i int) {
	if len(list) == 1 {
		delete(t.nat, nk)
		return
	}
	t.nat[nk] = append(list[:i], list[i+1:]...)
}

// Match is what Reply found.
type Match struct {
	Reason Reason
	// LAN: the reply answers a LAN client's query (whichever address view
	// it was seen in).
	LAN bool
	// SeenOnLAN: the query was seen arriving from a LAN interface. The host's own
	// queries never arrive there, whatever their source address says: an IPv6
	// client may send one with the host's own address, which Linux forwards.
	SeenOnLAN bool
}

// Reply checks a reply against the pending queries. Trusted consumes the
// query it answers, so a second reply to the same query is Unsolicited (or
// matches another, identical query still pending). The reason of a
// rejection is the first check that failed, in the order of Reason.
func (t *Tracker) Reply(x Exchange) Reason { return t.ReplyMatch(x).Reason }

// ReplyMatch is Reply that also says whose query the reply answered.
func (t *Tracker) ReplyMatch(x Exchange) Match {
	t.expire(t.now())
	m := t.match(x)
	t.stats.Verdicts[m.Reason]++
	if m.Reason == Trusted && m.LAN {
		t.stats.LANTrusted++
	}
	return m
}

func (t *Tracker) match(x Exchange) Match {
	if !t.trusts(x.Resolver.Addr()) {
		return Match{Reason: UntrustedResolver}
	}
	list := t.flows[flowKey{x.Proto, x.Client}]
	if len(list) == 0 {
		return Match{Reason: Unsolicited}
	}
	best := WrongSource
	for _, p := range list {
		r := WrongSource
		switch {
		case p.resolver.Addr() != x.Resolver.Addr():
		case p.resolver.Port() != x.Resolver.Port():
			r = WrongPort
		case p.id != x.ID:
			r = WrongID
		case p.q != x.Question:
			r = WrongQuestion
		case x.Proto == ProtoTCP && (x.Ack-p.seq >= tcpWindow || !p.ackUnknown && x.Seq-p.ack >= tcpWindow):
			r = WrongSequence
		default:
			t.remove(p)
			return Match{Reason: Trusted, LAN: p.lan && !p.rewritten, SeenOnLAN: p.seenOnLAN}
		}
		best = max(best, r)
	}
	return Match{Reason: best}
}

func (t *Tracker) dropFlow(key flowKey, p *pending) {
	list := t.flows[key]
	for i, q := range list {
		if q != p {
			continue
		}
		if len(list) == 1 {
			delete(t.flows, key)
		} else {
			t.flows[key] = append(list[:i], list[i+1:]...)
		}
		return
	}
}

// remove takes p out of every index; the queues drop it lazily.
func (t *Tracker) remove(p *pending) {
	if p.done {
		return
	}
	p.done = true
	t.dropFlow(p.key, p)
	if !p.lan {
		t.hub.n--
		return
	}
	if p.aliased {
		t.dropFlow(p.alias, p)
	} else {
		t.dropNAT(p)
	}
	t.lan.n--
	a := p.key.client.Addr()
	if c := t.clients[a]; c != nil {
		if c.n--; c.n <= 0 {
			delete(t.clients, a)
		}
	}
}

func (t *Tracker) evict(pl *pool) {
	p := pl.front()
	if p == nil {
		return
	}
	t.remove(p)
	if !p.lan || p.aliased {
		return
	}
	// Its copy may still be queued on the uplink: keep it where natCopy
	// finds it, so the copy does not enter the hub's table.
	nk := natKey{p.key.proto, p.resolver, p.id, p.q}
	p.grave = true
	t.nat[nk] = append(t.nat[nk], p)
	t.graves = append(t.graves, p)
	for len(t.graves) > graveFactor*t.lan.max {
		t.popGrave()
	}
}

// popGrave forgets the oldest evicted LAN query kept for its NAT copy.
func (t *Tracker) popGrave() {
	old := t.graves[0]
	t.graves[0] = nil
	t.graves = t.graves[1:]
	if old.grave {
		old.grave = false
		t.dropNAT(old)
	}
}

// dropNAT takes p out of the queries waiting for their NAT copy.
func (t *Tracker) dropNAT(p *pending) {
	nk := natKey{p.key.proto, p.resolver, p.id, p.q}
	list := t.nat[nk]
	for i, q := range list {
		if q == p {
			t.unNAT(nk, list, i)
			return
		}
	}
}

func (t *Tracker) expire(now time.Time) {
	// Evicted LAN queries whose copy never came go with their time (roughly in order).
	for len(t.graves) > 0 && !now.Before(t.graves[0].expires) {
		t.popGrave()
	}
	for _, pl := range []*pool{&t.hub, &t.lan} {
		for {
			p := pl.front()
			if p == nil || now.Before(p.expires) {
				break
			}
			t.remove(p)
			t.stats.Expired++
		}
	}
}

// Stats returns the counters.
func (t *Tracker) Stats() TrackerStats {
	s := t.stats
	s.Pending = t.hub.n + t.lan.n
	s.LANPending = t.lan.n
	return s
}
