package daemon

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/afero/af-conn/internal/ubus"
)

// fill sets every field reachable from v to a value that is not zero (n makes them differ),
// so that a field added to Status later is covered here without naming it.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString("s" + string(rune('a'+*n%26)))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float32, reflect.Float64:
		v.SetFloat(float64(*n) + 0.25)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), n)
			}
		}
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		fill(s.Index(0), n)
		fill(s.Index(1), n)
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		for _, k := range []string{"zeta", "alpha"} {
			e := reflect.New(v.Type().Elem()).Elem()
			fill(e, n)
			m.SetMapIndex(reflect.ValueOf(k), e)
		}
		v.Set(m)
	}
}

// TestStatusTableAsJSON: StatusTable (ubus.Marshal) answers the document that encoding/json
// and `ubus call`'s JSON reading made of Status before, for every field of Status, and
// `connmgr status` (ubus.Unmarshal) reads it back whole.
func TestStatusTableAsJSON(t *testing.T) {
	var full Status
	n := 0
	fill(reflect.ValueOf(&full).Elem(), &n)
	for _, st := range []Status{{}, {NetworkType: -1, Firewall: FirewallStatus{Mode: "disabled"}}, full} {
		got, err := StatusTable(st)
		if err != nil {
			t.Fatal(err)
		}
		if st.Uplinks == nil {
			st.Uplinks = []UplinkStatus{}
		}
		j, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ubus.FromJSON(j)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("StatusTable:\n%#v\nthrough JSON:\n%#v", got, want)
		}
		var back Status
		if err := ubus.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, st) {
			t.Errorf("read back:\n%+v\nwant\n%+v", back, st)
		}
	}
}
