package capture

import (
	"net/netip"
	"testing"
	"time"
)

// A segment reported unanswered is not reported again for RepeatQuiet (its
// retransmissions), while other connections' and the same connection's next
// segment (a new sequence number) are, and it is again afterwards.
func TestSentRepeatQuiet(t *testing.T) {
	s := &Sent{reported: map[segment]time.Time{}}
	at := time.Unix(1000, 0)
	a := segment{tuple{src: netip.MustParseAddr("198.18.1.2"), dst: netip.MustParseAddr("198.19.9.9"), srcPort: 40000, dstPort: 443}, 7}
	b := a
	b.t.srcPort = 40001
	next := a
	next.seq = 8
	s.reported[a] = at
	for _, c := range []struct {
		p     segment
		after time.Duration
		want  bool
	}{
		{a, time.Second, true}, {a, 63 * time.Second, true}, {b, time.Second, false}, {next, time.Second, false},
		{a, RepeatQuiet, false}, {a, RepeatQuiet + time.Minute, false},
	} {
		if got := s.repeated(c.p, at.Add(c.after)); got != c.want {
			t.Errorf("%+v +%v: repeated %v, want %v", c.p, c.after, got, c.want)
		}
	}
	// Old entries go once the table is big.
	for i := range 70 {
		s.reported[segment{seq: uint32(i)}] = at
	}
	s.repeated(b, at.Add(RepeatQuiet))
	if len(s.reported) != 0 {
		t.Errorf("%d stale entries kept", len(s.reported))
	}
}
