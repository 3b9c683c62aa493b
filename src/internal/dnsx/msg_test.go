package dnsx

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/miekg/dns"
)

// hdr is a response header with one question and n answers.
func hdr(an uint16) []byte {
	return []byte{0x12, 0x34, 0x81, 0x80, 0, 1, byte(an >> 8), byte(an), 0, 0, 0, 0}
}

func cat(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

var (
	qExample = []byte{3, 'w', 'w', 'w', 7, 'E', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0, 0, 1, 0, 1}
	ptrQ     = []byte{0xC0, 12} // pointer to the question name
	aHeader  = []byte{0, 1, 0, 1, 0, 0, 0, 60}
)

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		want Message
	}{
		{
			name: "A with compression and mixed case",
			msg:  reply(t, 7, "WWW.Example.COM.", dns.TypeA, "www.example.com. 60 IN A 198.18.5.1", "www.example.com. 60 IN A 198.18.5.2"),
			want: Message{
				Header:   Header{ID: 7, Response: true, QDCount: 1, ANCount: 2},
				Question: Question{Name: "www.example.com", Type: TypeA, Class: ClassINET},
				Answers: []Record{
					{Name: "www.example.com", Type: TypeA, Class: ClassINET, TTL: 60, Addr: netip.MustParseAddr("198.18.5.1")},
					{Name: "www.example.com", Type: TypeA, Class: ClassINET, TTL: 60, Addr: netip.MustParseAddr("198.18.5.2")},
				},
			},
		},
		{
			name: "CNAME chain, AAAA, other types skipped",
			msg: reply(t, 9, "api.afero.io.", dns.TypeAAAA,
				"api.afero.io. 300 IN CNAME lb.Afero.io.",
				"lb.afero.io. 30 IN CNAME edge.cdn.example.",
				"edge.cdn.example. 20 IN AAAA 2001:db8::1",
				"edge.cdn.example. 20 IN TXT \"hello\"",
				"edge.cdn.example. 20 IN MX 10 mail.example."),
			want: Message{
				Header:   Header{ID: 9, Response: true, QDCount: 1, ANCount: 5},
				Question: Question{Name: "api.afero.io", Type: TypeAAAA, Class: ClassINET},
				Answers: []Record{
					{Name: "api.afero.io", Type: TypeCNAME, Class: ClassINET, TTL: 300, Target: "lb.afero.io"},
					{Name: "lb.afero.io", Type: TypeCNAME, Class: ClassINET, TTL: 30, Target: "edge.cdn.example"},
					{Name: "edge.cdn.example", Type: TypeAAAA, Class: ClassINET, TTL: 20, Addr: netip.MustParseAddr("2001:db8::1")},
				},
				Skipped: 2,
			},
		},
		{
			name: "NXDOMAIN, no answers",
			msg: func() []byte {
				m := new(dns.Msg)
				m.SetQuestion("nope.example.", dns.TypeA)
				m.Id = 3
				m.Response = true
				m.Rcode = dns.RcodeNameError
				b, _ := m.Pack()
				return b
			}(),
			want: Message{
				Header:   Header{ID: 3, Response: true, RCode: 3, QDCount: 1},
				Question: Question{Name: "nope.example", Type: TypeA, Class: ClassINET},
			},
		},
		{
			name: "label with a dot and a space is escaped",
			msg:  cat(hdr(0), []byte{3, 'a', '.', 'b', 2, 'C', ' ', 0, 0, 1, 0, 1}),
			want: Message{
				Header:   Header{ID: 0x1234, Response: true, QDCount: 1},
				Question: Question{Name: `a\046b.c\032`, Type: TypeA, Class: ClassINET},
			},
		},
		{
			name: "root question",
			msg:  cat(hdr(0), []byte{0, 0, 2, 0, 1}),
			want: Message{
				Header:   Header{ID: 0x1234, Response: true, QDCount: 1},
				Question: Question{Name: ".", Type: 2, Class: ClassINET},
			},
		},
		{
			name: "pointer after labels and pointer to pointer",
			msg: cat(hdr(2), qExample,
				// answer 1 owner: "cdn" + pointer to "example.com" at 16
				[]byte{3, 'c', 'd', 'n', 0xC0, 16}, []byte{0, 5, 0, 1, 0, 0, 0, 9, 0, 2}, []byte{0xC0, 33},
				// answer 2 owner: pointer to answer 1's owner at 33, A
				[]byte{0xC0, 33}, aHeader, []byte{0, 4, 198, 18, 0, 9}),
			want: Message{
				Header:   Header{ID: 0x1234, Response: true, QDCount: 1, ANCount: 2},
				Question: Question{Name: "www.example.com", Type: TypeA, Class: ClassINET},
				Answers: []Record{
					{Name: "cdn.example.com", Type: TypeCNAME, Class: ClassINET, TTL: 9, Target: "cdn.example.com"},
					{Name: "cdn.example.com", Type: TypeA, Class: ClassINET, TTL: 60, Addr: netip.MustParseAddr("198.18.0.9")},
				},
			},
		},
		{
			name: "class CH record skipped",
			msg:  cat(hdr(1), qExample, ptrQ, []byte{0, 1, 0, 3, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4}),
			want: Message{
				Header:   Header{ID: 0x1234, Response: true, QDCount: 1, ANCount: 1},
				Question: Question{Name: "www.example.com", Type: TypeA, Class: ClassINET},
				Skipped:  1,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.msg)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got.Answers == nil {
				got.Answers = nil
			}
			if len(got.Answers) == 0 {
				got.Answers = nil
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", *got, tt.want)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	long := hdr(0)
	for i := 0; i < 4; i++ {
		long = append(long, 63)
		for j := 0; j < 63; j++ {
			long = append(long, 'a')
		}
	}
	long = append(long, 0, 0, 1, 0, 1) // 4*64+1 = 257 octets
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header only", hdr(0)[:11], ErrShort},
		{"no question", []byte{0, 1, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0}, ErrQDCount},
		{"two questions", cat([]byte{0, 1, 0x81, 0x80, 0, 2, 0, 0, 0, 0, 0, 0}, qExample, qExample), ErrQDCount},
		{"question cut", cat(hdr(0), qExample[:len(qExample)-1]), ErrShort},
		{"label runs past end", cat(hdr(0), []byte{9, 'a', 'b'}), ErrShort},
		{"self pointer", cat(hdr(0), []byte{0xC0, 12, 0, 1, 0, 1}), ErrPointer},
		{"forward pointer", cat(hdr(0), []byte{0xC0, 14, 0, 0, 1, 0, 1}), ErrPointer},
		{"pointer into header", cat(hdr(0), []byte{0xC0, 2, 0, 1, 0, 1}), ErrPointer},
		{"pointer loop via labels", cat(hdr(1), qExample, []byte{1, 'x', 0xC0, 33}, aHeader, []byte{0, 4, 1, 2, 3, 4}), ErrPointer},
		{"pointer cut", cat(hdr(0), []byte{0xC0}), ErrShort},
		{"name too long", long, ErrNameTooLong},
		{"label type 01", cat(hdr(0), []byte{0x41, 0, 0, 1, 0, 1}), ErrLabelType},
		{"label type 10", cat(hdr(0), []byte{0x81, 0, 0, 1, 0, 1}), ErrLabelType},
		{"answer header cut", cat(hdr(1), qExample, ptrQ, []byte{0, 1, 0, 1}), ErrShort},
		{"rdata past end", cat(hdr(1), qExample, ptrQ, aHeader, []byte{0, 4, 1, 2}), ErrShort},
		{"A with 5 octets", cat(hdr(1), qExample, ptrQ, aHeader, []byte{0, 5, 1, 2, 3, 4, 5}), ErrRDataLength},
		{"AAAA with 4 octets", cat(hdr(1), qExample, ptrQ, []byte{0, 28, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4}), ErrRDataLength},
		{"CNAME target shorter than rdata", cat(hdr(1), qExample, ptrQ, []byte{0, 5, 0, 1, 0, 0, 0, 60, 0, 3}, ptrQ, []byte{0}), ErrRDataLength},
		{"CNAME target longer than rdata", cat(hdr(1), qExample, ptrQ, []byte{0, 5, 0, 1, 0, 0, 0, 60, 0, 1}, ptrQ), ErrRDataLength},
		{"more answers than present", cat(hdr(2), qExample, ptrQ, aHeader, []byte{0, 4, 1, 2, 3, 4}), ErrShort},
		{"too many answers", cat(hdr(MaxAnswers+1), qExample), ErrTooMany},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse(tt.msg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want error %v", m, err, tt.want)
			}
			if m != nil {
				t.Errorf("partial result %+v with error", m)
			}
		})
	}
}

// Every proper prefix of a valid reply is an error, never a panic or a
// shorter message.
func TestParseEveryPrefix(t *testing.T) {
	b := reply(t, 1, "a.b.example.", dns.TypeA, "a.b.example. 5 IN CNAME c.example.", "c.example. 5 IN A 198.18.0.1")
	for i := 0; i < len(b); i++ {
		if m, err := Parse(b[:i]); err == nil {
			t.Fatalf("prefix of %d/%d bytes parsed: %+v", i, len(b), m)
		}
	}
	if _, err := Parse(b); err != nil {
		t.Fatal(err)
	}
}

// The pointer bound: 127 jumps are fine, the 128th is refused.
func TestParsePointerChain(t *testing.T) {
	// Build: question ".", then one TXT record (skipped) whose rdata is a
	// sequence of pointers, each to the previous, then an A record whose
	// owner is the last pointer.
	for _, tc := range []struct {
		jumps int
		ok    bool
	}{{1, true}, {maxPointers, true}, {maxPointers + 1, false}} {
		b := cat(hdr(2), []byte{0, 0, 1, 0, 1})
		b = append(b, 0, 0, 16, 0, 1, 0, 0, 0, 1) // owner ".", TXT, IN, TTL 1
		rdlen := 2 * (tc.jumps - 1)
		b = append(b, byte(rdlen>>8), byte(rdlen))
		prev := 12
		for i := 0; i < tc.jumps-1; i++ {
			off := len(b)
			b = append(b, 0xC0|byte(prev>>8), byte(prev))
			prev = off
		}
		b = append(b, 0xC0|byte(prev>>8), byte(prev))
		b = append(b, aHeader...)
		b = append(b, 0, 4, 198, 18, 0, 1)
		m, err := Parse(b)
		if tc.ok && err != nil {
			t.Errorf("%d jumps: %v", tc.jumps, err)
		}
		if !tc.ok && !errors.Is(err, ErrPointer) {
			t.Errorf("%d jumps: got %v, %v; want ErrPointer", tc.jumps, m, err)
		}
	}
}

func TestNormalizeName(t *testing.T) {
	for in, want := range map[string]string{"WWW.Afero.IO.": "www.afero.io", "a.b": "a.b", ".": ".", "": "."} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
