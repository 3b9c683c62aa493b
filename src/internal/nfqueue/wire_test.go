package nfqueue

import (
	"bytes"
	"encoding/binary"
	"errors"
	"syscall"
	"testing"
)

// packetMsg builds a NFQNL_MSG_PACKET as the kernel sends it.
func packetMsg(id uint32, hook uint8, indev uint32, payload []byte) []byte {
	m := newMessage(msgPacket, 0, 0, 5)
	hdr := binary.BigEndian.AppendUint32(nil, id)
	hdr = binary.BigEndian.AppendUint16(hdr, 0x0800)
	m.attr(attrPacketHdr, append(hdr, hook))
	m.attr(attrIfIndexIn, be32(indev))
	m.attr(attrSkbInfo, be32(SkbCsumNotReady))
	m.attr(attrPayload|0x4000, payload) // NLA_F_NET_BYTEORDER is masked off
	return m.bytes()
}

func errMsg(seq uint32, errno int32) []byte {
	b := make([]byte, nlmsgHdrLen+4+nlmsgHdrLen)
	native.PutUint32(b[0:], uint32(len(b)))
	native.PutUint16(b[4:], nlmsgError)
	native.PutUint32(b[8:], seq)
	native.PutUint32(b[nlmsgHdrLen:], uint32(errno))
	return b
}

func TestParseMessages(t *testing.T) {
	payload := []byte{0x45, 0, 0, 20, 1, 2, 3} // odd length: padding follows
	b := append(packetMsg(42, HookPreRouting, 7, payload), errMsg(9, 0)...)
	b = append(b, errMsg(0, -int32(syscall.ENOENT))...)
	items, err := parseMessages(b, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 3 {
		t.Fatalf("%d items", len(items))
	}
	p := items[0].pkt
	if !items[0].packet || p.ID != 42 || p.Hook != HookPreRouting || p.InDev != 7 || p.HWProto != 0x0800 ||
		p.SkbInfo != SkbCsumNotReady || !bytes.Equal(p.Payload, payload) {
		t.Errorf("packet %+v", p)
	}
	if !items[1].ack || items[1].seq != 9 || items[1].errno != 0 {
		t.Errorf("ack %+v", items[1])
	}
	if !items[2].ack || items[2].errno != syscall.ENOENT {
		t.Errorf("error %+v", items[2])
	}
}

func TestParseMessagesMalformed(t *testing.T) {
	good := packetMsg(1, 0, 1, []byte{1, 2, 3, 4})
	noHdr := newMessage(msgPacket, 0, 0, 5)
	noHdr.attr(attrPayload, []byte{1})
	shortHdr := newMessage(msgPacket, 0, 0, 5)
	shortHdr.attr(attrPacketHdr, []byte{0, 0, 0, 1})
	tests := map[string][]byte{
		"short header":        good[:10],
		"length past end":     good[:len(good)-4],
		"length below header": func() []byte { b := append([]byte{}, good...); native.PutUint32(b, 8); return b }(),
		"attr past end": func() []byte {
			b := append([]byte{}, good...)
			native.PutUint16(b[nlmsgHdrLen+nfgenHdrLen:], 200)
			return b
		}(),
		"no packet header":    noHdr.bytes(),
		"short packet header": shortHdr.bytes(),
		"short error":         errMsg(1, 0)[:nlmsgHdrLen+2],
	}
	for name, b := range tests {
		if name == "short error" {
			native.PutUint32(b, uint32(len(b)))
		}
		if _, err := parseMessages(b, nil); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestConfigMessage(t *testing.T) {
	b := configMessage(3, 0x102, cmdBind, Config{MaxLen: 64, FailOpen: true, GSO: true})
	if int(native.Uint32(b)) != len(b) || native.Uint16(b[4:]) != subsysQueue<<8|msgConfig ||
		native.Uint16(b[6:]) != nlmFRequest|nlmFAck || native.Uint32(b[8:]) != 3 {
		t.Fatalf("header % x", b[:16])
	}
	if binary.BigEndian.Uint16(b[nlmsgHdrLen+2:]) != 0x102 {
		t.Fatalf("res_id % x", b[16:20])
	}
	want := [][]byte{
		{8, 0, cfgCmd, 0, cmdBind, 0, 0, 0},
		{9, 0, cfgParams, 0, 0, 0, 0xff, 0xff, copyPacket, 0, 0, 0},
		{8, 0, cfgMaxLen, 0, 0, 0, 0, 64},
		{8, 0, cfgMask, 0, 0, 0, 0, 5},
		{8, 0, cfgFlags, 0, 0, 0, 0, 5},
	}
	attrs := b[20:]
	for _, w := range want {
		if !bytes.HasPrefix(attrs, w) {
			t.Fatalf("attrs % x, want prefix % x", attrs, w)
		}
		attrs = attrs[len(w):]
	}
	if len(attrs) != 0 {
		t.Fatalf("trailing % x", attrs)
	}
	v := verdictMessage(9, 77, Accept, true)
	if native.Uint16(v[4:]) != subsysQueue<<8|msgVerdictBatch || !bytes.Equal(v[20:], []byte{12, 0, attrVerdictHdr, 0, 0, 0, 0, 1, 0, 0, 0, 77}) {
		t.Fatalf("verdict % x", v)
	}
}

func FuzzParseMessages(f *testing.F) {
	f.Add(packetMsg(1, 0, 1, []byte{0x45, 0, 0, 20}))
	f.Add(append(errMsg(1, -1), packetMsg(2, 1, 0, nil)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		items, _ := parseMessages(b, nil)
		for _, it := range items {
			if it.packet && len(it.pkt.Payload) > len(b) {
				t.Fatal("payload larger than input")
			}
		}
	})
}
