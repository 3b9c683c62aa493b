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
}

// Reason says why a reply was or was not trusted. The values index Counts.
type Reason uint8

const (
	Trusted       Reason = iota
	Unsolicited          // no query pending from the reply's destination address and port
	WrongSource          // queries pending from there, none to the reply's source address
	WrongPort            // ... to that address, none from the reply's source port
	WrongID              // ... none with the reply's DNS ID
	WrongQuestion        // ... none with the reply's question (name, type, class)
	NumReasons
)

var reasonNames = [NumReasons]string{"trusted", "unsolicited", "wrong_source", "wrong_port", "wrong_id", "wrong_question"}

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
	// DefaultMaxPending bounds the table: a host making more than this many
	// queries in DefaultPendingTTL loses the oldest.
	DefaultMaxPending = 4096
)

type flowKey struct {
	proto  uint8
	client netip.AddrPort
}

type pending struct {
	key      flowKey
	resolver netip.AddrPort
	id       uint16
	q        Question
	expires  time.Time
	done     bool // answered or evicted: lazily dropped from the queue
}

// TrackerStats counts what the tracker did.
type TrackerStats struct {
	Queries  uint64 // queries added
	Expired  uint64 // queries that got no reply in time
	Evicted  uint64 // queries dropped because the table was full
	Pending  int    // queries waiting now
	Verdicts [NumReasons]uint64
}

// Tracker is the anti-forgery table: it remembers the queries this host
// sent (or forwarded) and accepts a reply only if it answers one of them -
// same transport, client address and port, resolver address and port, DNS
// ID and question (name compared case-insensitively, type, class) - and
// only once. Queries expire after the pending TTL. Not safe for concurrent
// use; time comes from the injected clock.
type Tracker struct {
	now   func() time.Time
	ttl   time.Duration
	max   int
	flows map[flowKey][]*pending
	queue []*pending // in insertion order, which is also expiry order
	head  int
	n     int
	stats TrackerStats
}

// NewTracker makes a tracker. ttl and max of 0 take the defaults.
func NewTracker(now func() time.Time, ttl time.Duration, maxPending int) *Tracker {
	if ttl <= 0 {
		ttl = DefaultPendingTTL
	}
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	return &Tracker{now: now, ttl: ttl, max: maxPending, flows: make(map[flowKey][]*pending)}
}

// Query records a query that left this host.
func (t *Tracker) Query(x Exchange) {
	now := t.now()
	t.expire(now)
	if t.n >= t.max {
		t.evictOldest()
	}
	p := &pending{
		key:      flowKey{x.Proto, x.Client},
		resolver: x.Resolver,
		id:       x.ID,
		q:        x.Question,
		expires:  now.Add(t.ttl),
	}
	t.flows[p.key] = append(t.flows[p.key], p)
	t.queue = append(t.queue, p)
	t.n++
	t.stats.Queries++
}

// Reply checks a reply against the pending queries. Trusted consumes the
// query it answers, so a second reply to the same query is Unsolicited (or
// matches another, identical query still pending). The reason of a
// rejection is the first check that failed, in the order of Reason.
func (t *Tracker) Reply(x Exchange) Reason {
	t.expire(t.now())
	r := t.match(x)
	t.stats.Verdicts[r]++
	return r
}

func (t *Tracker) match(x Exchange) Reason {
	key := flowKey{x.Proto, x.Client}
	list := t.flows[key]
	if len(list) == 0 {
		return Unsolicited
	}
	best := WrongSource
	for i, p := range list {
		r := WrongSource
		switch {
		case p.resolver.Addr() != x.Resolver.Addr():
		case p.resolver.Port() != x.Resolver.Port():
			r = WrongPort
		case p.id != x.ID:
			r = WrongID
		case p.q != x.Question:
			r = WrongQuestion
		default:
			p.done = true
			t.n--
			t.drop(key, list, i)
			return Trusted
		}
		best = max(best, r)
	}
	return best
}

func (t *Tracker) drop(key flowKey, list []*pending, i int) {
	if len(list) == 1 {
		delete(t.flows, key)
		return
	}
	list = append(list[:i], list[i+1:]...)
	t.flows[key] = list
}

func (t *Tracker) remove(p *pending) {
	list := t.flows[p.key]
	for i, q := range list {
		if q == p {
			t.drop(p.key, list, i)
			break
		}
	}
	p.done = true
	t.n--
}

func (t *Tracker) popFront() *pending {
	for t.head < len(t.queue) {
		p := t.queue[t.head]
		t.queue[t.head] = nil
		t.head++
		if !p.done {
			return p
		}
	}
	return nil
}

func (t *Tracker) peekFront() *pending {
	for t.head < len(t.queue) {
		if p := t.queue[t.head]; !p.done {
			return p
		}
		t.queue[t.head] = nil
		t.head++
	}
	return nil
}

func (t *Tracker) expire(now time.Time) {
	for {
		p := t.peekFront()
		if p == nil || now.Before(p.expires) {
			break
		}
		t.popFront()
		t.remove(p)
		t.stats.Expired++
	}
	// Compact the queue when its dead head is large.
	if t.head > 64 && t.head*2 > len(t.queue) {
		n := copy(t.queue, t.queue[t.head:])
		clear(t.queue[n:])
		t.queue = t.queue[:n]
		t.head = 0
	}
}

func (t *Tracker) evictOldest() {
	if p := t.popFront(); p != nil {
		t.remove(p)
		t.stats.Evicted++
	}
}

// Stats returns the counters.
func (t *Tracker) Stats() TrackerStats {
	s := t.stats
	s.Pending = t.n
	return s
}
