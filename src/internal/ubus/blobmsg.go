package ubus

import (
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"strings"
)

// Type is a blobmsg value type (enum blobmsg_type in libubox blobmsg.h). It is
// also what a method signature announces for each argument.
type Type uint8

// The blobmsg types, numbered as in libubox.
const (
	TypeUnspec Type = 0
	TypeArray  Type = 1
	TypeTable  Type = 2
	TypeString Type = 3
	TypeInt64  Type = 4
	TypeInt32  Type = 5
	TypeInt16  Type = 6
	TypeInt8   Type = 7
	TypeBool   Type = TypeInt8
	TypeDouble Type = 8
	typeLast   Type = TypeDouble
)

var typeNames = [...]string{"unspec", "array", "table", "string", "int64", "int32", "int16", "int8", "double"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Blob attribute header bits (blob.h).
const (
	blobIDMask   = 0x7f000000
	blobIDShift  = 24
	blobLenMask  = 0x00ffffff
	blobExtended = 0x80000000
	blobHdrLen   = 4
)

// maxDepth bounds nesting of arrays and tables when decoding, so hostile
// input cannot make the decoder recurse without end.
const maxDepth = 64

// Field is one named member of a Table.
type Field struct {
	Name  string
	Value any
}

// Table is a blobmsg table: named values in wire order. Names need not be
// unique on the wire; lookups return the first match, as blobmsg_parse does.
//
// Values are Go values of these types, which is also what decoding yields:
//
//	nil (UNSPEC without payload), []byte (UNSPEC with payload),
//	uint8 (INT8/BOOL), int16, int32, int64, float64, string,
//	[]any (ARRAY), Table (TABLE).
//
// Encoding additionally accepts bool (INT8 0/1), int8, uint16, uint32,
// uint64, int and uint (INT32 when in range, else INT64, as blobmsg_add_json
// does), float32, map[string]any (TABLE, keys sorted) and slices of strings,
// ints, Tables and maps.
type Table []Field

// Get returns the first value named name.
func (t Table) Get(name string) (any, bool) {
	for _, f := range t {
		if f.Name == name {
			return f.Value, true
		}
	}
	return nil, false
}

// Int returns the first value named name if it is an integer of any width
// (BLOBMSG_CAST_INT64 semantics: INT8 is unsigned, the others signed).
func (t Table) Int(name string) (int64, bool) {
	v, ok := t.Get(name)
	if !ok {
		return 0, false
	}
	return AsInt(v)
}

// String returns the first value named name if it is a string.
func (t Table) String(name string) (string, bool) {
	v, ok := t.Get(name)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	return s, ok
}

// Bool returns the first value named name if it is a BOOL (INT8) or a Go bool.
func (t Table) Bool(name string) (bool, bool) {
	v, ok := t.Get(name)
	if !ok {
		return false, false
	}
	switch b := v.(type) {
	case uint8:
		return b != 0, true
	case bool:
		return b, true
	}
	return false, false
}

// Table returns the first value named name if it is a table.
func (t Table) Table(name string) (Table, bool) {
	v, ok := t.Get(name)
	if !ok {
		return nil, false
	}
	tt, ok := v.(Table)
	return tt, ok
}

// Array returns the first value named name if it is an array.
func (t Table) Array(name string) ([]any, bool) {
	v, ok := t.Get(name)
	if !ok {
		return nil, false
	}
	a, ok := v.([]any)
	return a, ok
}

// AsInt converts any Go integer value (as decoded or as accepted for
// encoding) to int64.
func AsInt(v any) (int64, bool) {
	switch n := v.(type) {
	case uint8:
		return int64(n), true
	case int8:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	case uint:
		return int64(n), true
	case uint64:
		return int64(n), true
	}
	return 0, false
}

// encoder appends blob attributes to buf. Containers are written by begin,
// members, end: end stores the raw length and pads to 4, so a container's
// length counts its last member's padding exactly as blob_nest_end does.
type encoder struct {
	buf []byte
}

func pad4(n int) int { return (n + 3) &^ 3 }

func (e *encoder) begin(id uint8, extended bool) int {
	off := len(e.buf)
	w := uint32(id) << blobIDShift & blobIDMask
	if extended {
		w |= blobExtended
	}
	e.buf = binary.BigEndian.AppendUint32(e.buf, w)
	return off
}

func (e *encoder) end(off int) error {
	raw := len(e.buf) - off
	if raw > blobLenMask {
		return fmt.Errorf("attribute of %d bytes exceeds the 24-bit blob length", raw)
	}
	w := binary.BigEndian.Uint32(e.buf[off:])
	binary.BigEndian.PutUint32(e.buf[off:], w&^blobLenMask|uint32(raw))
	for len(e.buf)%4 != 0 {
		e.buf = append(e.buf, 0)
	}
	return nil
}

// nameHeader appends a blobmsg name header (16-bit length, name, NUL, zero
// padding to 4) right after an attribute header opened with begin.
func (e *encoder) nameHeader(name string) error {
	if len(name) > math.MaxUint16 {
		return fmt.Errorf("name of %d bytes is longer than 65535", len(name))
	}
	if strings.IndexByte(name, 0) >= 0 {
		return fmt.Errorf("name %q contains a NUL byte", name)
	}
	e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(len(name)))
	e.buf = append(e.buf, name...)
	e.buf = append(e.buf, 0)
	for len(e.buf)%4 != 0 {
		e.buf = append(e.buf, 0)
	}
	return nil
}

// value appends one blobmsg attribute named name holding v.
func (e *encoder) value(name string, v any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nesting deeper than %d", maxDepth)
	}
	typ, err := typeOf(v)
	if err != nil {
		return err
	}
	off := e.begin(uint8(typ), true)
	if err := e.nameHeader(name); err != nil {
		return err
	}
	switch x := v.(type) {
	case nil:
	case []byte:
		e.buf = append(e.buf, x...)
	case bool:
		var b byte
		if x {
			b = 1
		}
		e.buf = append(e.buf, b)
	case uint8:
		e.buf = append(e.buf, x)
	case int8:
		e.buf = append(e.buf, byte(x))
	case int16:
		e.buf = binary.BigEndian.AppendUint16(e.buf, uint16(x))
	case uint16:
		e.buf = binary.BigEndian.AppendUint16(e.buf, x)
	case int32:
		e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(x))
	case uint32:
		e.buf = binary.BigEndian.AppendUint32(e.buf, x)
	case int64:
		e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(x))
	case uint64:
		e.buf = binary.BigEndian.AppendUint64(e.buf, x)
	case int:
		if typ == TypeInt32 {
			e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(int32(x)))
		} else {
			e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(x))
		}
	case uint:
		if typ == TypeInt32 {
			e.buf = binary.BigEndian.AppendUint32(e.buf, uint32(x))
		} else {
			e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(x))
		}
	case float64:
		e.buf = binary.BigEndian.AppendUint64(e.buf, math.Float64bits(x))
	case float32:
		e.buf = binary.BigEndian.AppendUint64(e.buf, math.Float64bits(float64(x)))
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return fmt.Errorf("%s: string contains a NUL byte", fieldName(name))
		}
		e.buf = append(e.buf, x...)
		e.buf = append(e.buf, 0)
	case Table:
		if err := e.fields(x, depth+1); err != nil {
			return fmt.Errorf("%s: %w", fieldName(name), err)
		}
	case map[string]any:
		if err := e.fields(sortedTable(x), depth+1); err != nil {
			return fmt.Errorf("%s: %w", fieldName(name), err)
		}
	default:
		if err := e.elements(v, depth+1); err != nil {
			return fmt.Errorf("%s: %w", fieldName(name), err)
		}
	}
	return e.end(off)
}

func fieldName(name string) string {
	if name == "" {
		return "element"
	}
	return fmt.Sprintf("field %q", name)
}

// fields appends the members of a table.
func (e *encoder) fields(t Table, depth int) error {
	for _, f := range t {
		if err := e.value(f.Name, f.Value, depth); err != nil {
			return err
		}
	}
	return nil
}

// elements appends the members of an array (unnamed, with an empty name
// header, as blobmsg_add_json does).
func (e *encoder) elements(v any, depth int) error {
	each := func(n int, at func(int) any) error {
		for i := 0; i < n; i++ {
			if err := e.value("", at(i), depth); err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
		}
		return nil
	}
	switch a := v.(type) {
	case []any:
		return each(len(a), func(i int) any { return a[i] })
	case []string:
		return each(len(a), func(i int) any { return a[i] })
	case []int:
		return each(len(a), func(i int) any { return a[i] })
	case []int64:
		return each(len(a), func(i int) any { return a[i] })
	case []uint32:
		return each(len(a), func(i int) any { return a[i] })
	case []Table:
		return each(len(a), func(i int) any { return a[i] })
	case []map[string]any:
		return each(len(a), func(i int) any { return a[i] })
	}
	return fmt.Errorf("cannot encode %T as blobmsg", v)
}

func sortedTable(m map[string]any) Table {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t := make(Table, 0, len(m))
	for _, k := range keys {
		t = append(t, Field{k, m[k]})
	}
	return t
}

// typeOf maps a Go value to the blobmsg type it is encoded as.
func typeOf(v any) (Type, error) {
	switch x := v.(type) {
	case nil, []byte:
		return TypeUnspec, nil
	case bool, uint8, int8:
		return TypeInt8, nil
	case int16, uint16:
		return TypeInt16, nil
	case int32, uint32:
		return TypeInt32, nil
	case int64, uint64:
		return TypeInt64, nil
	case int:
		if x >= math.MinInt32 && x <= math.MaxInt32 {
			return TypeInt32, nil
		}
		return TypeInt64, nil
	case uint:
		if x <= math.MaxInt32 {
			return TypeInt32, nil
		}
		return TypeInt64, nil
	case float32, float64:
		return TypeDouble, nil
	case string:
		return TypeString, nil
	case Table, map[string]any:
		return TypeTable, nil
	case []any, []string, []int, []int64, []uint32, []Table, []map[string]any:
		return TypeArray, nil
	}
	return 0, fmt.Errorf("cannot encode %T as blobmsg", v)
}

// MarshalTable encodes t as a blobmsg attribute list: the payload of a ubus
// DATA attribute, or of a blob_buf initialised with blobmsg_buf_init.
func MarshalTable(t Table) ([]byte, error) {
	var e encoder
	if err := e.fields(t, 0); err != nil {
		return nil, err
	}
	return e.buf, nil
}

// UnmarshalTable decodes a blobmsg attribute list (the payload of a table
// or of a ubus DATA attribute). Every member must carry a name header.
func UnmarshalTable(b []byte) (Table, error) {
	v, err := decodeList(b, false, 0)
	if err != nil {
		return nil, err
	}
	return v.(Table), nil
}

// blobAttr is one attribute cut out of a buffer, bounds already checked.
type blobAttr struct {
	id       uint8
	extended bool
	payload  []byte // raw payload, name header included
	next     int    // offset of the following attribute
}

// cutAttr reads the attribute at the start of b with the bounds checks of
// blob_parse_untrusted and blobmsg_check_attr_len.
func cutAttr(b []byte) (blobAttr, error) {
	if len(b) < blobHdrLen {
		return blobAttr{}, fmt.Errorf("%d trailing bytes, too short for an attribute header", len(b))
	}
	w := binary.BigEndian.Uint32(b)
	raw := int(w & blobLenMask)
	if raw < blobHdrLen {
		return blobAttr{}, fmt.Errorf("attribute length %d is shorter than its header", raw)
	}
	if pad4(raw) > len(b) {
		return blobAttr{}, fmt.Errorf("attribute length %d (padded %d) exceeds the %d bytes left", raw, pad4(raw), len(b))
	}
	return blobAttr{
		id:       uint8(w & blobIDMask >> blobIDShift),
		extended: w&blobExtended != 0,
		payload:  b[blobHdrLen:raw],
		next:     pad4(raw),
	}, nil
}

// splitName separates the blobmsg name header from the value of an
// extended attribute.
func splitName(p []byte) (name string, data []byte, err error) {
	if len(p) < 2 {
		return "", nil, fmt.Errorf("payload of %d bytes too short for a name header", len(p))
	}
	n := int(binary.BigEndian.Uint16(p))
	hdr := pad4(2 + n + 1)
	if hdr > len(p) {
		return "", nil, fmt.Errorf("name header of %d bytes exceeds payload of %d", hdr, len(p))
	}
	if p[2+n] != 0 {
		return "", nil, fmt.Errorf("name of length %d is not NUL-terminated", n)
	}
	nb := p[2 : 2+n]
	for _, c := range nb {
		if c == 0 {
			return "", nil, fmt.Errorf("name %q contains a NUL byte", nb)
		}
	}
	return string(nb), p[hdr:], nil
}

// decodeList decodes the members of an array (array=true: names optional
// and dropped) or of a table (names required).
func decodeList(b []byte, array bool, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nesting deeper than %d", maxDepth)
	}
	var (
		arr []any
		tbl Table
	)
	if array {
		arr = []any{}
	} else {
		tbl = Table{}
	}
	for off := 0; off < len(b); {
		a, err := cutAttr(b[off:])
		if err != nil {
			return nil, fmt.Errorf("at offset %d: %w", off, err)
		}
		name, data := "", a.payload
		if a.extended {
			name, data, err = splitName(a.payload)
			if err != nil {
				return nil, fmt.Errorf("at offset %d: %w", off, err)
			}
		} else if !array {
			return nil, fmt.Errorf("at offset %d: table member without a name header", off)
		}
		v, err := decodeValue(Type(a.id), data, depth)
		if err != nil {
			if name != "" {
				return nil, fmt.Errorf("field %q: %w", name, err)
			}
			return nil, fmt.Errorf("at offset %d: %w", off, err)
		}
		if array {
			arr = append(arr, v)
		} else {
			tbl = append(tbl, Field{name, v})
		}
		off += a.next
	}
	if array {
		return arr, nil
	}
	return tbl, nil
}

// fixedLen is the exact payload length of the fixed-size types.
var fixedLen = [...]int{TypeInt8: 1, TypeInt16: 2, TypeInt32: 4, TypeInt64: 8, TypeDouble: 8}

// decodeValue checks a value's length against its type (blob_check_type,
// but doubles must be exactly 8 bytes and strings free of inner NULs).
func decodeValue(t Type, d []byte, depth int) (any, error) {
	if int(t) < len(fixedLen) && fixedLen[t] != 0 && len(d) != fixedLen[t] {
		return nil, fmt.Errorf("%s value of %d bytes, want %d", t, len(d), fixedLen[t])
	}
	switch t {
	case TypeUnspec:
		if len(d) == 0 {
			return nil, nil
		}
		return append([]byte(nil), d...), nil
	case TypeArray:
		return decodeList(d, true, depth+1)
	case TypeTable:
		return decodeList(d, false, depth+1)
	case TypeString:
		if len(d) == 0 || d[len(d)-1] != 0 {
			return nil, fmt.Errorf("string is not NUL-terminated")
		}
		s := d[:len(d)-1]
		for _, c := range s {
			if c == 0 {
				return nil, fmt.Errorf("string contains a NUL byte before its end")
			}
		}
		return string(s), nil
	case TypeInt64:
		return int64(binary.BigEndian.Uint64(d)), nil
	case TypeInt32:
		return int32(binary.BigEndian.Uint32(d)), nil
	case TypeInt16:
		return int16(binary.BigEndian.Uint16(d)), nil
	case TypeInt8:
		return d[0], nil
	case TypeDouble:
		return math.Float64frombits(binary.BigEndian.Uint64(d)), nil
	}
	return nil, fmt.Errorf("unknown blobmsg type %d", uint8(t))
}
