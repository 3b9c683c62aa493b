package dnsx

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// MaxChain bounds the CNAME steps followed from the question name. Resolvers
// give up long before (BIND stops at 16, Unbound at 11 or so).
const MaxChain = 16

// Errors of Walk: a reply that has one of these opens nothing.
var (
	ErrChainTooLong = errors.New("CNAME chain too long")
	ErrCNAMELoop    = errors.New("CNAME loop")
	ErrCNAMEFork    = errors.New("name has more than one CNAME")
)

// Matcher says whether a normalized name (lower case, no trailing dot) is on
// the whitelist. *whitelist.List satisfies it.
type Matcher interface {
	Match(name string) bool
}

// Answer is one address a reply answers, with its record's TTL.
type Answer struct {
	Addr netip.Addr
	TTL  uint32
}

// Chain is the result of walking a reply's answers.
type Chain struct {
	// Names is the question name followed by each CNAME target in order;
	// the last one is the name the addresses belong to.
	Names []string
	// Matched is the first name of Names the whitelist matched, "" if none.
	Matched string
	// Addrs are the A/AAAA answers of the last name, of the type asked for
	// (both for ANY), without duplicates (the longest TTL wins).
	Addrs []Answer
}

// Walk follows the answers of m from its question name through CNAME
// records, at most MaxChain of them, and collects the addresses of the name
// the chain ends at. Records whose owner is not on the chain are ignored,
// and so are addresses at intermediate names (a name with a CNAME has no
// other data, RFC 1034 3.6.2).
//
// Whitelist rule: the reply is whitelisted when any name on the chain - the
// question name, an intermediate CNAME target or the final name - matches.
// That covers a whitelisted service name behind a CDN alias
// (api.afero.io -> x.cloudfront.net) and a whitelisted CDN name behind a
// generic alias. The resolver is trusted for the chain it returns: the
// anti-forgery check (Tracker) makes sure the chain came from it.
// wl may be nil, then nothing matches.
func Walk(m *Message, wl Matcher) (Chain, error) {
	q := m.Question
	ch := Chain{Names: []string{q.Name}}
	cur := q.Name
	for steps := 0; ; steps++ {
		next := ""
		for i := range m.Answers {
			r := &m.Answers[i]
			if r.Type != TypeCNAME || r.Name != cur {
				continue
			}
			if next != "" && next != r.Target {
				return Chain{}, fmt.Errorf("%s: %w", cur, ErrCNAMEFork)
			}
			next = r.Target
		}
		if next == "" {
			break
		}
		if steps == MaxChain {
			return Chain{}, fmt.Errorf("from %s: more than %d steps: %w", q.Name, MaxChain, ErrChainTooLong)
		}
		for _, n := range ch.Names {
			if n == next {
				return Chain{}, fmt.Errorf("%s -> %s: %w", cur, next, ErrCNAMELoop)
			}
		}
		ch.Names = append(ch.Names, next)
		cur = next
	}
	if wl != nil {
		for _, n := range ch.Names {
			if wl.Match(n) {
				ch.Matched = n
				break
			}
		}
	}
	for i := range m.Answers {
		r := &m.Answers[i]
		if r.Name != cur || !wanted(q.Type, r.Type) {
			continue
		}
		dup := false
		for j := range ch.Addrs {
			if ch.Addrs[j].Addr == r.Addr {
				ch.Addrs[j].TTL = max(ch.Addrs[j].TTL, r.TTL)
				dup = true
			}
		}
		if !dup {
			ch.Addrs = append(ch.Addrs, Answer{Addr: r.Addr, TTL: r.TTL})
		}
	}
	return ch, nil
}

func wanted(qtype, rtype uint16) bool {
	switch rtype {
	case TypeA, TypeAAAA:
		return qtype == rtype || qtype == TypeANY
	}
	return false
}

// Policy turns a record's TTL into a pinhole timeout.
type Policy struct {
	// Grace is added to every TTL: a client may connect a little after the
	// record expired (clock skew, slow start).
	Grace time.Duration
	// MinTTL is the floor of the TTL: answers with TTL 0 or a few seconds
	// still give the client time to connect.
	MinTTL time.Duration
	// MaxTimeout caps the result; 0 means DefaultMaxTimeout.
	MaxTimeout time.Duration
}

// DefaultMaxTimeout caps pinholes of records with absurd TTLs; the kernel
// sets also have a limit (ipset: 2147483 s).
const DefaultMaxTimeout = 24 * time.Hour

// Timeout is max(TTL, MinTTL) + Grace, at most MaxTimeout. A TTL with the
// top bit set counts as 0 (RFC 2181 8).
func (p Policy) Timeout(ttl uint32) time.Duration {
	if ttl > 1<<31-1 {
		ttl = 0
	}
	d := max(time.Duration(ttl)*time.Second, p.MinTTL) + p.Grace
	limit := p.MaxTimeout
	if limit <= 0 {
		limit = DefaultMaxTimeout
	}
	return min(d, limit)
}
