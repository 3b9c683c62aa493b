package dnsx

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Errors of Extractor.Query and Extractor.Reply for messages that are valid
// DNS but not what was expected in that direction.
var (
	ErrNotQuery    = errors.New("not a standard query")
	ErrNotResponse = errors.New("not a response")
)

// Pinhole is one address to open, for how long, and the question name it
// answered (for the set element's comment and logs).
type Pinhole struct {
	Addr    netip.Addr
	Timeout time.Duration
	Name    string
	LAN     bool // learned from a LAN client's query, not the hub's own
}

// Result is what the extractor decided about one reply.
type Result struct {
	Reason   Reason   // trust verdict
	Exchange Exchange // who answered whom, and the question
	Chain    Chain    // walked only for trusted replies
	// LAN: the reply answers a LAN client's query. SeenOnLAN: that query was seen
	// arriving from the LAN (see Match).
	LAN, SeenOnLAN bool
	// Pinholes holds the addresses to open: only for a trusted, successful
	// reply whose chain is whitelisted, within the Limits.
	Pinholes []Pinhole
	// Revoke holds addresses to close before opening Pinholes: they gave
	// way to a bound (their name over PerName, a full set).
	Revoke []netip.Addr
}

// Stats counts what the extractor saw and did.
type Stats struct {
	Tracker        TrackerStats
	Bounds         BoundStats
	Queries        uint64 // queries seen (valid ones are in Tracker.Queries)
	Replies        uint64 // replies seen
	Malformed      uint64 // packets or messages that did not parse
	BadChain       uint64 // trusted replies whose CNAME chain was refused
	NotWhitelisted uint64 // trusted replies for names not on the whitelist
	Whitelisted    uint64 // trusted replies for whitelisted names
	Pinholes       uint64 // addresses handed out to open
}

// Config configures an Extractor.
type Config struct {
	Now        func() time.Time // the clock; time.Now if nil
	PendingTTL time.Duration    // see NewTracker
	MaxPending int              // see NewTracker
	// Trusted says which resolver addresses are the uplinks' (see
	// Tracker.SetTrusted); nil trusts every resolver.
	Trusted func(netip.Addr) bool
	Limits  Limits
	Policy  Policy
	Matcher Matcher
}

// Extractor is the whole pure pipeline: queries go into the anti-forgery
// tracker; replies are parsed, checked against it, walked, matched against
// the whitelist and turned into pinholes. Not safe for concurrent use.
type Extractor struct {
	tr    *Tracker
	led   *Ledger
	pol   Policy
	wl    Matcher
	stats Stats
}

// NewExtractor makes an extractor.
func NewExtractor(c Config) *Extractor {
	now := c.Now
	if now == nil {
		now = time.Now
	}
	x := &Extractor{tr: NewTracker(now, c.PendingTTL, c.MaxPending), led: NewLedger(now, c.Limits), pol: c.Policy, wl: c.Matcher}
	x.tr.SetTrusted(c.Trusted)
	return x
}

// SetTrusted replaces the set of trusted resolvers (uplinks changed).
func (x *Extractor) SetTrusted(f func(netip.Addr) bool) { x.tr.SetTrusted(f) }

// SetLimits replaces the limits (on reload).
func (x *Extractor) SetLimits(l Limits) { x.led.SetLimits(l) }

// MakeRoom picks n learned addresses to close for a newer one of the hub
// (lan false) or of a LAN client: see Ledger.
func (x *Extractor) MakeRoom(n int, lan bool) []netip.Addr { return x.led.MakeRoom(n, lan) }

// Forget removes addresses the firewall refused from the account.
func (x *Extractor) Forget(as []netip.Addr) { x.led.Forget(as) }

// SetMatcher replaces the whitelist (on reload).
func (x *Extractor) SetMatcher(m Matcher) { x.wl = m }

// SetPolicy replaces the timeout policy (on reload).
func (x *Extractor) SetPolicy(p Policy) { x.pol = p }

// Query records a query leaving an uplink (client = source, resolver =
// destination): the hub's own, or a LAN client's after NAT.
func (x *Extractor) Query(pk Packet) error { return x.query(pk, queryUplink) }

// QueryLAN records a query a LAN client sent through the hub, as it arrived
// from the LAN.
func (x *Extractor) QueryLAN(pk Packet) error { return x.query(pk, queryLAN) }

// QueryHub records a query leaving an uplink known to be the hub's own (the
// firewall marked it); QueryForwarded one known not to be (unmarked: a LAN
// client's after NAT). See Tracker.QueryHub and QueryForwarded.
func (x *Extractor) QueryHub(pk Packet) error       { return x.query(pk, queryHub) }
func (x *Extractor) QueryForwarded(pk Packet) error { return x.query(pk, queryForwarded) }

// queryKind says what is known of a query's origin.
type queryKind int

const (
	queryUplink    queryKind = iota // leaving an uplink: the hub's, or a LAN client's after NAT
	queryLAN                        // arriving from the LAN
	queryHub                        // leaving an uplink, the hub's own
	queryForwarded                  // leaving an uplink, not the hub's
)

func (x *Extractor) query(pk Packet, kind queryKind) error {
	x.stats.Queries++
	h, q, err := parseQuestion(pk.Payload)
	if err != nil {
		x.stats.Malformed++
		return fmt.Errorf("query %s -> %s: %w", pk.Src, pk.Dst, err)
	}
	if h.Response || h.Opcode != 0 {
		x.stats.Malformed++
		return fmt.Errorf("query %s -> %s: qr %v opcode %d: %w", pk.Src, pk.Dst, h.Response, h.Opcode, ErrNotQuery)
	}
	e := Exchange{Proto: pk.Proto, Client: pk.Src, Resolver: pk.Dst, ID: h.ID, Question: q}
	if pk.Proto == ProtoTCP {
		e.Seq, e.Ack = pk.Seq+uint32(2+len(pk.Payload)), pk.Ack
		if pk.Flags&TCPFlagSYN != 0 {
			e.Seq++ // data on a SYN (TCP Fast Open) starts after it
		}
		e.AckUnknown = pk.Flags&TCPFlagACK == 0
	}
	switch kind {
	case queryLAN:
		x.tr.QueryLAN(e)
	case queryHub:
		x.tr.QueryHub(e)
	case queryForwarded:
		x.tr.QueryForwarded(e)
	default:
		x.tr.Query(e)
	}
	return nil
}

// parseQuestion reads the header and question only: a query's other
// sections do not matter.
func parseQuestion(b []byte) (Header, Question, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Header{}, Question{}, err
	}
	if h.QDCount != 1 {
		return Header{}, Question{}, fmt.Errorf("header: qdcount %d: %w", h.QDCount, ErrQDCount)
	}
	p := parser{msg: b}
	q, _, err := p.question()
	return h, q, err
}

// Reply decides about an incoming reply (resolver = source, client =
// destination). An error means the packet was not a usable DNS response;
// otherwise Result.Reason says whether it was trusted and Result.Pinholes
// what to open.
func (x *Extractor) Reply(pk Packet) (Result, error) {
	x.stats.Replies++
	m, err := Parse(pk.Payload)
	if err != nil {
		x.stats.Malformed++
		return Result{}, fmt.Errorf("reply %s -> %s: %w", pk.Src, pk.Dst, err)
	}
	if !m.Response {
		x.stats.Malformed++
		return Result{}, fmt.Errorf("reply %s -> %s: %w", pk.Src, pk.Dst, ErrNotResponse)
	}
	res := Result{Exchange: Exchange{Proto: pk.Proto, Client: pk.Dst, Resolver: pk.Src, ID: m.ID, Question: m.Question, Seq: pk.Seq, Ack: pk.Ack}}
	match := x.tr.ReplyMatch(res.Exchange)
	res.Reason, res.LAN, res.SeenOnLAN = match.Reason, match.LAN, match.SeenOnLAN
	if res.Reason != Trusted || m.Opcode != 0 || m.RCode != 0 {
		return res, nil
	}
	res.Chain, err = Walk(m, x.wl)
	if err != nil {
		x.stats.BadChain++
		return res, fmt.Errorf("reply %s -> %s for %s: %w", pk.Src, pk.Dst, m.Question.Name, err)
	}
	if res.Chain.Matched == "" {
		x.stats.NotWhitelisted++
		return res, nil
	}
	x.stats.Whitelisted++
	var ps []Pinhole
	for _, a := range res.Chain.Addrs {
		ps = append(ps, Pinhole{Addr: a.Addr, Timeout: x.pol.Timeout(a.TTL), Name: m.Question.Name, LAN: res.LAN})
	}
	res.Pinholes, res.Revoke = x.led.Admit(m.Question.Name, res.LAN, ps)
	x.stats.Pinholes += uint64(len(res.Pinholes))
	return res, nil
}

// Stats returns the counters.
func (x *Extractor) Stats() Stats {
	s := x.stats
	s.Tracker = x.tr.Stats()
	s.Bounds = x.led.Stats()
	return s
}
