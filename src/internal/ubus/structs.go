package ubus

import (
	"fmt"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Marshal turns a struct into the Table that FromJSON would read from its encoding/json
// encoding, without going through JSON (encoding/json is about 150 kB of a mipsel binary):
// fields named by their json tags, omitempty and omitzero honoured, map keys sorted, integers int32 when
// they fit and int64 otherwise, integral floats as integers (JSON writes 2.0 as 2), other
// floats float64, booleans uint8, nil slices, maps and pointers null, netip.Addr,
// netip.Prefix and time.Time their text form. It supports the types
// a status is made of (no embedded structs, interfaces, arrays or []byte) and says which
// field it cannot encode.
func Marshal(v any) (Table, error) {
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer {
		rv = rv.Elem()
	}
	if rv.Kind() != reflect.Struct {
		return nil, fmt.Errorf("marshal %T: want a struct", v)
	}
	return marshalStruct(rv, rv.Type().Name())
}

// jsonField is a struct field's JSON name and omitempty and omitzero flags; ok is false for
// fields JSON leaves out (unexported, or tagged "-").
func jsonField(f reflect.StructField) (name string, omitEmpty, omitZero, ok bool) {
	if !f.IsExported() {
		return "", false, false, false
	}
	tag := f.Tag.Get("json")
	if tag == "-" {
		return "", false, false, false
	}
	name, opts, _ := strings.Cut(tag, ",")
	if name == "" {
		name = f.Name
	}
	for opts != "" {
		var o string
		o, opts, _ = strings.Cut(opts, ",")
		omitEmpty = omitEmpty || o == "omitempty"
		omitZero = omitZero || o == "omitzero"
	}
	return name, omitEmpty, omitZero, true
}

func marshalStruct(rv reflect.Value, path string) (Table, error) {
	t := Table{}
	rt := rv.Type()
	for i := 0; i < rt.NumField(); i++ {
		f := rt.Field(i)
		name, omitEmpty, omitZero, ok := jsonField(f)
		if !ok {
			continue
		}
		if f.Anonymous {
			return nil, fmt.Errorf("marshal %s.%s: embedded structs are not supported", path, f.Name)
		}
		fv := rv.Field(i)
		if omitEmpty && emptyValue(fv) || omitZero && zeroValue(fv) {
			continue
		}
		val, err := marshalValue(fv, path+"."+name)
		if err != nil {
			return nil, err
		}
		t = append(t, Field{name, val})
	}
	return t, nil
}

// emptyValue is encoding/json's test for omitempty.
func emptyValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Map, reflect.Slice, reflect.String, reflect.Array:
		return v.Len() == 0
	case reflect.Bool:
		return !v.Bool()
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return v.Int() == 0
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return v.Uint() == 0
	case reflect.Float32, reflect.Float64:
		return v.Float() == 0 // -0 too
	case reflect.Pointer, reflect.Interface:
		return v.IsNil()
	}
	return false
}

// zeroValue is encoding/json's test for omitzero: an IsZero method where the type has one
// (of the types Marshal knows: time.Time), else the zero value.
func zeroValue(v reflect.Value) bool {
	if v.CanInterface() {
		if t, ok := v.Interface().(time.Time); ok {
			return t.IsZero()
		}
	}
	return v.IsZero()
}

// addrText is an address's (or a time's) text form, as encoding/json writes it (ok false: not an address).
// The types are named rather than found through encoding.TextMarshaler: a dynamic call would
// keep every MarshalText method in the binary.
func addrText(v reflect.Value) (text []byte, ok bool, err error) {
	if !v.CanInterface() {
		return nil, false, nil
	}
	switch x := v.Interface().(type) {
	case netip.Addr:
		text, err = x.MarshalText()
	case netip.Prefix:
		text, err = x.MarshalText()
	case time.Time:
		text, err = x.MarshalText()
	default:
		return nil, false, nil
	}
	return text, true, err
}

func marshalValue(v reflect.Value, path string) (any, error) {
	if text, ok, err := addrText(v); ok {
		if err != nil {
			return nil, fmt.Errorf("marshal %s: %w", path, err)
		}
		return jsonString(string(text), path)
	}
	switch v.Kind() {
	case reflect.String:
		return jsonString(v.String(), path)
	case reflect.Bool:
		if v.Bool() {
			return uint8(1), nil
		}
		return uint8(0), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return jsonInt(v.Int()), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if v.Uint() > math.MaxInt64 {
			return nil, fmt.Errorf("marshal %s: integer %d out of range", path, v.Uint())
		}
		return jsonInt(int64(v.Uint())), nil
	case reflect.Float32, reflect.Float64:
		x := v.Float()
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("marshal %s: unsupported value %v", path, x)
		}
		if v.Kind() == reflect.Float32 {
			return nil, fmt.Errorf("marshal %s: float32 is not supported", path)
		}
		// JSON writes integral values below 1e21 without a fraction or exponent, and
		// FromJSON reads those as integers.
		// JSON writes its shortest digits, zero-padded: 2^62 reads back as 4611686018427388000.
		if x == math.Trunc(x) && math.Abs(x) < 1e21 {
			digits := strconv.FormatFloat(x, 'f', -1, 64)
			n, err := strconv.ParseInt(digits, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("marshal %s: integer %s out of range", path, digits)
			}
			return jsonInt(n), nil
		}
		return x, nil
	case reflect.Pointer:
		if v.IsNil() {
			return nil, nil
		}
		return marshalValue(v.Elem(), path)
	case reflect.Struct:
		return marshalStruct(v, path)
	case reflect.Slice:
		if v.IsNil() {
			return nil, nil
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return nil, fmt.Errorf("marshal %s: []byte is not supported", path)
		}
		a := make([]any, v.Len())
		for i := range a {
			e, err := marshalValue(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			a[i] = e
		}
		return a, nil
	case reflect.Map:
		if v.Type().Key().Kind() != reflect.String {
			return nil, fmt.Errorf("marshal %s: map keys must be strings", path)
		}
		if v.IsNil() {
			return nil, nil
		}
		keys := make([]string, 0, v.Len())
		for _, k := range v.MapKeys() {
			keys = append(keys, k.String())
		}
		slices.Sort(keys) // encoding/json sorts map keys
		t := Table{}
		for _, k := range keys {
			name, err := jsonString(k, path)
			if err != nil {
				return nil, err
			}
			e, err := marshalValue(v.MapIndex(reflect.ValueOf(k).Convert(v.Type().Key())), path+"."+k)
			if err != nil {
				return nil, err
			}
			t = append(t, Field{name.(string), e})
		}
		return t, nil
	}
	return nil, fmt.Errorf("marshal %s: %s is not supported", path, v.Type())
}

func jsonInt(n int64) any {
	if n >= math.MinInt32 && n <= math.MaxInt32 {
		return int32(n)
	}
	return n
}

// jsonString is s as it comes back from JSON: each byte of invalid UTF-8 becomes U+FFFD, as
// encoding/json writes it; a NUL is refused, as FromJSON refuses it (blobmsg strings end at
// their first NUL).
func jsonString(s, path string) (any, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, fmt.Errorf("marshal %s: string %q contains a NUL character", path, s)
	}
	if utf8.ValidString(s) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r) // RuneError for each invalid byte
		i += n
	}
	return b.String(), nil
}

// Unmarshal fills the struct v points to from a Table such as Marshal makes or a ubus
// answer: members matched to fields by their json names (other members are ignored, null
// leaves a field as it is), integers into integer and float fields, uint8 or bool into
// bools, tables into structs and maps, arrays into slices. A member of the wrong type is an
// error naming it.
func Unmarshal(t Table, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("unmarshal into %T: want a pointer to a struct", v)
	}
	return unmarshalStruct(t, rv.Elem(), rv.Elem().Type().Name())
}

func unmarshalStruct(t Table, rv reflect.Value, path string) error {
	rt := rv.Type()
	for _, m := range t {
		for i := 0; i < rt.NumField(); i++ {
			name, _, _, ok := jsonField(rt.Field(i))
			if !ok || name != m.Name {
				continue
			}
			if err := unmarshalValue(m.Value, rv.Field(i), path+"."+name); err != nil {
				return err
			}
			break
		}
	}
	return nil
}

// integer is an integer member; uint8 is a blobmsg boolean (true/false in JSON), not a number.
func integer(val any) (int64, bool) {
	if _, isBool := val.(uint8); isBool {
		return 0, false
	}
	return AsInt(val)
}

// setAddr reads an address field from its text form (ok false: v is not an address).
func setAddr(val any, v reflect.Value) (ok bool, err error) {
	if !v.CanAddr() {
		return false, nil
	}
	switch x := v.Addr().Interface().(type) {
	case *netip.Addr:
		s, isString := val.(string)
		if !isString {
			return true, fmt.Errorf("%T does not fit %s", val, v.Type())
		}
		return true, x.UnmarshalText([]byte(s))
	case *netip.Prefix:
		s, isString := val.(string)
		if !isString {
			return true, fmt.Errorf("%T does not fit %s", val, v.Type())
		}
		return true, x.UnmarshalText([]byte(s))
	case *time.Time:
		s, isString := val.(string)
		if !isString {
			return true, fmt.Errorf("%T does not fit %s", val, v.Type())
		}
		return true, x.UnmarshalText([]byte(s))
	}
	return false, nil
}

func unmarshalValue(val any, v reflect.Value, path string) error {
	if val == nil {
		return nil // JSON null leaves the field alone
	}
	wrong := func() error {
		return fmt.Errorf("unmarshal %s: %T does not fit %s", path, val, v.Type())
	}
	if ok, err := setAddr(val, v); ok {
		if err != nil {
			return fmt.Errorf("unmarshal %s: %w", path, err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		s, ok := val.(string)
		if !ok {
			return wrong()
		}
		v.SetString(s)
	case reflect.Bool:
		switch b := val.(type) {
		case bool:
			v.SetBool(b)
		case uint8:
			v.SetBool(b != 0)
		default:
			return wrong()
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := integer(val)
		if !ok || v.OverflowInt(n) {
			return wrong()
		}
		v.SetInt(n)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n, ok := integer(val)
		if !ok || n < 0 || v.OverflowUint(uint64(n)) {
			return wrong()
		}
		v.SetUint(uint64(n))
	case reflect.Float32, reflect.Float64:
		switch x := val.(type) {
		case float64:
			v.SetFloat(x)
		default:
			n, ok := integer(val)
			if !ok {
				return wrong()
			}
			v.SetFloat(float64(n))
		}
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return unmarshalValue(val, v.Elem(), path)
	case reflect.Struct:
		t, ok := val.(Table)
		if !ok {
			return wrong()
		}
		return unmarshalStruct(t, v, path)
	case reflect.Slice:
		a, ok := val.([]any)
		if !ok {
			return wrong()
		}
		s := reflect.MakeSlice(v.Type(), len(a), len(a))
		for i, e := range a {
			if err := unmarshalValue(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
	case reflect.Map:
		t, ok := val.(Table)
		if !ok || v.Type().Key().Kind() != reflect.String {
			return wrong()
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, m := range t {
			e := reflect.New(v.Type().Elem()).Elem()
			if err := unmarshalValue(m.Value, e, path+"."+m.Name); err != nil {
				return err
			}
			v.SetMapIndex(reflect.ValueOf(m.Name).Convert(v.Type().Key()), e)
		}
	default:
		return fmt.Errorf("unmarshal %s: %s is not supported", path, v.Type())
	}
	return nil
}
