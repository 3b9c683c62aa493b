package probe

// The HTTP 204 check, written by hand over the uplink-bound connection the
// echo probe uses: one GET and the status line. net/http with https would
// link net/http, crypto/tls and crypto/x509 and take the package 1.3 MB past
// its 2.5 MB budget for 16 MB routers (BENCHMARKS.md, Size); a 204 check
// needs neither TLS nor headers nor a body.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// URL is a probe_url split for the request: http:// only.
type URL struct {
	Host   string // a host name, an IPv4 address or an IPv6 one (without brackets)
	Port   uint16 // 80 unless given
	Target string // the request target: path and query, at least "/"
	// authority is the Host header: host[:port] as written.
	authority string
}

func (u URL) String() string { return "http://" + u.authority + u.Target }

// ErrHTTPS says why probe_url takes no https:// URL.
var ErrHTTPS = errors.New("https is not supported: TLS would make connmgr too big for 16 MB routers, and a 204 check needs no TLS")

// ParseURL splits an http://HOST[:PORT][/PATH] URL. It refuses what the
// request line or Host header could not carry as written: user
// information, a fragment, an IPv6 literal with a zone, spaces, control
// and non-ASCII bytes (write them %XX-escaped). An IPv6 literal is
// written in brackets: http://[2001:db8::1]:8080/.
func ParseURL(s string) (URL, error) {
	const scheme = "http://"
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		if len(s) >= len("https://") && strings.EqualFold(s[:len("https://")], "https://") {
			return URL{}, ErrHTTPS
		}
		return URL{}, errors.New("not an http:// URL")
	}
	rest := s[len(scheme):]
	end := strings.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	u := URL{authority: rest[:end], Port: 80, Target: rest[end:]}
	if strings.HasPrefix(u.Target, "?") {
		u.Target = "/" + u.Target
	}
	if u.Target == "" {
		u.Target = "/"
	}
	if strings.Contains(u.authority, "@") {
		return URL{}, errors.New("user information (user@) is not supported")
	}
	u.Host = u.authority
	port := ""
	if rest, ok := strings.CutPrefix(u.authority, "["); ok {
		h, after, ok := strings.Cut(rest, "]")
		a, err := netip.ParseAddr(h)
		switch {
		case !ok:
			return URL{}, fmt.Errorf("host %q: no closing bracket", u.authority)
		case err != nil || !a.Is6() || a.Is4In6() || a.Zone() != "":
			return URL{}, fmt.Errorf("host %q is not an IPv6 address without a zone", h)
		case after != "" && after[0] != ':':
			return URL{}, fmt.Errorf("%q after the IPv6 address: want :PORT", after)
		}
		u.Host, port = h, strings.TrimPrefix(after, ":")
		if after == "" {
			port = "80"
		}
	} else if i := strings.LastIndexByte(u.authority, ':'); i >= 0 {
		u.Host, port = u.authority[:i], u.authority[i+1:]
	} else {
		port = "80"
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return URL{}, fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	u.Port = uint16(p)
	if !probeHost(u.Host) || port != "" && !strings.HasPrefix(u.authority, "[") && strings.Contains(u.Host, ":") {
		return URL{}, fmt.Errorf("host %q is not a host name or an IP address (an IPv6 one in brackets)", u.Host)
	}
	for i := 0; i < len(u.Target); i++ {
		if c := u.Target[i]; c <= ' ' || c >= 0x7f || c == '#' {
			return URL{}, fmt.Errorf("path %q holds %q: spaces, control and non-ASCII bytes must be %%XX-escaped, and a fragment (#) is not sent", u.Target, c)
		}
	}
	return u, nil
}

// probeHost says whether h can be resolved and dialled: an IP literal
// without a zone, or a name of letters, digits, '-', '_' and dots.
func probeHost(h string) bool {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Zone() == ""
	}
	if h == "" || len(h) > 253 || h[0] == '.' || strings.Contains(h, "..") {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// request is the whole GET: the connection closes after the answer.
func (u URL) request() []byte {
	return []byte("GET " + u.Target + " HTTP/1.1\r\nHost: " + u.authority +
		"\r\nConnection: close\r\nUser-Agent: connmgr\r\n\r\n")
}

// maxStatusLine bounds the status line read: "HTTP/1.1 204 No Content"
// is 23 bytes; a longer line is no answer a 204 check accepts.
const maxStatusLine = 256

// answered marks a failure that is the far end's answer (a status other
// than 204, bytes that are not HTTP): asking again within the round would
// get the same answer, so the round ends with it.
type answered struct{ error }

func (a answered) Unwrap() error { return a.error }

// get204 is one HTTP attempt: GET u from dst through the uplink; only a
// 204 status succeeds.
func get204(ctx context.Context, t Target, dst netip.AddrPort, u URL) error {
	c, release, err := t.connect(ctx, dst)
	if err != nil {
		return fmt.Errorf("http %s (%s): %w", u, dst, err)
	}
	defer release()
	if _, err := c.Write(u.request()); err != nil {
		return intercepted{fmt.Errorf("http %s (%s): send: %w", u, dst, err)}
	}
	code, err := readStatus(c)
	if err != nil {
		return intercepted{fmt.Errorf("http %s (%s): %w", u, dst, err)}
	}
	if code != 204 {
		return intercepted{answered{fmt.Errorf("http %s (%s): status %d, want 204", u, dst, code)}}
	}
	return nil
}

// readStatus reads the status line from r, at most maxStatusLine bytes,
// and returns its status code. A line that is complete (or over-long) but
// not a valid status line is an answered error; a connection that closes
// or times out before the line ends is a plain one.
func readStatus(r io.Reader) (int, error) {
	var buf [maxStatusLine]byte
	n := 0
	for {
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			code, err := ParseStatusLine(bytes.TrimSuffix(buf[:i], []byte("\r")))
			if err != nil {
				return 0, answered{err}
			}
			return code, nil
		}
		if n == len(buf) {
			return 0, answered{fmt.Errorf("status line longer than %d bytes", maxStatusLine)}
		}
		m, err := r.Read(buf[n:])
		n += m
		if err == nil || m > 0 && bytes.IndexByte(buf[n-m:n], '\n') >= 0 {
			continue
		}
		switch {
		case n == 0 && err == io.EOF:
			return 0, errors.New("connection closed without an answer")
		case n == 0:
			return 0, fmt.Errorf("no answer: %w", err)
		case err == io.EOF:
			return 0, fmt.Errorf("status line cut short after %d bytes: %q", n, buf[:n])
		default:
			return 0, fmt.Errorf("status line cut short after %d bytes (%q): %w", n, buf[:n], err)
		}
	}
}

// ParseStatusLine returns the status code of an HTTP/1.x status line
// given without its line end: "HTTP/1.1 204 No Content". The reason
// phrase may be empty or missing; the code is three digits, 100 to 599.
func ParseStatusLine(line []byte) (int, error) {
	const proto = "HTTP/1."
	if len(line) < len(proto)+1+4 || string(line[:len(proto)]) != proto || !isDigit(line[len(proto)]) || line[len(proto)+1] != ' ' {
		return 0, fmt.Errorf("malformed status line %q: want HTTP/1.x and a status code", line)
	}
	c := line[len(proto)+2:]
	if !isDigit(c[0]) || !isDigit(c[1]) || !isDigit(c[2]) || len(c) > 3 && c[3] != ' ' {
		return 0, fmt.Errorf("malformed status line %q: the status code is not three digits", line)
	}
	code := int(c[0]-'0')*100 + int(c[1]-'0')*10 + int(c[2]-'0')
	if code < 100 || code > 599 {
		return 0, fmt.Errorf("malformed status line %q: status code %d outside 100-599", line, code)
	}
	return code, nil
}

func isDigit(b byte) bool { return b >= '0' && b <= '9' }
