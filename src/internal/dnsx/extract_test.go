package dnsx

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func decode(t testing.TB, b []byte) Packet {
	t.Helper()
	pk, err := DecodePacket(b)
	if err != nil {
		t.Fatalf("DecodePacket: %v", err)
	}
	return pk
}

var chain3 = []string{
	"api.afero.io. 300 IN CNAME a.example.",
	"a.example. 300 IN CNAME b.example.",
	"b.example. 300 IN CNAME c.example.",
	"c.example. 20 IN A 198.18.2.1",
	"c.example. 400 IN A 198.18.2.2",
}

func newExtractor(c *fakeClock) *Extractor {
	return NewExtractor(Config{
		Now:     c.now,
		Policy:  Policy{Grace: 10 * time.Second, MinTTL: 30 * time.Second},
		Matcher: names{"api.afero.io", "*.afero.io"},
	})
}

func TestExtractorForgeries(t *testing.T) {
	other := netip.MustParseAddrPort("198.18.1.66:53")
	tests := []struct {
		name       string
		query      bool // send the genuine query first
		src, dst   netip.AddrPort
		id         uint16
		qname      string
		want       Reason
		wantHoles  []Pinhole
		wantErrAny bool
	}{
		{
			name: "genuine", query: true, src: resolver, dst: client, id: 77, qname: "api.afero.io.", want: Trusted,
			wantHoles: []Pinhole{{netip.MustParseAddr("198.18.2.1"), 40 * time.Second, "api.afero.io", false}, {netip.MustParseAddr("198.18.2.2"), 410 * time.Second, "api.afero.io", false}},
		},
		{name: "unsolicited", src: resolver, dst: client, id: 77, qname: "api.afero.io.", want: Unsolicited},
		{name: "wrong source", query: true, src: other, dst: client, id: 77, qname: "api.afero.io.", want: WrongSource},
		{name: "wrong source port", query: true, src: netip.AddrPortFrom(resolver.Addr(), 5353), dst: client, id: 77, qname: "api.afero.io.", want: WrongPort},
		{name: "wrong client port", query: true, src: resolver, dst: netip.AddrPortFrom(client.Addr(), 40001), id: 77, qname: "api.afero.io.", want: Unsolicited},
		{name: "wrong ID", query: true, src: resolver, dst: client, id: 78, qname: "api.afero.io.", want: WrongID},
		{name: "answer for another question", query: true, src: resolver, dst: client, id: 77, qname: "x.afero.io.", want: WrongQuestion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			x := newExtractor(c)
			if tt.query {
				if err := x.Query(decode(t, ipPacket(ProtoUDP, client, resolver, query(t, 77, "api.afero.io.", dns.TypeA)))); err != nil {
					t.Fatal(err)
				}
			}
			rrs := chain3
			if tt.qname != "api.afero.io." {
				rrs = append([]string{tt.qname + " 300 IN CNAME api.afero.io."}, chain3...)
			}
			res, err := x.Reply(decode(t, ipPacket(ProtoUDP, tt.src, tt.dst, reply(t, tt.id, tt.qname, dns.TypeA, rrs...))))
			if err != nil {
				t.Fatal(err)
			}
			if res.Reason != tt.want {
				t.Fatalf("reason %v, want %v", res.Reason, tt.want)
			}
			if !reflect.DeepEqual(res.Pinholes, tt.wantHoles) {
				t.Errorf("pinholes %v, want %v", res.Pinholes, tt.wantHoles)
			}
			s := x.Stats()
			if s.Tracker.Verdicts[tt.want] != 1 || s.Pinholes != uint64(len(tt.wantHoles)) {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestExtractorOutcomes(t *testing.T) {
	c := newClock()
	x := newExtractor(c)
	ask := func(id uint16, name string, qtype uint16) {
		t.Helper()
		if err := x.Query(decode(t, ipPacket(ProtoUDP, client, resolver, query(t, id, name, qtype)))); err != nil {
			t.Fatal(err)
		}
	}
	answer := func(id uint16, name string, qtype uint16, rrs ...string) (Result, error) {
		return x.Reply(decode(t, ipPacket(ProtoUDP, resolver, client, reply(t, id, name, qtype, rrs...))))
	}

	// Not whitelisted: trusted, nothing opened.
	ask(1, "evil.example.", dns.TypeA)
	res, err := answer(1, "evil.example.", dns.TypeA, "evil.example. 60 IN A 198.18.9.9")
	if err != nil || res.Reason != Trusted || res.Pinholes != nil {
		t.Fatalf("not whitelisted: %+v %v", res, err)
	}

	// CNAME loop: trusted, refused, nothing opened.
	ask(2, "api.afero.io.", dns.TypeA)
	res, err = answer(2, "api.afero.io.", dns.TypeA, "api.afero.io. 60 IN CNAME api.afero.io.", "api.afero.io. 60 IN A 198.18.9.8")
	if !errors.Is(err, ErrCNAMELoop) || res.Pinholes != nil {
		t.Fatalf("loop: %+v %v", res, err)
	}

	// A query sent as a reply, a reply sent as a query.
	if _, err := x.Reply(decode(t, ipPacket(ProtoUDP, resolver, client, query(t, 3, "api.afero.io.", dns.TypeA)))); !errors.Is(err, ErrNotResponse) {
		t.Fatalf("query as reply: %v", err)
	}
	if err := x.Query(decode(t, ipPacket(ProtoUDP, client, resolver, reply(t, 3, "api.afero.io.", dns.TypeA)))); !errors.Is(err, ErrNotQuery) {
		t.Fatalf("reply as query: %v", err)
	}

	// SERVFAIL answered: consumed, nothing opened.
	ask(4, "api.afero.io.", dns.TypeA)
	m := new(dns.Msg)
	m.SetQuestion("api.afero.io.", dns.TypeA)
	m.Id, m.Response, m.Rcode = 4, true, dns.RcodeServerFailure
	rr, _ := dns.NewRR("api.afero.io. 60 IN A 198.18.9.7")
	m.Answer = []dns.RR{rr}
	b, _ := m.Pack()
	res, err = x.Reply(decode(t, ipPacket(ProtoUDP, resolver, client, b)))
	if err != nil || res.Reason != Trusted || res.Pinholes != nil {
		t.Fatalf("servfail: %+v %v", res, err)
	}

	// TCP, IPv6, AAAA.
	c6 := netip.MustParseAddrPort("[2001:db8::2]:41000")
	r6 := netip.MustParseAddrPort("[2001:db8::53]:53")
	q6 := query(t, 5, "api.afero.io.", dns.TypeAAAA)
	if err := x.Query(decode(t, tcpNumbers(ipPacket(ProtoTCP, c6, r6, q6), 1000, 5000))); err != nil {
		t.Fatal(err)
	}
	r6msg := reply(t, 5, "api.afero.io.", dns.TypeAAAA, "api.afero.io. 3600 IN AAAA 2001:db8::80")
	// A segment off the stream (a blind forger's guess) is no reply and leaves the query
	// to the real one.
	for _, n := range [][2]uint32{{5000, 1000}, {5000 - 1, 1002 + uint32(len(q6))}, {5000 + 1<<21, 1002 + uint32(len(q6))}} {
		res, err = x.Reply(decode(t, tcpNumbers(ipPacket(ProtoTCP, r6, c6, r6msg), n[0], n[1])))
		if err != nil || res.Reason != WrongSequence || len(res.Pinholes) != 0 {
			t.Fatalf("tcp6 seq %d ack %d: %+v %v", n[0], n[1], res, err)
		}
	}
	res, err = x.Reply(decode(t, tcpNumbers(ipPacket(ProtoTCP, r6, c6, r6msg), 5000, 1002+uint32(len(q6)))))
	if err != nil || res.Reason != Trusted {
		t.Fatalf("tcp6: %+v %v", res, err)
	}
	// TCP Fast Open: the query rides on the SYN (which acknowledges nothing); the reply
	// acknowledges the SYN and the query.
	syn := ipPacket(ProtoTCP, c6, r6, q6)
	binary.BigEndian.PutUint32(syn[40+4:], 7000)
	syn[40+13] = 0x02
	if err := x.Query(decode(t, syn)); err != nil {
		t.Fatal(err)
	}
	res, err = x.Reply(decode(t, tcpNumbers(ipPacket(ProtoTCP, r6, c6, r6msg), 0x9abcdef0, 7003+uint32(len(q6)))))
	want := []Pinhole{{netip.MustParseAddr("2001:db8::80"), 3610 * time.Second, "api.afero.io", false}}
	if err != nil || res.Reason != Trusted || !reflect.DeepEqual(res.Pinholes, want) {
		t.Fatalf("tcp6: %+v %v", res, err)
	}

	// Whitelist swapped on reload.
	x.SetMatcher(names{"evil.example"})
	ask(6, "evil.example.", dns.TypeA)
	res, err = answer(6, "evil.example.", dns.TypeA, "evil.example. 60 IN A 198.18.9.9")
	if err != nil || len(res.Pinholes) != 1 {
		t.Fatalf("after SetMatcher: %+v %v", res, err)
	}

	s := x.Stats()
	want2 := Stats{Queries: 7, Replies: 10, // 3 replies off the TCP stream; 1 Fast Open query
		Malformed: 2, BadChain: 1, NotWhitelisted: 1, Whitelisted: 3, Pinholes: 3, Bounds: BoundStats{Live: 2}}
	s.Tracker = TrackerStats{}
	if s != want2 {
		t.Errorf("stats %+v\nwant  %+v", s, want2)
	}
}

func TestDecodePacket(t *testing.T) {
	msg := query(t, 1, "a.example.", dns.TypeA)
	v4 := ipPacket(ProtoUDP, client, resolver, msg)
	pk := decode(t, v4)
	if pk.Proto != ProtoUDP || pk.Src != client || pk.Dst != resolver || !reflect.DeepEqual(pk.Payload, msg) {
		t.Fatalf("v4: %+v", pk)
	}
	// Trailing link padding past the IP total length is not payload.
	pk = decode(t, append(append([]byte{}, v4...), 0, 0, 0, 0))
	if !reflect.DeepEqual(pk.Payload, msg) {
		t.Fatalf("padding leaked into payload")
	}
	frag := append([]byte{}, v4...)
	frag[6] = 0x20 // more fragments
	bad := map[string]struct {
		b    []byte
		want error
	}{
		"empty":          {nil, ErrPacketShort},
		"version 5":      {[]byte{0x50, 0, 0, 0}, ErrNotIP},
		"v4 short":       {v4[:19], ErrPacketShort},
		"v4 total > len": {v4[:len(v4)-1], ErrPacketShort},
		"fragment":       {frag, ErrFragment},
		"icmp":           {func() []byte { b := append([]byte{}, v4...); b[9] = 1; return b }(), ErrTransport},
		"udp length":     {func() []byte { b := append([]byte{}, v4...); b[24], b[25] = 0xff, 0xff; return b }(), ErrPacketShort},
		"tcp split": {func() []byte {
			b := ipPacket(ProtoTCP, client, resolver, msg)
			b[40], b[41] = 0x10, 0 // length prefix says 4096
			return b
		}(), ErrTCPSegment},
		"v6 short": {ipPacket(ProtoUDP, netip.MustParseAddrPort("[2001:db8::1]:1"), netip.MustParseAddrPort("[2001:db8::2]:53"), msg)[:39], ErrPacketShort},
	}
	for name, tc := range bad {
		if _, err := DecodePacket(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
}
