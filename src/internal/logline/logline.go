// Package logline is connmgr's structured logger: leveled key=value lines in
// exactly the format of log/slog's TextHandler (time, level, msg, then the
// attributes), which users and tests grep.
//
// It exists for size, not features: importing log/slog links encoding/json
// (slog's common handler reaches its JSON encoder even for text, and slog's
// init builds the default handler) and package log, ~115 KB of a mipsel
// binary that must fit a small flash budget. logline owns only what the
// daemon uses: Debug/Info/Warn/Error(msg, key, value, ...), With, Enabled
// and a level that can change at run time (LevelVar). No groups, no
// source, no ReplaceAttr, no context.
package logline

import (
	"encoding"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"
)

// Level is a message's importance; the values are slog's, so a Level
// prints as slog.Level does (DEBUG, INFO, WARN, ERROR, or e.g. INFO+2).
type Level int

const (
	LevelDebug Level = -4
	LevelInfo  Level = 0
	LevelWarn  Level = 4
	LevelError Level = 8
)

// String is the level's name as written after level=.
func (l Level) String() string {
	name := func(base string, off Level) string {
		if off == 0 {
			return base
		}
		return fmt.Sprintf("%s%+d", base, int(off))
	}
	switch {
	case l < LevelInfo:
		return name("DEBUG", l-LevelDebug)
	case l < LevelWarn:
		return name("INFO", l-LevelInfo)
	case l < LevelError:
		return name("WARN", l-LevelWarn)
	default:
		return name("ERROR", l-LevelError)
	}
}

// Level makes a fixed Level a Leveler.
func (l Level) Level() Level { return l }

// A Leveler gives the least important level a Logger writes.
type Leveler interface{ Level() Level }

// LevelVar is a Level that may be changed while loggers use it (the daemon
// sets it from the config's log_level on every load). Its zero value is
// LevelInfo.
type LevelVar struct{ v atomic.Int64 }

// Level returns the current level.
func (v *LevelVar) Level() Level { return Level(v.v.Load()) }

// Set changes the level for every logger using v.
func (v *LevelVar) Set(l Level) { v.v.Store(int64(l)) }

// Logger writes one line per enabled message to its writer, with a single
// Write call per line; it is safe for concurrent use.
type Logger struct {
	w     io.Writer
	mu    *sync.Mutex // shared with the loggers made by With: one writer, whole lines
	level Leveler
	attrs []byte // preformatted attributes from With, each with its leading space
}

// New returns a logger writing to w messages at level or above; a nil level
// means LevelInfo.
func New(w io.Writer, level Leveler) *Logger {
	if level == nil {
		level = LevelInfo
	}
	return &Logger{w: w, mu: new(sync.Mutex), level: level}
}

// Discard returns a logger that writes nothing.
func Discard() *Logger { return New(io.Discard, Level(1<<31-1)) }

// Stderr returns a logger writing info and above to the process's stderr,
// for callers given no logger.
func Stderr() *Logger { return New(os.Stderr, nil) }

// With returns a logger that adds the given key-value pairs to every line,
// after msg and before the message's own pairs.
func (l *Logger) With(args ...any) *Logger {
	if len(args) == 0 {
		return l
	}
	c := *l
	c.attrs = appendAttrs(append([]byte(nil), l.attrs...), args)
	return &c
}

// Enabled reports whether a message at level would be written.
func (l *Logger) Enabled(level Level) bool { return level >= l.level.Level() }

// Debug logs msg and the key-value pairs in args at LevelDebug.
func (l *Logger) Debug(msg string, args ...any) { l.log(LevelDebug, msg, args) }

// Info logs at LevelInfo.
func (l *Logger) Info(msg string, args ...any) { l.log(LevelInfo, msg, args) }

// Warn logs at LevelWarn.
func (l *Logger) Warn(msg string, args ...any) { l.log(LevelWarn, msg, args) }

// Error logs at LevelError.
func (l *Logger) Error(msg string, args ...any) { l.log(LevelError, msg, args) }

func (l *Logger) log(level Level, msg string, args []any) {
	if !l.Enabled(level) {
		return
	}
	l.write(appendLine(make([]byte, 0, 256), time.Now(), level, msg, l.attrs, args))
}

func (l *Logger) write(line []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.w.Write(line) // nowhere to report a failed log write
}

// appendLine formats one line as slog.TextHandler does.
func appendLine(b []byte, t time.Time, level Level, msg string, pre []byte, args []any) []byte {
	b = append(b, "time="...)
	b = appendRFC3339Millis(b, t.Round(0))
	b = append(b, " level="...)
	b = appendString(b, level.String())
	b = append(b, " msg="...)
	b = appendString(b, msg)
	b = append(b, pre...)
	b = appendAttrs(b, args)
	return append(b, '\n')
}

// badKey names a value that came without a key, as slog does.
const badKey = "!BADKEY"

// appendAttrs appends " key=value" for each pair in args. Like slog, a
// non-string where a key is due, or a lone last string, is a value under
// the key !BADKEY.
func appendAttrs(b []byte, args []any) []byte {
	for len(args) > 0 {
		key, ok := args[0].(string)
		var val any
		switch {
		case !ok:
			key, val, args = badKey, args[0], args[1:]
		case len(args) == 1:
			key, val, args = badKey, key, nil
		default:
			val, args = args[1], args[2:]
		}
		if key == "" && val == nil {
			continue // slog elides an empty attribute
		}
		b = append(b, ' ')
		b = appendString(b, key)
		b = append(b, '=')
		b = appendValue(b, val)
	}
	return b
}

// appendValue writes v as slog.TextHandler writes the Value slog.AnyValue(v).
func appendValue(b []byte, v any) (out []byte) {
	n := len(b)
	defer func() {
		if r := recover(); r != nil {
			// A String or MarshalText method that does not guard against a
			// nil receiver: slog writes <nil>, other panics as !PANIC.
			if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
				out = appendString(b[:n], "<nil>")
				return
			}
			out = appendString(b[:n], fmt.Sprintf("!PANIC: %v", r))
		}
	}()
	switch x := v.(type) {
	case string:
		return appendString(b, x)
	case int, int8, int16, int32, int64:
		return strconv.AppendInt(b, reflect.ValueOf(x).Int(), 10)
	case uint, uint8, uint16, uint32, uint64, uintptr:
		return strconv.AppendUint(b, reflect.ValueOf(x).Uint(), 10)
	case float32:
		return strconv.AppendFloat(b, float64(x), 'g', -1, 64)
	case float64:
		return strconv.AppendFloat(b, x, 'g', -1, 64)
	case bool:
		return strconv.AppendBool(b, x)
	case time.Duration:
		return append(b, x.String()...) // never needs quoting
	case time.Time:
		return appendRFC3339Millis(b, x.Round(0))
	case encoding.TextMarshaler:
		// Before Stringer, as slog: a zero netip.Addr is "" here, not "invalid IP".
		data, err := x.MarshalText()
		if err != nil {
			return appendString(b, fmt.Sprintf("!ERROR:%v", err))
		}
		return appendString(b, string(data))
	case []byte:
		return strconv.AppendQuote(b, string(x))
	}
	if t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 {
		return strconv.AppendQuote(b, string(reflect.ValueOf(v).Bytes())) // named byte slices, as %s
	}
	return appendString(b, fmt.Sprintf("%+v", v)) // errors by Error(), Stringers by String()
}

// appendString writes s bare, or quoted when slog's TextHandler would.
func appendString(b []byte, s string) []byte {
	if needsQuoting(s) {
		return strconv.AppendQuote(b, s)
	}
	return append(b, s...)
}

// needsQuoting is slog's rule: empty, or holding a space, '=', '"', an
// ASCII control (but not DEL), a non-ASCII space or non-printing rune, or
// invalid UTF-8.
func needsQuoting(s string) bool {
	if len(s) == 0 {
		return true
	}
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c != '\\' && (c <= ' ' || c == '=' || c == '"') {
				return true
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError || unicode.IsSpace(r) || !unicode.IsPrint(r) {
			return true
		}
		i += size
	}
	return false
}

// appendRFC3339Millis is slog's time format: RFC 3339 with exactly three
// fraction digits (truncated, not rounded), in t's own zone.
func appendRFC3339Millis(b []byte, t time.Time) []byte {
	// RFC3339Nano trims trailing zeros; adding 1/10 ms guarantees four
	// fraction digits, of which the fourth is dropped.
	const prefixLen = len("2006-01-02T15:04:05.000")
	n := len(b)
	t = t.Truncate(time.Millisecond).Add(time.Millisecond / 10)
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b[:n+prefixLen], b[n+prefixLen+1:]...)
}
