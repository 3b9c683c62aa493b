package ubus

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"testing"
)

// Hand-made hostile seeds: lengths below the header, past the end, huge
// name lengths, strings without NUL, wrong integer widths, deep nesting.
var hostileSeeds = []string{
	"",
	"00",
	"000000000000000000000003", // blob shorter than its header
	"0000000000000000ffffffff", // 16 MiB announced
	"0000000000000000000000100100000500000000",           // truncated
	"00000000000000000000000c0100000500000000",           // STATUS of 1 byte too few
	"000200010000000000000010020000066869",               // OBJPATH without NUL
	"0005000100000001000000140700000c8500000c00ffff00",   // name length 65535
	"00050001000000010000001407000010830000080004616263", // string short
}

func addMessageSeeds(f *testing.F) {
	for _, l := range loadTranscript(f) {
		f.Add(l.Bytes)
	}
	for _, s := range hostileSeeds {
		b, err := hex.DecodeString(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// 80 nested arrays inside a DATA attribute.
	var e encoder
	var nest func(int)
	nest = func(n int) {
		off := e.begin(uint8(TypeArray), true)
		_ = e.nameHeader("")
		if n > 0 {
			nest(n - 1)
		}
		_ = e.end(off)
	}
	nest(80)
	m := []byte{0, byte(MsgInvoke), 0, 1, 0, 0, 0, 1, 0, 0, 0, 0}
	m = append(m, byte(AttrData), 0, 0, 0)
	m = append(m, e.buf...)
	raw := len(m) - HeaderLen
	m[8], m[9], m[10], m[11] = 0, byte(raw>>16), byte(raw>>8), byte(raw)
	inner := len(e.buf) + 4
	m[12], m[13], m[14], m[15] = byte(AttrData), byte(inner>>16), byte(inner>>8), byte(inner)
	f.Add(m)
}

// FuzzDecode: ParseMessage and ReadMessage never panic; what they accept
// encodes back to bytes that decode to the same message.
func FuzzDecode(f *testing.F) {
	addMessageSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		m2, err2 := ReadMessage(bytes.NewReader(b))
		if err == nil && err2 != nil {
			t.Fatalf("ParseMessage accepted what ReadMessage refused: %v", err2)
		}
		if err != nil {
			var me *MalformedError
			if errors.As(err, &me) && me.Error() == "" {
				t.Fatal("empty error text")
			}
			return
		}
		// Compared as bytes: a NaN double is not DeepEqual to itself.
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("re-encode %v: %v", m, err)
		}
		if outR, _ := m2.Marshal(); !bytes.Equal(out, outR) {
			t.Fatalf("ParseMessage %v != ReadMessage %v", m, m2)
		}
		back, err := ParseMessage(out)
		if err != nil {
			t.Fatalf("decode of re-encoded %x: %v", out, err)
		}
		if back.Type != m.Type || back.Seq != m.Seq || back.Peer != m.Peer || len(back.Attrs) != len(m.Attrs) {
			t.Fatalf("round trip changed the message:\n%v\n%v", dump(m), dump(back))
		}
		if out2, _ := back.Marshal(); !bytes.Equal(out, out2) {
			t.Fatalf("round trip changed the encoding:\n%x\n%x", out, out2)
		}
	})
}

// FuzzBlobmsg: UnmarshalTable never panics; accepted tables survive an
// encode/decode round trip and format as JSON.
func FuzzBlobmsg(f *testing.F) {
	for _, l := range loadTranscript(f) {
		if m, err := ParseMessage(l.Bytes); err == nil {
			for _, a := range m.Attrs {
				if t, ok := a.Value.(Table); ok {
					b, _ := MarshalTable(t)
					f.Add(b)
				}
			}
		}
	}
	f.Add([]byte{0x83, 0, 0, 0x0c, 0, 1, 'a', 0, 'b', 0, 0, 0})
	f.Add([]byte{0x83, 0, 0, 0x0b, 0, 1, 'a', 0, 'b', 0, 0})
	f.Add([]byte{0x05, 0, 0, 0x08, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		tbl, err := UnmarshalTable(b)
		if err != nil {
			return
		}
		if _, err := FormatJSON(tbl, true); err != nil {
			t.Fatalf("format %#v: %v", tbl, err)
		}
		out, err := MarshalTable(tbl)
		if err != nil {
			t.Fatalf("re-encode %#v: %v", tbl, err)
		}
		back, err := UnmarshalTable(out)
		if err != nil {
			t.Fatalf("decode of re-encoded %x: %v", out, err)
		}
		if out2, _ := MarshalTable(back); !bytes.Equal(out, out2) || len(back) != len(tbl) {
			t.Fatalf("round trip changed the table:\n%#v\n%#v", tbl, back)
		}
	})
}

// FuzzFromJSON: the JSON reader of the CLI never panics, and what it
// accepts encodes as blobmsg.
func FuzzFromJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"id":65008}`, `{"a":[1,2.5,"x",true,null,{"b":-1}]}`,
		`{"h":12345678901}`, `{"big":99999999999999999999}`, `[1]`, `{"a":1}x`, `{"a":`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tbl, err := FromJSON(b)
		if err != nil {
			return
		}
		out, err := MarshalTable(tbl)
		if err != nil {
			t.Fatalf("encode %#v: %v", tbl, err)
		}
		back, err := UnmarshalTable(out)
		if err != nil || !reflect.DeepEqual(tbl, back) {
			t.Fatalf("round trip: %v\n%#v\n%#v", err, tbl, back)
		}
	})
}
