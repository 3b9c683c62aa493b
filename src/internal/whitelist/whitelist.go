// Package whitelist owns the whitelist file (/etc/af-conn/whitelist): the
// cloud servers the locked-down firewall lets through. It parses the file
// strictly (a bad line is an error naming file and line) and answers, for
// every name in a DNS answer, whether it is whitelisted.
//
// File format, one entry a line; blank lines, surrounding white space and
// '#' comments (whole-line or trailing) are ignored:
//
//	conclave.afero.io     exact host name (case-insensitive, a trailing dot is allowed)
//	*.afero.io            '*' in the first label matches one or more characters,
//	otacdn*.afero.io      across labels too: *.afero.io matches a.b.afero.io, not afero.io
//	198.18.0.10           an IPv4 or IPv6 address
//	198.18.4.0/24         an address prefix (CIDR); host bits must be zero
//
// Names are otherwise matched exactly: no prefix or suffix matching, so
// conclave.afero.io matches neither xconclave.afero.io nor
// conclave.afero.io.evil.com.
package whitelist

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
)

// MaxSize bounds the file: a whitelist is a few dozen lines.
const MaxSize = 1 << 20

const (
	maxName  = 253
	maxLabel = 63
)

// List is a parsed whitelist. It is immutable after Parse, so one List may
// be read from many goroutines.
type List struct {
	exact    map[string]struct{}
	wild     map[string][]wildcard // by domain
	nwild    int
	patterns []string
	prefixes []netip.Prefix
}

// wildcard is a name entry prefix*tail.domain split where the first label
// ends: "otacdn*.afero.io" is {"otacdn", "", ".afero.io"}. '*' matches one
// or more bytes, dots included.
type wildcard struct {
	prefix, tail, domain string
}

// Error is the first bad line of a whitelist file.
type Error struct {
	File   string
	Line   int
	Entry  string
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d: whitelist entry %q: %s", e.File, e.Line, e.Entry, e.Reason)
}

// ErrTooLarge is returned (wrapped) for a file over MaxSize.
var ErrTooLarge = errors.New("whitelist: file larger than 1 MiB")

// Load parses the whitelist file at path. A missing file gives an error
// for which errors.Is(err, os.ErrNotExist) holds.
func Load(path string) (*List, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	return Parse(path, f)
}

// Parse reads a whitelist; file names it in errors. On the first bad line it
// returns an *Error with the file, the line and the reason, and no List:
// a caller reloading the whitelist keeps using its last good List and
// reports the error.
func Parse(file string, r io.Reader) (*List, error) {
	data, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%s: %w", file, ErrTooLarge)
	}
	l := &List{exact: map[string]struct{}{}, wild: map[string][]wildcard{}}
	seen := map[string]bool{}
	for n, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		entry := strings.TrimSpace(line)
		if entry == "" {
			continue
		}
		if reason := l.add(entry, seen); reason != "" {
			return nil, &Error{File: file, Line: n + 1, Entry: entry, Reason: reason}
		}
	}
	return l, nil
}

// add parses one entry into l and returns why it is bad, or "".
func (l *List) add(entry string, seen map[string]bool) string {
	if isAddrLike(entry) {
		p, reason := parseAddr(entry)
		if reason != "" {
			return reason
		}
		if !seen[p.String()] {
			seen[p.String()] = true
			l.prefixes = append(l.prefixes, p)
		}
		return ""
	}
	name := asciiLower(strings.TrimSuffix(entry, "."))
	if looksNumeric(name) {
		return badAddr
	}
	if reason := checkName(name); reason != "" {
		return reason
	}
	if seen[name] {
		return ""
	}
	seen[name] = true
	l.patterns = append(l.patterns, name)
	star := strings.IndexByte(name, '*')
	if star < 0 {
		l.exact[name] = struct{}{}
		return ""
	}
	dot := strings.IndexByte(name, '.') // after the star: checkName allows '*' only in the first label
	w := wildcard{prefix: name[:star], tail: name[star+1 : dot], domain: name[dot:]}
	l.wild[w.domain] = append(l.wild[w.domain], w)
	l.nwild++
	return ""
}

// isAddrLike: the entry is meant as an address or prefix (and is reported
// as a bad one if it is not valid).
func isAddrLike(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(isAlnum(c) || c == '.' || c == ':' || c == '/' || c == '%') {
			return false
		}
	}
	return strings.ContainsAny(s, ":/") || looksNumeric(s)
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// looksNumeric: a last label of digits only is an address (or a typo of
// one), never a host name.
func looksNumeric(s string) bool {
	last := s[strings.LastIndexByte(s, '.')+1:]
	if last == "" {
		return false
	}
	for i := 0; i < len(last); i++ {
		if last[i] < '0' || last[i] > '9' {
			return false
		}
	}
	return true
}

const badAddr = "not a valid IP address (and a host name's last label cannot be all digits)"

func parseAddr(entry string) (netip.Prefix, string) {
	if strings.Contains(entry, "/") {
		p, err := netip.ParsePrefix(entry)
		if err != nil {
			return p, "not a valid address prefix (want ADDRESS/BITS, e.g. 198.18.4.0/24)"
		}
		if p.Addr().Is4In6() {
			return p, "IPv4-mapped IPv6 prefix: write the IPv4 prefix"
		}
		if m := p.Masked(); m != p {
			return p, fmt.Sprintf("host bits set in prefix (did you mean %s?)", m)
		}
		return p, ""
	}
	a, err := netip.ParseAddr(entry)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, badAddr
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), ""
}

// checkName validates a lower-cased host name entry without its trailing dot.
func checkName(name string) string {
	if len(name) > maxName {
		return fmt.Sprintf("name longer than %d characters", maxName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(isAlnum(c) || c == '-' || c == '_' || c == '.' || c == '*') {
			if c == ' ' || c == '\t' {
				return "white space inside an entry (one entry a line)"
			}
			what := fmt.Sprintf("character '%c'", c)
			if c < 0x20 || c >= 0x7f {
				what = fmt.Sprintf("byte 0x%02x", c)
			}
			return what + " not allowed (host names use A-Z a-z 0-9 - _ . and a leading *)"
		}
	}
	labels := strings.Split(name, ".")
	for i, label := range labels {
		if label == "" {
			return "empty label"
		}
		if len(label) > maxLabel {
			return fmt.Sprintf("label longer than %d characters", maxLabel)
		}
		if i > 0 && strings.Contains(label, "*") {
			return "'*' is only allowed in the first label"
		}
	}
	if stars := strings.Count(labels[0], "*"); stars > 1 {
		return "more than one '*'"
	}
	if strings.Contains(labels[0], "*") && len(labels) < 2 {
		return "a wildcard needs a domain after its first label (e.g. *.afero.io)"
	}
	return ""
}

// Match reports whether the host name (presentation form, as in a DNS
// answer; case-insensitive; one trailing dot allowed) is whitelisted by a
// name entry. Malformed names (empty labels, over 253 characters) never
// match. Addresses are not names: see Prefixes.
func (l *List) Match(name string) bool {
	if len(name) > 0 && name[len(name)-1] == '.' {
		name = name[:len(name)-1]
	}
	if len(name) == 0 || len(name) > maxName || name[0] == '.' || strings.Contains(name, "..") {
		return false
	}
	name = asciiLower(name)
	if _, ok := l.exact[name]; ok {
		return true
	}
	if l.nwild == 0 {
		return false
	}
	// a wildcard's domain is the name from one of its dots on: look up
	// each; then the '*' must cover at least one byte between the prefix
	// and the tail
	for i := 1; i < len(name); i++ {
		if name[i] != '.' {
			continue
		}
		for _, w := range l.wild[name[i:]] {
			t := i - len(w.tail)
			if t > len(w.prefix) && name[t:i] == w.tail && name[:len(w.prefix)] == w.prefix {
				return true
			}
		}
	}
	return false
}

// asciiLower folds A-Z only: DNS names compare case-insensitively in ASCII
// alone (strings.ToLower would also fold, say, the Kelvin sign to 'k').
// It allocates only when s has an upper-case letter.
func asciiLower(s string) string {
	i := 0
	for i < len(s) && !(s[i] >= 'A' && s[i] <= 'Z') {
		i++
	}
	if i == len(s) {
		return s
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		if b[i] >= 'A' && b[i] <= 'Z' {
			b[i] += 'a' - 'A'
		}
	}
	return string(b)
}

// Prefixes returns the address entries, single addresses as /32 or /128,
// in file order.
func (l *List) Prefixes() []netip.Prefix {
	return append([]netip.Prefix(nil), l.prefixes...)
}

// Patterns returns the host name entries (exact and wildcard), lower case,
// without trailing dot, in file order.
func (l *List) Patterns() []string {
	return append([]string(nil), l.patterns...)
}

// Len is the number of distinct entries, names and addresses.
func (l *List) Len() int {
	return len(l.patterns) + len(l.prefixes)
}
