package ubus

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// FromJSON converts a JSON object to a Table the way blobmsg_add_json does
// (what `ubus call` and `ubus send` send): members keep their order,
// integers become int32 when they fit and int64 otherwise, other numbers
// float64, booleans INT8 (as bool), null UNSPEC.
func FromJSON(data []byte) (Table, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	tok, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("parse JSON: want an object, got %v", tok)
	}
	v, err := jsonObject(d, 0)
	if err != nil {
		return nil, fmt.Errorf("parse JSON: %w", err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("parse JSON: data after the object")
	}
	return v, nil
}

func jsonObject(d *json.Decoder, depth int) (Table, error) {
	t := Table{}
	for d.More() {
		k, err := d.Token()
		if err != nil {
			return nil, err
		}
		v, err := jsonValue(d, depth)
		if err != nil {
			return nil, err
		}
		key := k.(string)
		if strings.IndexByte(key, 0) >= 0 {
			return nil, fmt.Errorf("key %q contains a NUL character", key)
		}
		t = append(t, Field{key, v})
	}
	_, err := d.Token() // '}'
	return t, err
}

func jsonValue(d *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nesting deeper than %d", maxDepth)
	}
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch x := tok.(type) {
	case json.Delim:
		if x == '{' {
			return jsonObject(d, depth+1)
		}
		a := []any{}
		for d.More() {
			v, err := jsonValue(d, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := d.Token() // ']'
		return a, err
	case json.Number:
		s := x.String()
		if !strings.ContainsAny(s, ".eE") {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("integer %s out of range", s)
			}
			if n >= math.MinInt32 && n <= math.MaxInt32 {
				return int32(n), nil
			}
			return n, nil
		}
		return x.Float64()
	case bool:
		if x {
			return uint8(1), nil
		}
		return uint8(0), nil
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return nil, fmt.Errorf("string %q contains a NUL character", x)
		}
		return x, nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("unexpected JSON token %v", tok)
}

// FormatJSON renders a blobmsg value as JSON exactly like
// blobmsg_format_json (indent=false) or the `ubus call` output
// (blobmsg_format_json_indent, indent=true): INT8 is true/false, doubles
// print with six decimals, indentation is by tabs.
func FormatJSON(v any, indent bool) ([]byte, error) {
	f := jsonFormatter{indent: indent}
	if err := f.value(v, 0); err != nil {
		return nil, err
	}
	return f.buf.Bytes(), nil
}

type jsonFormatter struct {
	buf    bytes.Buffer
	indent bool
	level  int
}

func (f *jsonFormatter) sep() {
	if !f.indent {
		return
	}
	f.buf.WriteByte('\n')
	for i := 0; i < f.level && i < 16; i++ {
		f.buf.WriteByte('\t')
	}
}

func (f *jsonFormatter) value(v any, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("nesting deeper than %d", maxDepth)
	}
	switch x := v.(type) {
	case nil, []byte:
		f.buf.WriteString("null")
	case bool:
		f.buf.WriteString(strconv.FormatBool(x))
	case uint8:
		f.buf.WriteString(strconv.FormatBool(x != 0))
	case float64:
		f.double(x)
	case float32:
		f.double(float64(x))
	case string:
		formatString(&f.buf, x)
	case Table:
		return f.list(len(x), func(i int) error {
			if x[i].Name != "" {
				formatString(&f.buf, x[i].Name)
				f.buf.WriteByte(':')
				if f.indent {
					f.buf.WriteByte(' ')
				}
			}
			return f.value(x[i].Value, depth+1)
		}, '{', '}')
	case map[string]any:
		return f.value(sortedTable(x), depth)
	case []any:
		return f.list(len(x), func(i int) error { return f.value(x[i], depth+1) }, '[', ']')
	default:
		if n, ok := AsInt(v); ok {
			f.buf.WriteString(strconv.FormatInt(n, 10))
			return nil
		}
		typ, err := typeOf(v)
		if err != nil || typ != TypeArray {
			return fmt.Errorf("cannot format %T as JSON", v)
		}
		// Typed slices: encode and decode once to get []any.
		var e encoder
		if err := e.elements(v, depth); err != nil {
			return err
		}
		a, err := decodeList(e.buf, true, depth)
		if err != nil {
			return err
		}
		return f.value(a, depth)
	}
	return nil
}

// double prints like printf("%lf").
func (f *jsonFormatter) double(x float64) {
	switch {
	case math.IsNaN(x):
		f.buf.WriteString("nan")
	case math.IsInf(x, 1):
		f.buf.WriteString("inf")
	case math.IsInf(x, -1):
		f.buf.WriteString("-inf")
	default:
		f.buf.WriteString(strconv.FormatFloat(x, 'f', 6, 64))
	}
}

func (f *jsonFormatter) list(n int, member func(int) error, open, close byte) error {
	f.buf.WriteByte(open)
	f.level++
	f.sep()
	for i := 0; i < n; i++ {
		if i > 0 {
			f.buf.WriteByte(',')
			f.sep()
		}
		if err := member(i); err != nil {
			return err
		}
	}
	f.level--
	f.sep()
	f.buf.WriteByte(close)
	return nil
}

// formatString escapes like blobmsg_format_string: \b \n \t \r \" \\ and
// \u00XX for other control characters; all other bytes pass unchanged.
func formatString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\b':
			b.WriteString(`\b`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			if c < ' ' {
				fmt.Fprintf(b, `\u00%02x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}
