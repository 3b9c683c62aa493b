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
}

// Result is what the extractor decided about one reply.
type Result struct {
	Reason   Reason   // trust verdict
	Exchange Exchange // who answered whom, and the question
	Chain    Chain    // walked only for trusted replies
	// Pinholes holds the addresses to open: only for a trusted, successful
	// reply whose chain is whitelisted.
	Pinholes []Pinhole
}

// Stats counts what the extractor saw and did.
type Stats struct {
	Tracker        TrackerStats
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
	Policy     Policy
	Matcher    Matcher
}

// Extractor is the whole pure pipeline: queries go into the anti-forgery
// tracker; replies are parsed, checked against it, walked, matched against
// the whitelist and turned into pinholes. Not safe for concurrent use.
type Extractor struct {
	tr    *Tracker
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
	return &Extractor{tr: NewTracker(now, c.PendingTTL, c.MaxPending), pol: c.Policy, wl: c.Matcher}
}

// SetMatcher replaces the whitelist (on reload).
func (x *Extractor) SetMatcher(m Matcher) { x.wl = m }

// SetPolicy replaces the timeout policy (on reload).
func (x *Extractor) SetPolicy(p Policy) { x.pol = p }

// Query records an outgoing query (client = source, resolver = destination).
func (x *Extractor) Query(pk Packet) error {
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
	x.tr.Query(Exchange{Proto: pk.Proto, Client: pk.Src, Resolver: pk.Dst, ID: h.ID, Question: q})
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
	res := Result{Exchange: Exchange{Proto: pk.Proto, Client: pk.Dst, Resolver: pk.Src, ID: m.ID, Question: m.Question}}
	res.Reason = x.tr.Reply(res.Exchange)
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
	for _, a := range res.Chain.Addrs {
		res.Pinholes = append(res.Pinholes, Pinhole{Addr: a.Addr, Timeout: x.pol.Timeout(a.TTL), Name: m.Question.Name})
	}
	x.stats.Pinholes += uint64(len(res.Pinholes))
	return res, nil
}

// Stats returns the counters.
func (x *Extractor) Stats() Stats {
	s := x.stats
	s.Tracker = x.tr.Stats()
	return s
}
