package dnsx

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func seedMessages(f *testing.F) {
	f.Add(reply(f, 1, "api.afero.io.", dns.TypeA, chain3...))
	f.Add(reply(f, 2, "x.example.", dns.TypeAAAA, "x.example. 60 IN AAAA 2001:db8::1", "x.example. 60 IN TXT \"t\""))
	f.Add(reply(f, 3, "a.example.", dns.TypeA, "a.example. 60 IN CNAME a.example."))
	f.Add(query(f, 4, "api.afero.io.", dns.TypeA))
	f.Add(cat(hdr(1), qExample, []byte{1, 'x', 0xC0, 33}, aHeader, []byte{0, 4, 1, 2, 3, 4}))
	f.Add(cat(hdr(0), []byte{0xC0, 12, 0, 1, 0, 1}))
}

// FuzzParse: never panics; what parses is within the limits and agrees
// with miekg/dns on the records both understand.
func FuzzParse(f *testing.F) {
	seedMessages(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		if len(m.Answers) > MaxAnswers || len(m.Answers)+m.Skipped != int(m.ANCount) {
			t.Fatalf("answers %d skipped %d ancount %d", len(m.Answers), m.Skipped, m.ANCount)
		}
		for _, n := range append([]string{m.Question.Name}, names2(m)...) {
			if n == "" || len(n) > 4*MaxNameWire || (n != "." && strings.HasSuffix(n, ".")) || strings.ToLower(n) != n {
				t.Fatalf("bad name %q", n)
			}
		}
		var mm dns.Msg
		if mm.Unpack(b) != nil || len(mm.Question) != 1 {
			return
		}
		var theirs []Record
		for _, rr := range mm.Answer {
			h := rr.Header()
			if h.Class != dns.ClassINET {
				continue
			}
			r := Record{Name: NormalizeName(h.Name), Type: h.Rrtype, Class: h.Class, TTL: h.Ttl}
			switch v := rr.(type) {
			case *dns.A:
				r.Addr, _ = netipFrom(v.A)
			case *dns.AAAA:
				r.Addr, _ = netipFrom(v.AAAA)
			case *dns.CNAME:
				r.Target = NormalizeName(v.Target)
			default:
				continue
			}
			theirs = append(theirs, r)
		}
		if len(theirs) != len(m.Answers) {
			return // miekg reads some types we skip, or the reverse
		}
		for i, r := range theirs {
			if !plain(r.Name) || !plain(r.Target) {
				continue // escapes are written differently
			}
			if r != m.Answers[i] {
				t.Fatalf("record %d: ours %+v, miekg %+v", i, m.Answers[i], r)
			}
		}
	})
}

func names2(m *Message) []string {
	var s []string
	for _, r := range m.Answers {
		s = append(s, r.Name)
		if r.Type == TypeCNAME {
			s = append(s, r.Target)
		}
	}
	return s
}

func plain(s string) bool { return !strings.ContainsAny(s, `\"();@$ `) }

// FuzzWalk: walking whatever parses is bounded and consistent.
func FuzzWalk(f *testing.F) {
	seedMessages(f)
	wl := names{"api.afero.io", "*.example"}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			return
		}
		ch, err := Walk(m, wl)
		if err != nil {
			return
		}
		if len(ch.Names) < 1 || len(ch.Names) > MaxChain+1 || ch.Names[0] != m.Question.Name {
			t.Fatalf("chain %v", ch.Names)
		}
		if len(ch.Addrs) > len(m.Answers) {
			t.Fatalf("%d addresses from %d answers", len(ch.Addrs), len(m.Answers))
		}
		if ch.Matched != "" && !wl.Match(ch.Matched) {
			t.Fatalf("matched %q", ch.Matched)
		}
		for _, a := range ch.Addrs {
			if !a.Addr.IsValid() {
				t.Fatalf("invalid address")
			}
		}
	})
}

// FuzzDecodePacket: never panics (nor does ChecksumOK), the payload lies inside the packet.
func FuzzDecodePacket(f *testing.F) {
	msg := query(f, 1, "a.example.", dns.TypeA)
	f.Add(ipPacket(ProtoUDP, client, resolver, msg))
	f.Add(ipPacket(ProtoTCP, client, resolver, msg))
	f.Add(ipPacket(ProtoUDP, netipMust("[2001:db8::1]:1"), netipMust("[2001:db8::2]:53"), msg))
	f.Fuzz(func(t *testing.T, b []byte) {
		pk, err := DecodePacket(b)
		if err != nil {
			return
		}
		if len(pk.Payload) > len(b) || (pk.Proto != ProtoUDP && pk.Proto != ProtoTCP) {
			t.Fatalf("packet %+v from %d bytes", pk, len(b))
		}
		_ = pk.ChecksumOK() // never panics either
	})
}

// FuzzExtractor: a stream of packets in both directions never panics and
// never opens an address without a trusted, whitelisted reply.
func FuzzExtractor(f *testing.F) {
	q := ipPacket(ProtoUDP, client, resolver, query(f, 77, "api.afero.io.", dns.TypeA))
	r := ipPacket(ProtoUDP, resolver, client, reply(f, 77, "api.afero.io.", dns.TypeA, chain3...))
	f.Add(frame(q, r))
	f.Add(frame(r))
	f.Fuzz(func(t *testing.T, stream []byte) {
		c := newClock()
		x := newExtractor(c)
		for len(stream) >= 3 {
			dir, n := stream[0], int(binary.BigEndian.Uint16(stream[1:]))
			stream = stream[3:]
			if n > len(stream) {
				n = len(stream)
			}
			pk, err := DecodePacket(stream[:n])
			stream = stream[n:]
			c.advance(time.Duration(dir) * time.Millisecond)
			if err != nil {
				continue
			}
			if dir&1 == 0 {
				if dir&2 == 0 {
					_ = x.Query(pk)
				} else {
					_ = x.QueryLAN(pk)
				}
				continue
			}
			res, err := x.Reply(pk)
			if len(res.Pinholes) > 0 && (err != nil || res.Reason != Trusted || res.Chain.Matched == "") {
				t.Fatalf("opened %v for %+v, %v", res.Pinholes, res, err)
			}
			if len(res.Pinholes) > DefaultPerReply {
				t.Fatalf("opened %d addresses from one reply", len(res.Pinholes))
			}
		}
		s := x.Stats()
		if s.Pinholes > 0 && s.Tracker.Verdicts[Trusted] == 0 {
			t.Fatalf("pinholes without trusted replies: %+v", s)
		}
		if s.Tracker.Pending > 2*DefaultMaxPending || s.Tracker.LANPending > DefaultMaxPending {
			t.Fatalf("pending tables over their bounds: %+v", s.Tracker)
		}
	})
}

// frame joins packets for FuzzExtractor: direction byte (even query, odd
// reply), length, packet.
func frame(pkts ...[]byte) []byte {
	var b []byte
	for i, p := range pkts {
		b = append(b, byte(i))
		b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
		b = append(b, p...)
	}
	return b
}
