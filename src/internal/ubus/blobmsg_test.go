package ubus

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestBlobmsgRoundTrip(t *testing.T) {
	in := Table{
		{"nil", nil}, {"bin", []byte{1, 2, 3}}, {"b", uint8(1)}, {"i16", int16(-2)}, {"i32", int32(-3)},
		{"i64", int64(math.MinInt64)}, {"d", 2.5}, {"s", "héllo"}, {"empty", ""},
		{"arr", []any{int32(1), "x", []any{}, Table{}}}, {"tbl", Table{{"k", "v"}, {"k", "dup"}}},
		{"long-name-" + strings.Repeat("x", 300), int32(7)},
	}
	b, err := MarshalTable(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%4 != 0 {
		t.Errorf("encoded length %d not padded to 4", len(b))
	}
	out, err := UnmarshalTable(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n in %#v\nout %#v", in, out)
	}
	if v, _ := out.String("tbl"); v != "" {
		t.Error("String on a table")
	}
	if tb, _ := out.Table("tbl"); tb == nil {
		t.Error("no table")
	} else if s, _ := tb.String("k"); s != "v" {
		t.Errorf("first of duplicate names: %q", s)
	}
}

// Go conveniences map to the types blobmsg_add_json would choose.
func TestBlobmsgGoTypes(t *testing.T) {
	// An int past 32 bits becomes INT64 (on 32-bit targets int cannot be).
	wide, wideWant := int(math.MaxInt32), any(int32(math.MaxInt32))
	if strconv.IntSize == 64 {
		w := int64(1) << 40
		wide, wideWant = int(w), w
	}
	in := Table{{"t", true}, {"f", false}, {"small", 5}, {"big", wide}, {"neg", -1}, {"u", uint(wide)},
		{"i8", int8(-1)}, {"u16", uint16(65535)}, {"u32", uint32(0xffffffff)}, {"u64", uint64(1)},
		{"f32", float32(0.5)}, {"strs", []string{"a"}}, {"ints", []int{1}}, {"m", map[string]any{"z": 1, "a": 2}}}
	b, err := MarshalTable(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := UnmarshalTable(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Table{{"t", uint8(1)}, {"f", uint8(0)}, {"small", int32(5)}, {"big", wideWant}, {"neg", int32(-1)},
		{"u", wideWant}, {"i8", uint8(0xff)}, {"u16", int16(-1)}, {"u32", int32(-1)}, {"u64", int64(1)},
		{"f32", 0.5}, {"strs", []any{"a"}}, {"ints", []any{int32(1)}}, {"m", Table{{"a", int32(2)}, {"z", int32(1)}}}}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("got  %#v\nwant %#v", out, want)
	}
	if n, ok := out.Int("u16"); !ok || n != -1 {
		t.Errorf("Int(u16) = %d %v", n, ok)
	}
	if bv, ok := out.Bool("t"); !ok || !bv {
		t.Error("Bool(t)")
	}
	for _, bad := range []Table{{{"x", struct{}{}}}, {{"x", "a\x00b"}}, {{"a\x00", 1}}, {{strings.Repeat("n", 70000), 1}}} {
		if _, err := MarshalTable(bad); err == nil {
			t.Errorf("encoded %q", bad)
		}
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Arrays may hold members without a name header (blobmsg_check_attr with
// name=false); tables may not.
func TestBlobmsgArrayWithoutNames(t *testing.T) {
	// table "a" (name header 4 bytes) holding an array of two plain INT32.
	b := mustHex(t, "81000018 0001 6100  05000008 00000007 05000008 fffffffe")
	got, err := UnmarshalTable(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Table{{"a", []any{int32(7), int32(-2)}}}); !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v", got)
	}
}

func TestBlobmsgDecodeErrors(t *testing.T) {
	deep := []byte{}
	for i := 0; i < 70; i++ {
		deep = append(mustHex(t, "81000000 0000 0000"), deep...)
	}
	// Fix up the nested lengths from the inside out.
	for i := 69; i >= 0; i-- {
		off := i * 8
		n := len(deep) - off
		deep[off+1], deep[off+2], deep[off+3] = byte(n>>16), byte(n>>8), byte(n)
	}
	cases := []struct {
		name, hex string
		raw       []byte
		want      string
	}{
		{"short header", "830000", nil, "too short for an attribute header"},
		{"length below header", "83000002", nil, "shorter than its header"},
		{"length past end", "8300000c 00016100 00", nil, "exceeds the"},
		{"no name header", "0500000800000001", nil, "table member without a name header"},
		{"name too long", "8500000c 00ff6100 00000001", nil, "name header"},
		{"name without NUL", "8500000c 00016162 00000001", nil, "not NUL-terminated"},
		{"int32 width", "8500000a 00016100 0001 0000", nil, "int32 value of 2 bytes, want 4"},
		{"int8 width", "87000009 00016100 00 000000", nil, ""}, // fine: 1 byte
		{"string without NUL", "8300000a 00016100 6162 0000", nil, "string is not NUL-terminated"},
		{"string inner NUL", "8300000c 00016100 61006200", nil, "NUL byte before its end"},
		{"unknown type", "89000008 00016100", nil, "unknown blobmsg type 9"},
		{"double width", "8800000c 00016100 00000000", nil, "double value of 4 bytes"},
		{"too deep", "", deep, "nesting deeper than"},
	}
	for _, tc := range cases {
		b := tc.raw
		if b == nil {
			b = mustHex(t, tc.hex)
		}
		_, err := UnmarshalTable(b)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestMessageLimits(t *testing.T) {
	big := Table{{"blob", strings.Repeat("x", MaxMsgLen)}}
	m := &Message{Type: MsgInvoke, Attrs: []Attr{{AttrObjID, uint32(5)}, {AttrData, big}}}
	if _, err := m.Marshal(); err == nil || !strings.Contains(err.Error(), "exceeds the ubus limit") {
		t.Errorf("oversized message: %v", err)
	}
	// A header announcing 2 MiB is refused before its body is read.
	hdr := mustHex(t, "00050001 00000001 00200000")
	r := bytes.NewReader(append(hdr, make([]byte, 64)...))
	if _, err := ReadFrame(r); err == nil || !strings.Contains(err.Error(), "exceeds the limit") {
		t.Errorf("oversized frame: %v", err)
	}
	if r.Len() != 64 {
		t.Errorf("read %d body bytes of an oversized frame", 64-r.Len())
	}
	for name, h := range map[string]string{
		"version":   "01000000 00000000 00000004",
		"short":     "00000000 00000000 00000003",
		"truncated": "00000000 00000000 00000010 0200",
	} {
		if _, err := ReadMessage(bytes.NewReader(mustHex(t, h))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	var me *MalformedError
	_, err := ParseMessage(mustHex(t, "00000000 00000000 00000008 83000004"))
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "extended bit") {
		t.Errorf("extended message attribute: %v", err)
	}
	_, err = ParseMessage(mustHex(t, "00000000 00000000 0000000c 01000006 0000 0000"))
	if !errors.As(err, &me) || !strings.Contains(err.Error(), "STATUS: int32 of 2 bytes") {
		t.Errorf("short STATUS: %v", err)
	}
	if _, err := ParseMessage(mustHex(t, "00000000 00000000 00000004 00")); err == nil {
		t.Error("trailing byte accepted")
	}
}

// FormatJSON prints what blobmsg_format_json and `ubus call` print.
func TestFormatJSON(t *testing.T) {
	v := Table{{"args", Table{{"value", "hi"}, {"n", int64(12345678901)}, {"f", uint8(1)}}},
		{"list", []any{int16(-1), 1.5, nil, "q\"\n\x01"}}, {"e", Table{}}}
	got, err := FormatJSON(v, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n\t\"args\": {\n\t\t\"value\": \"hi\",\n\t\t\"n\": 12345678901,\n\t\t\"f\": true\n\t},\n" +
		"\t\"list\": [\n\t\t-1,\n\t\t1.500000,\n\t\tnull,\n\t\t\"q\\\"\\n\\u0001\"\n\t],\n\t\"e\": {\n\t\t\n\t}\n}"
	if string(got) != want {
		t.Errorf("indented:\n%s\nwant\n%s", got, want)
	}
	got, _ = FormatJSON(Table{{"a", int32(1)}, {"b", []any{uint8(0)}}}, false)
	if string(got) != `{"a":1,"b":[false]}` {
		t.Errorf("compact: %s", got)
	}
}

func TestFromJSON(t *testing.T) {
	got, err := FromJSON([]byte(`{"b":1,"a":[true,2147483648,-2147483648,1.0,null,"s"],"t":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Table{{"b", int32(1)}, {"a", []any{uint8(1), int64(2147483648), int32(-2147483648), 1.0, nil, "s"}}, {"t", Table{}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v", got)
	}
	for _, bad := range []string{`[1]`, `{"a":1} {}`, `{"a":`, `{"a":"x\u0000"}`, `{"a":99999999999999999999}`, ``} {
		if _, err := FromJSON([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
