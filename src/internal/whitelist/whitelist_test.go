package whitelist

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// seed is the production whitelist of the seed system.
const seed = `# Afero cloud servers
conclave.afero.io
conclave-stream.afero.io
echo.afero.io
squirrel.usw2prod.afero.io
otacdn.afero.io
otacdn*.afero.io
aft.afero.io
*.afero.io
`

func TestSeedList(t *testing.T) {
	l, err := Parse("whitelist", strings.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 8 || len(l.Prefixes()) != 0 {
		t.Fatalf("Len = %d, prefixes %v", l.Len(), l.Prefixes())
	}
	for name, want := range map[string]bool{
		"conclave.afero.io":          true,
		"CONCLAVE.Afero.IO":          true,
		"conclave.afero.io.":         true,
		"conclave-stream.afero.io":   true,
		"echo.afero.io":              true,
		"squirrel.usw2prod.afero.io": true,
		"otacdn.afero.io":            true,
		"otacdn7.afero.io":           true,
		"aft.afero.io":               true,
		"a.afero.io":                 true, // *.afero.io
		"a.b.afero.io":               true, // '*' spans labels
		"afero.io":                   false,
		".afero.io":                  false,
		"afero.io.":                  false,
		"conclave.afero.io.evil.com": false,
		"xafero.io":                  false,
		"evil.com":                   false,
		"afero.io.evil.com":          false,
		"conclave.afero.io..":        false,
		"":                           false,
		".":                          false,
		"a..afero.io":                false,
	} {
		if got := l.Match(name); got != want {
			t.Errorf("Match(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestMatchRules(t *testing.T) {
	cases := []struct {
		list, name string
		want       bool
	}{
		{"conclave.afero.io", "conclave.afero.io", true},
		{"conclave.afero.io", "xconclave.afero.io", false},
		{"conclave.afero.io", "conclave.afero.io.evil.com", false},
		{"conclave.afero.io", "onclave.afero.io", false},
		{"conclave.afero.io", "conclave.afero.i", false},
		{"Conclave.Afero.IO.", "conclave.afero.io", true}, // entries are case-insensitive too
		{"otacdn*.afero.io", "otacdn7.afero.io", true},
		{"otacdn*.afero.io", "otacdn.afero.io", false}, // '*' is one or more characters
		{"otacdn*.afero.io", "otacdnx.y.afero.io", true},
		{"otacdn*.afero.io", "xotacdn7.afero.io", false},
		{"otacdn*.afero.io", "otacdn7.afero.io.evil", false},
		{"*.afero.io", "afero.io", false},
		{"*.afero.io", "x.afero.io", true},
		{"*.afero.io", "x.afero.iox", false},
		{"*.afero.io", "x.xafero.io", false},
		{"*cdn.afero.io", "otacdn.afero.io", true},
		{"*cdn.afero.io", "cdn.afero.io", false},
		{"*cdn.afero.io", "a.bcdn.afero.io", true},
		{"*cdn.afero.io", "acd.afero.io", false},
		{"ota*cdn.afero.io", "ota1cdn.afero.io", true},
		{"ota*cdn.afero.io", "otacdn.afero.io", false},
		{"ota*cdn.afero.io", "otacdncdn.afero.io", true},
		{"*.io", "afero.io", true},
		{"a_b.example", "A_B.example", true},
		{"kelvin.example", "\u212aelvin.example", false}, // only ASCII folds
		{"198.18.0.10", "198.18.0.10", false},            // addresses are prefixes, not names
	}
	for _, c := range cases {
		l, err := Parse("w", strings.NewReader(c.list))
		if err != nil {
			t.Fatalf("%q: %v", c.list, err)
		}
		if got := l.Match(c.name); got != c.want {
			t.Errorf("%q Match(%q) = %v, want %v", c.list, c.name, got, c.want)
		}
	}
}

func TestFileSyntax(t *testing.T) {
	in := "\n   \n# comment\n\t conclave.afero.io \t# trailing comment\r\n" +
		"ECHO.afero.io.\n" +
		"198.18.0.10\n" +
		"198.18.4.0/24   # a prefix\n" +
		"2001:db8::1\n" +
		"2001:db8:1::/48\n" +
		"::ffff:198.18.0.11\n" +
		"conclave.afero.io\n" + // duplicate, counted once
		"198.18.0.10/32\n" // same as the address
	l, err := Parse("w", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(l.Patterns(), ","); got != "conclave.afero.io,echo.afero.io" {
		t.Errorf("Patterns = %s", got)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("198.18.0.10/32"),
		netip.MustParsePrefix("198.18.4.0/24"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("2001:db8:1::/48"),
		netip.MustParsePrefix("198.18.0.11/32"),
	}
	got := l.Prefixes()
	if len(got) != len(want) {
		t.Fatalf("Prefixes = %v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("prefix %d = %v, want %v", i, got[i], want[i])
		}
	}
	if l.Len() != 7 {
		t.Errorf("Len = %d", l.Len())
	}
	// callers get copies
	l.Patterns()[0] = "x"
	l.Prefixes()[0] = netip.Prefix{}
	if l.Patterns()[0] != "conclave.afero.io" || !l.Prefixes()[0].IsValid() {
		t.Error("accessors expose internal slices")
	}
}

func TestHostileLines(t *testing.T) {
	long := strings.Repeat("a", 64)
	cases := []struct {
		in, reason string
		line       int
	}{
		{strings.Repeat("abcdefghi.", 25) + "abcd", "name longer than 253", 1},
		{long + ".afero.io", "label longer than 63", 1},
		{"ok.afero.io\n" + "evil.com; rm -rf /", "character ';'", 2},
		{"$(reboot).afero.io", "character '$'", 1},
		{"`id`.afero.io", "character '`'", 1},
		{"a.afero.io|nc", "character '|'", 1},
		{"a'b.afero.io", "character '''", 1},
		{"a\x00b.afero.io", "byte 0x00", 1},
		{"caf\xc3\xa9.afero.io", "byte 0xc3", 1},
		{"conclave.afero.io echo.afero.io", "white space inside", 1},
		{"*", "needs a domain", 1},
		{"*.", "needs a domain", 1},
		{"otacdn*", "needs a domain", 1},
		{"**.x", "more than one '*'", 1},
		{"a*b*.x", "more than one '*'", 1},
		{"a.*.afero.io", "only allowed in the first label", 1},
		{"afero.*", "only allowed in the first label", 1},
		{"a..b", "empty label", 1},
		{".afero.io", "empty label", 1},
		{"afero.io..", "empty label", 1},
		{"*..io", "empty label", 1},
		{"\n\n198.18.0.256", "not a valid IP address", 3},
		{"host.123", "not a valid IP address", 1},
		{"000.", "not a valid IP address", 1},
		{"198.18.0.5/24", "host bits set in prefix (did you mean 198.18.0.0/24?)", 1},
		{"198.18.0.0/33", "not a valid address prefix", 1},
		{"fe80::1%eth0", "not a valid IP address", 1},
		{"evil.com:80", "not a valid IP address", 1},
		{"http://evil.com/", "not a valid address prefix", 1},
		{"evil.com/x y", "character '/'", 1},
		{"::ffff:198.18.0.0/120", "IPv4-mapped", 1},
	}
	for _, c := range cases {
		_, err := Parse("/etc/af-conn/whitelist", strings.NewReader(c.in))
		var we *Error
		if !errors.As(err, &we) {
			t.Errorf("%q: want error containing %q, got %v", c.in, c.reason, err)
			continue
		}
		if !strings.Contains(we.Reason, c.reason) || we.Line != c.line || we.File != "/etc/af-conn/whitelist" {
			t.Errorf("%q: got %v, want line %d reason %q", c.in, err, c.line, c.reason)
		}
		if !strings.HasPrefix(err.Error(), "/etc/af-conn/whitelist:") {
			t.Errorf("message %q does not start with file:line", err)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing: %v", err)
	}
	path := filepath.Join(dir, "whitelist")
	if err := os.WriteFile(path, []byte(seed), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Load(path)
	if err != nil || !l.Match("echo.afero.io") {
		t.Fatalf("Load: %v", err)
	}
	if err := os.WriteFile(path, []byte("ok.afero.io\nbad name\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":2:") {
		t.Errorf("bad file: %v", err)
	}
	big := strings.Repeat("# padding\n", MaxSize/10+1)
	if _, err := Parse("big", strings.NewReader(big)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("big: %v", err)
	}
}

func TestEmptyList(t *testing.T) {
	l, err := Parse("w", strings.NewReader("# nothing\n"))
	if err != nil {
		t.Fatal(err)
	}
	if l.Len() != 0 || l.Match("afero.io") {
		t.Error("empty list matches")
	}
}

// reference is an independent matcher for one name entry: the entry as a
// regular expression, '*' being ".+", on ASCII-lower-cased strings.
func reference(entry, name string) bool {
	entry = strings.TrimSuffix(entry, ".")
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 || strings.HasPrefix(name, ".") || strings.Contains(name, "..") {
		return false
	}
	re := "^" + strings.ReplaceAll(regexp.QuoteMeta(lowerASCII(entry)), `\*`, "(?s:.+)") + "$"
	return regexp.MustCompile(re).MatchString(lowerASCII(name))
}

func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(seed))
	f.Add([]byte("198.18.0.0/15\n2001:db8::/32 # c\n*.x.y\n"))
	f.Add([]byte("a..b\n"))
	f.Add([]byte("evil.com; rm -rf /\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		l, err := Parse("w", strings.NewReader(string(in)))
		if err != nil {
			var we *Error
			if !errors.As(err, &we) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		// the entries, written back one a line, parse to the same list
		var b strings.Builder
		for _, p := range l.Patterns() {
			b.WriteString(p + "\n")
			if !strings.Contains(p, "*") && !l.Match(p) {
				t.Fatalf("exact entry %q does not match itself", p)
			}
		}
		for _, p := range l.Prefixes() {
			b.WriteString(p.String() + "\n")
		}
		again, err := Parse("w", strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("entries do not parse back: %v\n%s", err, b.String())
		}
		if again.Len() != l.Len() {
			t.Fatalf("Len %d, after round trip %d", l.Len(), again.Len())
		}
	})
}

func FuzzMatch(f *testing.F) {
	f.Add("otacdn*.afero.io", "otacdn7.afero.io")
	f.Add("*.afero.io", "a.b.afero.io")
	f.Add("*cdn.afero.io", "cdn.afero.io")
	f.Add("conclave.afero.io", "CONCLAVE.afero.io.")
	f.Fuzz(func(t *testing.T, entry, name string) {
		l, err := Parse("w", strings.NewReader(entry))
		if err != nil || len(l.Patterns()) != 1 || strings.ContainsAny(entry, "#\n") {
			return
		}
		pattern := l.Patterns()[0]
		if got, want := l.Match(name), reference(pattern, name); got != want {
			t.Fatalf("entry %q Match(%q) = %v, reference says %v", pattern, name, got, want)
		}
	})
}

// BenchmarkMatch: the matcher runs for every name in every DNS answer.
func BenchmarkMatch(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(seed)
	for i := 0; i < 200; i++ { // a long list: exact names and wildcards
		sb.WriteString("host" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + ".example" + string(rune('a'+i%26)) + ".com\n")
		if i%10 == 0 {
			sb.WriteString("cdn" + string(rune('a'+i%26)) + "*.example.net\n")
		}
	}
	l, err := Parse("w", strings.NewReader(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, q string }{
		{"exact", "conclave.afero.io"},
		{"wildcard", "a.b.afero.io"},
		{"miss", "www.example.org"},
		{"miss-deep", "a.b.c.d.e.f.g.h.example.org."},
		{"upper", "Conclave.Afero.IO"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				l.Match(c.q)
			}
		})
	}
}
