package ubus

import (
	"encoding/json"
	"math"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

type marshalInner struct {
	Name  string  `json:"name"`
	Ratio float64 `json:"ratio,omitempty"`
}

type marshalProbe struct {
	S      string            `json:"s"`
	SOmit  string            `json:"s_omit,omitempty"`
	I      int               `json:"i"`
	I64    int64             `json:"i64"`
	U64    uint64            `json:"u64"`
	F      float64           `json:"f"`
	FOmit  float64           `json:"f_omit,omitempty"`
	B      bool              `json:"b"`
	BOmit  bool              `json:"b_omit,omitempty"`
	NoTag  int               // named by the Go name
	Skip   int               `json:"-"`
	hidden int               //nolint:unused // unexported: left out
	Inner  marshalInner      `json:"inner"`
	List   []marshalInner    `json:"list"`
	Ints   []int             `json:"ints,omitempty"`
	M      map[string]uint64 `json:"m"`
	MOmit  map[string]uint64 `json:"m_omit,omitempty"`
	P      *marshalInner     `json:"p"`
	POmit  *marshalInner     `json:"p_omit,omitempty"`
	Addr   netip.Addr        `json:"addr"`
	Pfx    []netip.Prefix    `json:"pfx"`
}

// viaJSON is what Marshal replaces: encoding/json, read back as `ubus call` reads JSON.
func viaJSON(v any) (Table, error) {
	j, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return FromJSON(j)
}

func checkMarshal(t *testing.T, v marshalProbe) {
	t.Helper()
	want, wantErr := viaJSON(v)
	got, err := Marshal(v)
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("%+v: Marshal error %v, through JSON %v", v, err, wantErr)
	}
	if err == nil && !reflect.DeepEqual(got, want) {
		t.Fatalf("%+v:\nMarshal       %#v\nthrough JSON  %#v", v, got, want)
	}
	if err != nil {
		return
	}
	var back marshalProbe
	if err := Unmarshal(got, &back); err != nil {
		t.Fatalf("Unmarshal of %#v: %v", got, err)
	}
	var viaStd marshalProbe
	j, _ := FormatJSON(got, false)
	if err := json.Unmarshal(j, &viaStd); err != nil {
		return // FormatJSON drops an empty member name ("" map key): no reference to compare with
	}
	// The JSON path rounded floats to the six decimals FormatJSON prints; Unmarshal keeps
	// them whole.
	roundFloats(reflect.ValueOf(&back).Elem())
	if !reflect.DeepEqual(back, viaStd) {
		t.Fatalf("Unmarshal      %+v\njson.Unmarshal %+v", back, viaStd)
	}
}

func roundFloats(v reflect.Value) {
	switch v.Kind() {
	case reflect.Float64:
		x, _ := strconv.ParseFloat(strconv.FormatFloat(v.Float(), 'f', 6, 64), 64)
		v.SetFloat(x)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				roundFloats(v.Field(i))
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			roundFloats(v.Index(i))
		}
	case reflect.Pointer:
		if !v.IsNil() {
			roundFloats(v.Elem())
		}
	}
}

func TestMarshalMatchesJSON(t *testing.T) {
	full := marshalProbe{S: "a<b>&c\u2028", SOmit: "x", I: -3, I64: math.MaxInt32 + 1, U64: math.MaxInt64, F: 1.5,
		FOmit: 2, B: true, BOmit: true, NoTag: 7, Skip: 9, hidden: 1, Inner: marshalInner{"in", 0.25},
		List: []marshalInner{{"a", 3}, {"b", 0}}, Ints: []int{1, -1 << 40}, M: map[string]uint64{"z": 1, "a": 2, "m": 0},
		MOmit: map[string]uint64{"k": 5}, P: &marshalInner{Name: "p"}, POmit: &marshalInner{},
		Addr: netip.MustParseAddr("2001:db8::1"), Pfx: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15"), {}}}
	checkMarshal(t, marshalProbe{})
	checkMarshal(t, full)
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1, 2.5, 1e20, 1e21, 1e-7, 123456.789, 1 << 62, math.MaxInt64, -1e300, math.SmallestNonzeroFloat64} {
		v := full
		v.F, v.FOmit, v.Inner.Ratio = f, f, f
		checkMarshal(t, v)
	}
	for _, s := range []string{"", "plain", "\xff\xfe bad", "caf\xc3", "tab\there\nnl", "\U0001F600"} {
		v := full
		v.S, v.M = s, map[string]uint64{s: 1}
		checkMarshal(t, v)
	}
	v := full
	v.List, v.M, v.P = []marshalInner{}, map[string]uint64{}, nil
	checkMarshal(t, v)

	// What JSON cannot carry back is an error either way.
	for _, bad := range []marshalProbe{{S: "nul\x00"}, {U64: math.MaxInt64 + 1}, {F: math.NaN()}, {F: math.Inf(1)}, {F: 1e19}} {
		if _, err := Marshal(bad); err == nil {
			t.Errorf("Marshal(%+v): no error", bad)
		}
		if _, err := viaJSON(bad); err == nil {
			t.Errorf("through JSON (%+v): no error", bad)
		}
	}
}

func TestUnmarshalErrors(t *testing.T) {
	var v marshalProbe
	for _, tc := range []struct {
		t    Table
		want string
	}{
		{Table{{"s", int32(1)}}, "marshalProbe.s: int32 does not fit string"},
		{Table{{"i", uint8(1)}}, "marshalProbe.i: uint8 does not fit int"},
		{Table{{"i", 1.5}}, "marshalProbe.i: float64 does not fit int"},
		{Table{{"u64", int32(-1)}}, "marshalProbe.u64"},
		{Table{{"inner", "x"}}, "marshalProbe.inner"},
		{Table{{"list", []any{Table{{"name", true}}}}}, "marshalProbe.list[0].name"},
		{Table{{"m", Table{{"k", "v"}}}}, "marshalProbe.m.k"},
		{Table{{"addr", "198.18.0.300"}}, "marshalProbe.addr"},
		{Table{{"addr", int32(1)}}, "marshalProbe.addr"},
	} {
		if err := Unmarshal(tc.t, &v); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Unmarshal(%v): %v, want an error naming %q", tc.t, err, tc.want)
		}
	}
	if err := Unmarshal(Table{{"unknown", int32(1)}, {"s", nil}}, &v); err != nil {
		t.Errorf("unknown members and null: %v, want them ignored", err)
	}
	if err := Unmarshal(nil, v); err == nil {
		t.Error("Unmarshal into a non-pointer: no error")
	}
}

// FuzzMarshal: for any strings and numbers, Marshal gives what encoding/json and FromJSON
// give, and Unmarshal reads it back as json.Unmarshal would.
func FuzzMarshal(f *testing.F) {
	f.Add("s", "key", int64(1), uint64(2), 1.5)
	f.Add("\xff", "", int64(-1<<40), uint64(1<<63), 1e21)
	f.Fuzz(func(t *testing.T, s, key string, i int64, u uint64, x float64) {
		v := marshalProbe{S: s, SOmit: key, I64: i, U64: u, F: x, FOmit: -x, M: map[string]uint64{key: u, s: 1},
			List: []marshalInner{{Name: key, Ratio: x}}}
		checkMarshal(t, v)
	})
}

// FuzzUnmarshal: any table a ubus peer can send fills a struct or says what did not fit,
// never panics.
func FuzzUnmarshal(f *testing.F) {
	tbl, _ := Marshal(marshalProbe{S: "s", List: []marshalInner{{"n", 1.5}}, M: map[string]uint64{"a": 1}, P: &marshalInner{}})
	if b, err := MarshalTable(tbl); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tbl, err := UnmarshalTable(b)
		if err != nil {
			return
		}
		var v marshalProbe
		_ = Unmarshal(tbl, &v)
	})
}
