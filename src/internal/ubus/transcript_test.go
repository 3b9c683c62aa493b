package ubus

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// transcriptLine is one message of testdata/transcript.jsonl, captured
// between the stock ubusd and its clients (see ../shared/testdata/README.md).
type transcriptLine struct {
	Conn  int             `json:"conn"`
	Dir   string          `json:"dir"` // "c>s" or "s>c"
	Type  string          `json:"type"`
	Seq   uint16          `json:"seq"`
	Peer  uint32          `json:"peer"`
	Attrs json.RawMessage `json:"attrs"`
	Hex   string          `json:"hex"`
	Bytes []byte          `json:"-"`
	N     int             `json:"-"` // line number
}

func loadTranscript(t testing.TB) []transcriptLine {
	t.Helper()
	f, err := os.Open("testdata/transcript.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []transcriptLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		var l transcriptLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("transcript line %d: %v", n, err)
		}
		if l.Bytes, err = hex.DecodeString(l.Hex); err != nil {
			t.Fatalf("transcript line %d: hex: %v", n, err)
		}
		l.N = n
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("empty transcript")
	}
	return out
}

// messageFromTranscript builds the Message a line describes, from its
// decoded fields only (never from its bytes).
func messageFromTranscript(t testing.TB, l transcriptLine) *Message {
	t.Helper()
	m := &Message{Seq: l.Seq, Peer: l.Peer}
	found := false
	for i, name := range msgNames {
		if name == l.Type {
			m.Type, found = MsgType(i), true
		}
	}
	if !found {
		t.Fatalf("line %d: unknown type %q", l.N, l.Type)
	}
	d := json.NewDecoder(bytes.NewReader(l.Attrs))
	d.UseNumber()
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("line %d: attrs: %v %v", l.N, tok, err)
	}
	for d.More() {
		tok, _ := d.Token()
		key := tok.(string)
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			t.Fatalf("line %d: attr %s: %v", l.N, key, err)
		}
		id := AttrID(0)
		for i, n := range attrNames {
			if n == key {
				id = AttrID(i)
			}
		}
		var v any
		switch kindOf(id) {
		case kindU32:
			var n uint32
			if err := json.Unmarshal(raw, &n); err != nil {
				t.Fatalf("line %d: %s: %v", l.N, key, err)
			}
			v = n
		case kindString:
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				t.Fatalf("line %d: %s: %v", l.N, key, err)
			}
			if id == AttrUser || id == AttrGroup { // hex of the raw payload
				b, err := hex.DecodeString(s)
				if err != nil || len(b) == 0 || b[len(b)-1] != 0 {
					t.Fatalf("line %d: %s: bad hex %q", l.N, key, s)
				}
				s = string(b[:len(b)-1])
			}
			v = s
		case kindTable:
			v = transcriptTable(t, raw)
		default:
			t.Fatalf("line %d: attr %s not handled by the test", l.N, key)
		}
		m.Attrs = append(m.Attrs, Attr{id, v})
	}
	return m
}

// transcriptTable converts a transcript blobmsg object: JSON as
// blobmsg_add_json reads it, except that {"int8": n} stands for an INT8.
func transcriptTable(t testing.TB, raw []byte) Table {
	t.Helper()
	tbl, err := FromJSON(raw)
	if err != nil {
		t.Fatalf("transcript table %s: %v", raw, err)
	}
	return fixInt8(tbl).(Table)
}

func fixInt8(v any) any {
	switch x := v.(type) {
	case Table:
		if len(x) == 1 && x[0].Name == "int8" {
			if n, ok := x[0].Value.(int32); ok {
				return uint8(n)
			}
		}
		out := Table{}
		for _, f := range x {
			out = append(out, Field{f.Name, fixInt8(f.Value)})
		}
		return out
	case []any:
		out := []any{}
		for _, e := range x {
			out = append(out, fixInt8(e))
		}
		return out
	}
	return v
}

// TestTranscriptEncode: the encoder produces exactly the captured bytes of
// every message, client and server side, from its decoded content.
func TestTranscriptEncode(t *testing.T) {
	for _, l := range loadTranscript(t) {
		m := messageFromTranscript(t, l)
		got, err := m.Marshal()
		if err != nil {
			t.Errorf("line %d (%s %s): %v", l.N, l.Dir, l.Type, err)
			continue
		}
		if !bytes.Equal(got, l.Bytes) {
			t.Errorf("line %d (%s %s):\n got %x\nwant %x", l.N, l.Dir, l.Type, got, l.Bytes)
		}
	}
}

// TestTranscriptDecode: the decoder reads every captured message into the
// same header, attributes, order and value types.
func TestTranscriptDecode(t *testing.T) {
	for _, l := range loadTranscript(t) {
		got, err := ParseMessage(l.Bytes)
		if err != nil {
			t.Errorf("line %d (%s %s): %v", l.N, l.Dir, l.Type, err)
			continue
		}
		want := messageFromTranscript(t, l)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("line %d (%s %s):\n got %s\nwant %s", l.N, l.Dir, l.Type, dump(got), dump(want))
		}
		// Reading it from a stream gives the same.
		got2, err := ReadMessage(bytes.NewReader(l.Bytes))
		if err != nil || !reflect.DeepEqual(got2, want) {
			t.Errorf("line %d: ReadMessage: %v %s", l.N, err, dump(got2))
		}
	}
}

func dump(m *Message) string {
	if m == nil {
		return "<nil>"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s seq=%d peer=%d", m.Type, m.Seq, m.Peer)
	for _, a := range m.Attrs {
		fmt.Fprintf(&b, " %s=%#v", a.ID, a.Value)
	}
	return b.String()
}
