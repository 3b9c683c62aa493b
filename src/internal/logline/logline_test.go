package logline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// slogLine is what slog.TextHandler writes for the message at time t.
func slogLine(t *testing.T, at time.Time, level Level, msg string, args ...any) string {
	t.Helper()
	var buf bytes.Buffer
	h := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
	r := slog.NewRecord(at, slog.Level(level), msg, 0)
	r.Add(args...)
	if err := h.Handle(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

type stringer struct{ s string }

func (s stringer) String() string { return s.s }

type byteName []byte

type kind int

func TestLineMatchesSlog(t *testing.T) {
	zone := time.FixedZone("X", 5*3600+30*60)
	at := time.Date(2026, 12, 2, 18, 1, 39, 130_999_999, time.UTC)
	var nilErr error
	var nilAddr *netip.Addr
	cases := []struct {
		msg  string
		args []any
	}{
		{"firewall lock-down in force", []any{"backend", "nftables"}},
		{"", nil},
		{"plain", []any{"s", "with space", "q", `say "hi"`, "eq", "a=b", "empty", "", "bs", `c:\dir`}},
		{"unicode", []any{"u", "héllo→wörld", "nbsp", "a\u00a0b", "zw", "a\u200bb", "del", "a\x7fb", "nul", "a\x00b", "bad", "\xff\xfe", "tab", "a\tb", "nl", "a\nb"}},
		{"numbers", []any{"i", 42, "neg", -7, "i8", int8(-8), "i16", int16(300), "i32", int32(-1 << 31), "i64", int64(math.MaxInt64),
			"u", uint(7), "u8", uint8(255), "u16", uint16(65535), "u32", uint32(1 << 31), "u64", uint64(math.MaxUint64), "up", uintptr(9)}},
		{"floats", []any{"f", 1.5, "big", 1e21, "small", 1e-7, "f32", float32(0.1), "nan", math.NaN(), "inf", math.Inf(-1), "zero", 0.0}},
		{"bools", []any{"t", true, "f", false}},
		{"durations", []any{"d", 1500 * time.Millisecond, "z", time.Duration(0), "neg", -time.Microsecond, "h", 26 * time.Hour}},
		{"errors", []any{"err", errors.New("dial udp: connection refused"), "nil", nilErr, "wrapped", fmt.Errorf("load: %w", errors.New("x=y"))}},
		{"addrs", []any{"v4", netip.MustParseAddr("198.18.0.1"), "v6", netip.MustParseAddr("2001:db8::1"), "zero", netip.Addr{},
			"pfx", netip.MustParsePrefix("198.18.0.0/15"), "ap", netip.MustParseAddrPort("[2001:db8::1]:53"), "nilptr", nilAddr}},
		{"slices", []any{"ss", []string{"a", "b c"}, "empty", []string{}, "nilss", []string(nil), "bytes", []byte("raw\x01"), "named", byteName("ab"), "ints", []int{1, 2}}},
		{"times", []any{"t", at, "zoned", at.In(zone), "zero", time.Time{}, "mono", time.Now(), "far", time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"other", []any{"str", stringer{"x y"}, "strp", &stringer{"p"}, "struct", struct {
			A int
			B string
		}{1, "two"}, "map", map[string]int{"k": 1}, "kind", kind(3), "nilany", nil, "ptr", (*int)(nil)}},
		{"bad keys", []any{"k", 1, 42, "lone"}},
		{"odd", []any{"k", 1, "lonely"}},
		{"non-string key", []any{time.Second, "k", "v"}},
		{"empty key", []any{"", nil, "", 1, "after", "x"}},
		{"key needs quoting", []any{"a b", 1, "", "v", "k=v", 2}},
	}
	for _, tm := range []time.Time{at, at.In(zone), time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} {
		for _, c := range cases {
			for _, lv := range []Level{LevelDebug, LevelInfo, LevelWarn, LevelError, LevelInfo + 2, LevelDebug - 1, LevelError + 9} {
				want := slogLine(t, tm, lv, c.msg, c.args...)
				got := string(appendLine(nil, tm, lv, c.msg, nil, c.args))
				if got != want {
					t.Errorf("%s at %v level %d:\n got %q\nwant %q", c.msg, tm, lv, got, want)
				}
			}
		}
	}
}

var timeField = regexp.MustCompile(`^time=\S+ `)

// TestLoggerMatchesSlog drives both loggers end to end, With and a changing
// level included, and compares what they wrote apart from the clock.
func TestLoggerMatchesSlog(t *testing.T) {
	var mine, theirs bytes.Buffer
	lv, slv := new(LevelVar), new(slog.LevelVar)
	l := New(&mine, lv).With("component", "dns watchdog", "n", 1)
	s := slog.New(slog.NewTextHandler(&theirs, &slog.HandlerOptions{Level: slv})).With("component", "dns watchdog", "n", 1)
	emit := func() {
		l.Debug("debug line", "k", "v")
		s.Debug("debug line", "k", "v")
		l.Info("info line", "err", errors.New("boom"))
		s.Info("info line", "err", errors.New("boom"))
		l.Warn("warn line")
		s.Warn("warn line")
		l.Error("error line", "d", time.Second)
		s.Error("error line", "d", time.Second)
		l.With("extra", "x y").Info("nested")
		s.With("extra", "x y").Info("nested")
	}
	emit()
	lv.Set(LevelDebug)
	slv.Set(slog.LevelDebug)
	emit()
	lv.Set(LevelError)
	slv.Set(slog.LevelError)
	emit()

	strip := func(out string) []string {
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		for i, ln := range lines {
			if !timeField.MatchString(ln) {
				t.Fatalf("line without time: %q", ln)
			}
			lines[i] = timeField.ReplaceAllString(ln, "")
		}
		return lines
	}
	got, want := strip(mine.String()), strip(theirs.String())
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logger output differs:\n got %q\nwant %q", got, want)
	}
	if len(got) != 4+5+1 {
		t.Fatalf("%d lines written, want 10 (4 at info, 5 at debug, 1 at error): %q", len(got), got)
	}
}

func TestEnabledAndDiscard(t *testing.T) {
	lv := new(LevelVar)
	l := New(&bytes.Buffer{}, lv)
	if l.Enabled(LevelDebug) || !l.Enabled(LevelInfo) {
		t.Fatal("a zero LevelVar must mean info")
	}
	lv.Set(LevelDebug)
	if !l.Enabled(LevelDebug) {
		t.Fatal("Set(LevelDebug) did not enable debug")
	}
	if d := Discard(); d.Enabled(LevelError) {
		t.Fatal("Discard is enabled at error")
	}
	Discard().Error("nothing", "k", "v") // must not panic
}

// TestConcurrentLinesWhole checks each line reaches the writer whole even
// from many goroutines through loggers sharing a writer via With.
func TestConcurrentLinesWhole(t *testing.T) {
	w := &lineCheck{}
	base := New(w, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		l := base.With("g", g)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				l.Info("tick", "i", i)
			}
		}()
	}
	wg.Wait()
	if w.bad != "" || w.n != 1600 {
		t.Fatalf("%d writes, bad %q", w.n, w.bad)
	}
}

type lineCheck struct {
	n   int
	bad string
}

func (w *lineCheck) Write(p []byte) (int, error) {
	w.n++ // racy if the logger does not serialise writes: go test -race sees it
	if bytes.Count(p, []byte("\n")) != 1 || p[len(p)-1] != '\n' {
		w.bad = string(p)
	}
	return len(p), nil
}

// FuzzMatchesSlog compares the two on arbitrary message, key and value
// strings (quoting is the part easy to get subtly wrong).
func FuzzMatchesSlog(f *testing.F) {
	for _, s := range []string{"", "a b", `"`, "=", "\\", "\x7f", "\x00", "\xff", "é", "\u00a0", "\u2028", "\U0001F600", "a\u0301"} {
		f.Add(s, s, s)
	}
	at := time.Date(2026, 12, 2, 18, 1, 39, 130_000_000, time.UTC)
	f.Fuzz(func(t *testing.T, msg, key, val string) {
		args := []any{key, val, "err", errors.New(val), "lone", key}
		want := slogLine(t, at, LevelWarn, msg, args...)
		if got := string(appendLine(nil, at, LevelWarn, msg, nil, args)); got != want {
			t.Fatalf("\n got %q\nwant %q", got, want)
		}
	})
}
