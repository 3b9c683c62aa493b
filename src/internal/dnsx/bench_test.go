package dnsx

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// BenchmarkExtractor measures one query plus its reply through the whole
// pure pipeline: packet decode, parse, trust check, CNAME walk (3 steps),
// whitelist match and timeouts. It reports replies per second on one core:
//
//	go test ./internal/dnsx -run XXX -bench Extractor -cpu 1
func BenchmarkExtractor(b *testing.B) {
	q := ipPacket(ProtoUDP, client, resolver, query(b, 0, "api.afero.io.", dns.TypeA))
	r := ipPacket(ProtoUDP, resolver, client, reply(b, 0, "api.afero.io.", dns.TypeA, chain3...))
	x := NewExtractor(Config{
		Policy:  Policy{Grace: 10 * time.Second, MinTTL: 30 * time.Second},
		Matcher: names{"api.afero.io", "*.afero.io", "otacdn.example", "*.cdn.example"},
	})
	const idOff = 20 + 8 // IPv4 + UDP header
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.BigEndian.PutUint16(q[idOff:], uint16(i))
		binary.BigEndian.PutUint16(r[idOff:], uint16(i))
		qp, err := DecodePacket(q)
		if err != nil {
			b.Fatal(err)
		}
		if err := x.Query(qp); err != nil {
			b.Fatal(err)
		}
		rp, err := DecodePacket(r)
		if err != nil {
			b.Fatal(err)
		}
		res, err := x.Reply(rp)
		if err != nil || len(res.Pinholes) != 2 {
			b.Fatalf("%+v %v", res, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "replies/s")
}

// BenchmarkParse is the parser alone on the same reply.
func BenchmarkParse(b *testing.B) {
	msg := reply(b, 0, "api.afero.io.", dns.TypeA, chain3...)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}
