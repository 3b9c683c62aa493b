package ctnl

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

var (
	tuple4 = Tuple{Src: netip.MustParseAddr("198.19.0.1"), Dst: netip.MustParseAddr("198.18.10.2"), Proto: unix.IPPROTO_TCP, SrcPort: 443, DstPort: 40000}
	tuple6 = Tuple{Src: netip.MustParseAddr("2001:db8:ff::1"), Dst: netip.MustParseAddr("2001:db8:1::2"), Proto: unix.IPPROTO_TCP, SrcPort: 443, DstPort: 40000}
)

// answer is the request for t as the kernel's answer would carry it: an
// entry (IPCTNL_MSG_CT_NEW) whose reply tuple is t.
func answer(t *testing.T, tu Tuple, seq uint32) []byte {
	attrs, family, err := tupleAttr(ctaTupleReply, tu)
	if err != nil {
		t.Fatal(err)
	}
	return request(msgNew, unix.NLM_F_MULTI, seq, family, attrs)
}

// A request parses back to the tuple it asked for, in both families.
func TestRequestParses(t *testing.T) {
	for _, tu := range []Tuple{tuple4, tuple6} {
		var got []Entry
		done, err := walkMessages(answer(t, tu, 9), 9, true, func(typ uint16, p []byte) error {
			e, err := parseEntry(p)
			got = append(got, e)
			return err
		})
		if err != nil || !done || len(got) != 1 || got[0].Reply != tu {
			t.Fatalf("parsed %+v done %v err %v, want reply tuple %+v", got, done, err, tu)
		}
	}
}

// An answer to an earlier request (it timed out) is skipped; an error
// answer ends the wait with its errno; the end of a dump ends it.
func TestAnswerMatching(t *testing.T) {
	late := answer(t, tuple4, 3)
	errMsg := func(seq uint32, errno unix.Errno) []byte {
		b := make([]byte, unix.NLMSG_HDRLEN+4)
		binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
		binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_ERROR)
		binary.NativeEndian.PutUint32(b[8:], seq)
		binary.NativeEndian.PutUint32(b[16:], uint32(-int32(errno)))
		return b
	}
	var n int
	count := func(uint16, []byte) error { n++; return nil }
	done, err := walkMessages(append(late, answer(t, tuple6, 4)...), 4, true, count)
	if !done || err != nil || n != 1 {
		t.Fatalf("late answer then ours: done %v err %v, %d messages taken, want 1", done, err, n)
	}
	n = 0
	if done, err := walkMessages(append(late, errMsg(4, unix.ENOENT)...), 4, true, count); !done || err != unix.ENOENT || n != 0 {
		t.Fatalf("error answer: done %v err %v n %d", done, err, n)
	}
	// A dump: two entries, then the end in the next read.
	dump := append(answer(t, tuple4, 5), answer(t, tuple6, 5)...)
	if done, err := walkMessages(dump, 5, false, count); done || err != nil || n != 2 {
		t.Fatalf("dump part: done %v err %v n %d", done, err, n)
	}
	end := errMsg(5, 0)
	binary.NativeEndian.PutUint16(end[4:], unix.NLMSG_DONE)
	if done, err := walkMessages(end, 5, false, count); !done || err != nil {
		t.Fatalf("dump end: done %v err %v", done, err)
	}
	if _, _, err := tupleAttr(ctaTupleReply, Tuple{Src: netip.MustParseAddr("::ffff:198.19.0.1"), Dst: netip.MustParseAddr("2001:db8::1")}); err == nil {
		t.Fatal("IPv4-mapped source in an IPv6 tuple")
	}
}

// FuzzParse feeds arbitrary bytes to the answer parser: it must never
// panic, and what it reads of tuples is of one family per address.
func FuzzParse(f *testing.F) {
	for _, tu := range []Tuple{tuple4, tuple6} {
		attrs, family, _ := tupleAttr(ctaTupleReply, tu)
		f.Add(request(msgNew, unix.NLM_F_MULTI, 7, family, attrs))
	}
	f.Add([]byte{20, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 254, 255, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		walkMessages(b, 7, false, func(typ uint16, p []byte) error {
			e, err := parseEntry(p)
			if err == nil {
				for _, a := range []netip.Addr{e.Orig.Src, e.Orig.Dst, e.Reply.Src, e.Reply.Dst} {
					if a.IsValid() && a.BitLen() != 32 && a.BitLen() != 128 {
						t.Fatalf("address %v", a)
					}
				}
			}
			return err
		})
	})
}
