package dnsx

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func ans(addr string, ttl uint32) Answer {
	return Answer{Addr: netip.MustParseAddr(addr), TTL: ttl}
}

func TestWalk(t *testing.T) {
	wl := names{"api.afero.io", "*.cdn.afero.io", "otacdn.example"}
	// chain of n CNAME steps from q0.example to qn.example, A at the end.
	chain := func(n int) []string {
		var rrs []string
		for i := 0; i < n; i++ {
			rrs = append(rrs, fmt.Sprintf("q%d.example. 60 IN CNAME q%d.example.", i, i+1))
		}
		return append(rrs, fmt.Sprintf("q%d.example. 60 IN A 198.18.7.1", n))
	}
	chainNames := func(n int) []string {
		var s []string
		for i := 0; i <= n; i++ {
			s = append(s, fmt.Sprintf("q%d.example", i))
		}
		return s
	}
	tests := []struct {
		name    string
		q       string
		qtype   uint16
		rrs     []string
		want    Chain
		wantErr error
	}{
		{
			name: "direct A, whitelisted",
			q:    "API.afero.io.", qtype: dns.TypeA,
			rrs:  []string{"api.afero.io. 60 IN A 198.18.1.1", "api.afero.io. 30 IN A 198.18.1.2"},
			want: Chain{Names: []string{"api.afero.io"}, Matched: "api.afero.io", Addrs: []Answer{ans("198.18.1.1", 60), ans("198.18.1.2", 30)}},
		},
		{
			name: "three step chain, whitelisted by the question",
			q:    "api.afero.io.", qtype: dns.TypeA,
			rrs: []string{
				"api.afero.io. 300 IN CNAME a.example.",
				"a.example. 300 IN CNAME b.example.",
				"b.example. 300 IN CNAME c.example.",
				"c.example. 20 IN A 198.18.2.1",
				"c.example. 20 IN A 198.18.2.2",
			},
			want: Chain{
				Names:   []string{"api.afero.io", "a.example", "b.example", "c.example"},
				Matched: "api.afero.io",
				Addrs:   []Answer{ans("198.18.2.1", 20), ans("198.18.2.2", 20)},
			},
		},
		{
			name: "whitelisted by an intermediate name",
			q:    "x.example.", qtype: dns.TypeA,
			rrs: []string{
				"x.example. 60 IN CNAME eu.cdn.afero.io.",
				"eu.cdn.afero.io. 60 IN CNAME edge.example.",
				"edge.example. 60 IN A 198.18.3.1",
			},
			want: Chain{Names: []string{"x.example", "eu.cdn.afero.io", "edge.example"}, Matched: "eu.cdn.afero.io", Addrs: []Answer{ans("198.18.3.1", 60)}},
		},
		{
			name: "whitelisted by the final name",
			q:    "y.example.", qtype: dns.TypeAAAA,
			rrs:  []string{"y.example. 60 IN CNAME otacdn.example.", "otacdn.example. 10 IN AAAA 2001:db8::7"},
			want: Chain{Names: []string{"y.example", "otacdn.example"}, Matched: "otacdn.example", Addrs: []Answer{ans("2001:db8::7", 10)}},
		},
		{
			name: "not whitelisted: addresses walked, nothing matched",
			q:    "evil.example.", qtype: dns.TypeA,
			rrs:  []string{"evil.example. 60 IN A 198.18.9.9"},
			want: Chain{Names: []string{"evil.example"}, Addrs: []Answer{ans("198.18.9.9", 60)}},
		},
		{
			name: "no prefix match: api.afero.io.evil.example",
			q:    "api.afero.io.evil.example.", qtype: dns.TypeA,
			rrs:  []string{"api.afero.io.evil.example. 60 IN A 198.18.9.9"},
			want: Chain{Names: []string{"api.afero.io.evil.example"}, Addrs: []Answer{ans("198.18.9.9", 60)}},
		},
		{
			name: "records off the chain are ignored",
			q:    "api.afero.io.", qtype: dns.TypeA,
			rrs: []string{
				"api.afero.io. 60 IN CNAME c.example.",
				"other.example. 60 IN A 198.18.9.1",
				"c.example. 60 IN A 198.18.4.1",
				"other.example. 60 IN CNAME c.example.",
			},
			want: Chain{Names: []string{"api.afero.io", "c.example"}, Matched: "api.afero.io", Addrs: []Answer{ans("198.18.4.1", 60)}},
		},
		{
			name: "addresses at an intermediate name are ignored",
			q:    "api.afero.io.", qtype: dns.TypeA,
			rrs: []string{
				"api.afero.io. 60 IN A 198.18.9.2",
				"api.afero.io. 60 IN CNAME c.example.",
				"c.example. 60 IN A 198.18.4.2",
			},
			want: Chain{Names: []string{"api.afero.io", "c.example"}, Matched: "api.afero.io", Addrs: []Answer{ans("198.18.4.2", 60)}},
		},
		{
			name: "only the type asked for",
			q:    "api.afero.io.", qtype: dns.TypeA,
			rrs:  []string{"api.afero.io. 60 IN AAAA 2001:db8::1", "api.afero.io. 60 IN A 198.18.4.3"},
			want: Chain{Names: []string{"api.afero.io"}, Matched: "api.afero.io", Addrs: []Answer{ans("198.18.4.3", 60)}},
		},
		{
			name: "ANY takes both",
			q:    "api.afero.io.", qtype: dns.TypeANY,
			rrs:  []string{"api.afero.io. 60 IN AAAA 2001:db8::1", "api.afero.io. 60 IN A 198.18.4.3"},
			want: Chain{Names: []string{"api.afero.io"}, Matched: "api.afero.io", Addrs: []Answer{ans("2001:db8::1", 60), ans("198.18.4.3", 60)}},
		},
		{
			name: "duplicates merged, longest TTL",
			q:    "api.afero.io.", qtype: dns.TypeA,
			rrs:  []string{"api.afero.io. 10 IN A 198.18.4.4", "api.afero.io. 90 IN A 198.18.4.4"},
			want: Chain{Names: []string{"api.afero.io"}, Matched: "api.afero.io", Addrs: []Answer{ans("198.18.4.4", 90)}},
		},
		{
			name: "CNAME without addresses",
			q:    "api.afero.io.", qtype: dns.TypeA,
			rrs:  []string{"api.afero.io. 60 IN CNAME c.example."},
			want: Chain{Names: []string{"api.afero.io", "c.example"}, Matched: "api.afero.io"},
		},
		{
			name: "16 steps are followed", q: "q0.example.", qtype: dns.TypeA, rrs: chain(MaxChain),
			want: Chain{Names: chainNames(MaxChain), Addrs: []Answer{ans("198.18.7.1", 60)}},
		},
		{name: "17 steps are refused", q: "q0.example.", qtype: dns.TypeA, rrs: chain(MaxChain + 1), wantErr: ErrChainTooLong},
		{
			name: "loop", q: "api.afero.io.", qtype: dns.TypeA, wantErr: ErrCNAMELoop,
			rrs: []string{"api.afero.io. 60 IN CNAME a.example.", "a.example. 60 IN CNAME api.afero.io."},
		},
		{
			name: "self loop", q: "api.afero.io.", qtype: dns.TypeA, wantErr: ErrCNAMELoop,
			rrs: []string{"api.afero.io. 60 IN CNAME api.afero.io."},
		},
		{
			name: "two different CNAMEs for one name", q: "api.afero.io.", qtype: dns.TypeA, wantErr: ErrCNAMEFork,
			rrs: []string{"api.afero.io. 60 IN CNAME a.example.", "api.afero.io. 60 IN CNAME b.example.", "a.example. 60 IN A 198.18.9.3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(reply(t, 1, tt.q, tt.qtype, tt.rrs...))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Walk(m, wl)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Walk = %+v, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestWalkNilMatcher(t *testing.T) {
	m, err := Parse(reply(t, 1, "api.afero.io.", dns.TypeA, "api.afero.io. 60 IN A 198.18.1.1"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := Walk(m, nil)
	if err != nil || ch.Matched != "" || len(ch.Addrs) != 1 {
		t.Fatalf("Walk(nil) = %+v, %v", ch, err)
	}
}

func TestPolicyTimeout(t *testing.T) {
	p := Policy{Grace: 30 * time.Second, MinTTL: 60 * time.Second, MaxTimeout: time.Hour}
	for _, tc := range []struct {
		ttl  uint32
		want time.Duration
	}{
		{0, 90 * time.Second},
		{59, 90 * time.Second},
		{300, 330 * time.Second},
		{3600, time.Hour},
		{1 << 31, 90 * time.Second}, // top bit set: 0
	} {
		if got := p.Timeout(tc.ttl); got != tc.want {
			t.Errorf("Timeout(%d) = %v, want %v", tc.ttl, got, tc.want)
		}
	}
	if got := (Policy{}).Timeout(1 << 30); got != DefaultMaxTimeout {
		t.Errorf("default cap: %v", got)
	}
}
