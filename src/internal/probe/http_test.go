package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"
)

func TestParseURL(t *testing.T) {
	ok := []struct {
		in, host string
		port     uint16
		target   string
		request  string // the request's first two lines
	}{
		{"http://echo.afero.io/generate_204", "echo.afero.io", 80, "/generate_204", "GET /generate_204 HTTP/1.1\r\nHost: echo.afero.io\r\n"},
		{"HTTP://198.18.0.1:8204/g?a=1&b=%20", "198.18.0.1", 8204, "/g?a=1&b=%20", "GET /g?a=1&b=%20 HTTP/1.1\r\nHost: 198.18.0.1:8204\r\n"},
		{"http://a-b_c.example", "a-b_c.example", 80, "/", "GET / HTTP/1.1\r\nHost: a-b_c.example\r\n"},
		{"http://x:65535?q", "x", 65535, "/?q", "GET /?q HTTP/1.1\r\nHost: x:65535\r\n"},
		{"http://host.:81/", "host.", 81, "/", "GET / HTTP/1.1\r\nHost: host.:81\r\n"},
		{"http://[2001:db8::1]/g", "2001:db8::1", 80, "/g", "GET /g HTTP/1.1\r\nHost: [2001:db8::1]\r\n"},
		{"http://[2001:DB8::1]:8204?q", "2001:DB8::1", 8204, "/?q", "GET /?q HTTP/1.1\r\nHost: [2001:DB8::1]:8204\r\n"},
	}
	for _, c := range ok {
		u, err := ParseURL(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if u.Host != c.host || u.Port != c.port || u.Target != c.target {
			t.Errorf("%q: %+v", c.in, u)
		}
		want := c.request + "Connection: close\r\nUser-Agent: connmgr\r\n\r\n"
		if got := string(u.request()); got != want {
			t.Errorf("%q: request %q, want %q", c.in, got, want)
		}
	}
	bad := []struct{ in, why string }{
		{"https://echo.afero.io/generate_204", "https is not supported: TLS would make connmgr too big"},
		{"HTTPS://x/", "https is not supported"},
		{"ftp://x/", "not an http:// URL"},
		{"echo.afero.io/generate_204", "not an http:// URL"},
		{"http//x", "not an http:// URL"},
		{"", "not an http:// URL"},
		{"http://", "host \"\""},
		{"http:///path", "host \"\""},
		{"http://:80/", "host \"\""},
		{"http://user:pw@x/", "user information"},
		{"http://[2001:db8::1%eth0]/", "not an IPv6 address without a zone"},
		{"http://[198.18.0.1]/", "not an IPv6 address"},
		{"http://[::ffff:198.18.0.1]/", "not an IPv6 address"},
		{"http://[2001:db8::1/", "no closing bracket"},
		{"http://[2001:db8::1]x/", "after the IPv6 address"},
		{"http://[2001:db8::1]:0/", "port \"0\""},
		{"http://[2001:db8::1]:/", "port \"\""},
		{"http://::1:80/", "host \"::1\""},
		{"http://2001:db8::1/", "host \"2001:db8:\""},
		{"http://x:0/", "port \"0\""},
		{"http://x:65536/", "port \"65536\""},
		{"http://x:/", "port \"\""},
		{"http://x:8a/", "port \"8a\""},
		{"http://x y/", "host \"x y\""},
		{"http://x..y/", "host"},
		{"http://.x/", "host"},
		{"http://x/a b", "path \"/a b\""},
		{"http://x/a\r\nInjected: 1", "path"},
		{"http://x/\xc3\xa9", "path"},
		{"http://x/#frag", "fragment"},
		{"http://x#frag", "fragment"},
	}
	for _, c := range bad {
		if u, err := ParseURL(c.in); err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("%q: %+v, %v; want an error saying %q", c.in, u, err, c.why)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"http://echo.afero.io/generate_204", "http://198.18.0.1:8204/?a", "https://x/",
		"http://x:99999/", "http://[::1]:80/", "http://[2001:db8::1]/", "http://[fe80::1%25eth0]/", "http://u@x/", "http://x/a\r\nb", "http://x?#"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s)
		if err != nil {
			return
		}
		if u.Host == "" || u.Port == 0 || !strings.HasPrefix(u.Target, "/") {
			t.Fatalf("%q: %+v", s, u)
		}
		// The request must be exactly one request line and fixed headers:
		// nothing in the URL can end a line or a field early.
		req := string(u.request())
		lines := strings.Split(req, "\r\n")
		if len(lines) != 6 || strings.Count(lines[0], " ") != 2 || strings.ContainsAny(lines[1][len("Host: "):], " \r\n\x00") {
			t.Fatalf("%q: request %q", s, req)
		}
		if u2, err := ParseURL(u.String()); err != nil || u2 != u {
			t.Fatalf("%q: String() %q parses to %+v, %v", s, u.String(), u2, err)
		}
	})
}

func TestParseStatusLine(t *testing.T) {
	ok := []struct {
		in   string
		code int
	}{
		{"HTTP/1.1 204 No Content", 204},
		{"HTTP/1.0 204 No Content", 204},
		{"HTTP/1.1 204", 204},
		{"HTTP/1.1 204 ", 204},
		{"HTTP/1.1 302 Found", 302},
		{"HTTP/1.1 200 OK", 200},
		{"HTTP/1.1 100 Continue", 100},
		{"HTTP/1.1 599 x\x00y", 599},
	}
	for _, c := range ok {
		if code, err := ParseStatusLine([]byte(c.in)); err != nil || code != c.code {
			t.Errorf("%q: %d, %v; want %d", c.in, code, err, c.code)
		}
	}
	for _, in := range []string{"", "HTTP/1.1", "HTTP/1.1 ", "HTTP/1.1 20", "HTTP/1.1 2040", "HTTP/1.1 204x",
		"HTTP/2 204", "HTTP/1.1  204", "http/1.1 204", "HTTP/1.x 204", "HTTP/1.1 099 x", "HTTP/1.1 600 x",
		"HTTP/1.1 -04", "SSH-2.0-OpenSSH_9.2", " HTTP/1.1 204"} {
		if code, err := ParseStatusLine([]byte(in)); err == nil || !strings.Contains(err.Error(), "malformed status line") {
			t.Errorf("%q: %d, %v; want malformed", in, code, err)
		}
	}
}

func TestReadStatus(t *testing.T) {
	long := "HTTP/1.1 204 " + strings.Repeat("x", maxStatusLine) + "\r\n"
	for _, c := range []struct {
		in       string
		code     int
		why      string
		answered bool
	}{
		{"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", 204, "", false},
		{"HTTP/1.1 204 No Content\n", 204, "", false},
		{"HTTP/1.1 302 Found\r\nLocation: http://portal/\r\n\r\n", 302, "", false},
		{"SSH-2.0-OpenSSH_9.2\r\n", 0, "malformed status line", true},
		{"HTTP/1.1 204\r\r\n", 0, "malformed status line", true},
		{long, 0, "longer than 256 bytes", true},
		{"HTTP/1.1 20", 0, "cut short after 11 bytes", false},
		{"HTTP/1.1 204 No Content", 0, "cut short", false},
		{"", 0, "closed without an answer", false},
	} {
		for _, r := range []io.Reader{strings.NewReader(c.in), iotest.OneByteReader(strings.NewReader(c.in))} {
			code, err := readStatus(r)
			if code != c.code || (err == nil) != (c.why == "") || err != nil && !strings.Contains(err.Error(), c.why) ||
				errors.As(err, new(answered)) != c.answered {
				t.Errorf("%.40q: %d, %v; want %d, %q (answered %v)", c.in, code, err, c.code, c.why, c.answered)
			}
		}
	}
	// A read error (the round's deadline) before any byte is no answer;
	// after some, the line is cut short. Neither is the far end's answer.
	if _, err := readStatus(iotest.ErrReader(iotest.ErrTimeout)); err == nil || !strings.Contains(err.Error(), "no answer: timeout") ||
		errors.As(err, new(answered)) {
		t.Errorf("timeout: %v", err)
	}
	if _, err := readStatus(iotest.TimeoutReader(strings.NewReader("HTTP/1.1 2"))); err == nil ||
		!strings.Contains(err.Error(), "cut short after 10 bytes") || !errors.Is(err, iotest.ErrTimeout) || errors.As(err, new(answered)) {
		t.Errorf("timeout after a part: %v", err)
	}
}

// FuzzParseStatusLine reads arbitrary bytes as a server's answer: never a
// crash, the same result however the bytes arrive, and a code only from a
// well-formed HTTP/1.x line.
func FuzzParseStatusLine(f *testing.F) {
	for _, s := range []string{"HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.0 302 Found\r\nLocation: /\r\n",
		"HTTP/1.1 204", "SSH-2.0-x\r\n", "\r\n", "HTTP/1.1 99 x\r\n", strings.Repeat("H", 300)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		code, err := readStatus(bytes.NewReader(b))
		code1, err1 := readStatus(iotest.OneByteReader(bytes.NewReader(b)))
		if code != code1 || (err == nil) != (err1 == nil) {
			t.Fatalf("%q: %d, %v whole; %d, %v byte by byte", b, code, err, code1, err1)
		}
		if err != nil {
			if code != 0 {
				t.Fatalf("%q: code %d with error %v", b, code, err)
			}
			return
		}
		line, _, _ := bytes.Cut(b, []byte("\n"))
		if code < 100 || code > 599 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || len(line) > maxStatusLine ||
			!bytes.HasPrefix(line[9:], []byte(fmt.Sprint(code))) {
			t.Fatalf("%q: code %d", b, code)
		}
		if c2, err := ParseStatusLine(bytes.TrimSuffix(line, []byte("\r"))); c2 != code || err != nil {
			t.Fatalf("%q: parse %d, %v; read %d", b, c2, err, code)
		}
	})
}

// The round's reason is the first attempt's, however the later ones end.
func TestHedgedReason(t *testing.T) {
	errFirst := errors.New("first attempt: no byte back: i/o timeout")
	var n atomic.Int32
	_, err := hedged(withTimeout(t, 300*time.Millisecond), 20*time.Millisecond, func(ctx context.Context) error {
		if n.Add(1) == 1 {
			<-ctx.Done()
			return errFirst
		}
		<-ctx.Done() // later attempts end in other ways at the deadline
		return fmt.Errorf("attempt %d: dial: operation was canceled", n.Load())
	})
	if err != errFirst || n.Load() < 2 {
		t.Fatalf("%d attempts, round error %v; want %v", n.Load(), err, errFirst)
	}
	// The first attempt failing at once (connection refused) still gives
	// the reason, though later attempts run on to the deadline.
	n.Store(0)
	_, err = hedged(withTimeout(t, 300*time.Millisecond), 20*time.Millisecond, func(ctx context.Context) error {
		if n.Add(1) == 1 {
			return errFirst
		}
		<-ctx.Done()
		return ctx.Err()
	})
	if err != errFirst {
		t.Fatalf("round error %v; want %v", err, errFirst)
	}
}

func TestHedgedEnds(t *testing.T) {
	// A later attempt's success wins over the first one's failure, and the
	// round returns only once the others have stopped: none is left
	// running (inside the uplink's namespace, holding a socket).
	var n, live atomic.Int32
	start := time.Now()
	var wonAt time.Time
	at, err := hedged(withTimeout(t, time.Minute), time.Millisecond, func(ctx context.Context) error {
		live.Add(1)
		defer live.Add(-1)
		if n.Add(1) == 3 {
			wonAt = time.Now()
			return nil
		}
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // slow to notice the end
		return ctx.Err()
	})
	if err != nil || live.Load() != 0 {
		t.Fatalf("third attempt succeeded: round %v, %d attempts still running", err, live.Load())
	}
	if at.Before(wonAt) || at.Sub(start) > time.Since(start)-15*time.Millisecond {
		t.Fatalf("decided at %v, success at %v, returned at %v: the time must be the success's, not the wait's",
			at.Sub(start), wonAt.Sub(start), time.Since(start))
	}
	// The far end's answer ends the round at once: no waiting for the
	// timeout (a minute), no further attempts.
	n.Store(0)
	portal := answered{errors.New("status 302, want 204")}
	_, err = hedged(withTimeout(t, time.Minute), time.Hour, func(ctx context.Context) error {
		n.Add(1)
		return portal
	})
	if err != error(portal) || n.Load() != 1 {
		t.Fatalf("%d attempts, round error %v; want %v", n.Load(), err, portal)
	}
	// Attempts never exceed maxAttempts, however short the hedge.
	n.Store(0)
	hedged(withTimeout(t, 200*time.Millisecond), time.Microsecond, func(ctx context.Context) error {
		n.Add(1)
		return errors.New("refused")
	})
	if n.Load() > maxAttempts {
		t.Fatalf("%d attempts", n.Load())
	}
}

func withTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
