package probe

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

func world(t *testing.T) *testbed.World {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0", "wlan0"}})
	if _, err := w.StartDNS(testbed.DefaultRecords()); err != nil {
		t.Fatal(err)
	}
	return w
}

func target(t *testing.T, w *testbed.World, dev string) Target {
	u := w.MustUplink(dev)
	return Target{Device: dev, Source: u.Addr, DNS: []netip.Addr{testbed.DNSAddr}, Namespace: w.Device.Handle(t)}
}

func mustProber(t *testing.T, cfg Config) *Prober {
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEchoBoundToUplink(t *testing.T) {
	w := world(t)
	eth, wlan := target(t, w, "eth0"), target(t, w, "wlan0")
	p := mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort})
	for _, tg := range []Target{eth, wlan} {
		if r := p.Probe(context.Background(), tg, 2*time.Second, 0); !r.OK {
			t.Fatalf("%s: %+v", tg.Device, r)
		}
	}
	// Eth's upstream dies silently. Eth carries the default route, so only
	// a probe really bound to wlan0 still gets through there.
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r := p.Probe(context.Background(), eth, 500*time.Millisecond, 0)
	if r.OK || !strings.Contains(r.Err, "echo") {
		t.Fatalf("eth0 black-holed: %+v", r)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("failed round took %v, timeout 500ms", d)
	}
	if r := p.Probe(context.Background(), wlan, 2*time.Second, 0); !r.OK {
		t.Fatalf("wlan0 while eth0 dead: %+v", r)
	}
	// A fresh prober has no cached address: resolution through the dead
	// uplink fails too; through the live one it works.
	p2 := mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort})
	if r := p2.Probe(context.Background(), eth, time.Second, 0); r.OK || !strings.Contains(r.Err, "resolve") {
		t.Fatalf("resolve via dead eth0: %+v", r)
	}
	if r := p2.Probe(context.Background(), wlan, 2*time.Second, 0); !r.OK {
		t.Fatalf("resolve via wlan0: %+v", r)
	}
}

// A server that accepts but never answers must fail the probe: the
// original connmgr counted this as success. It is an intercepted probe:
// something accepted the connection in the host's name.
func TestEchoWithoutByteBackFails(t *testing.T) {
	w := world(t)
	l, err := w.Cloud.Listen("tcp4", "198.19.0.1:81")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	p := mustProber(t, Config{Host: "198.19.0.1", Port: 81})
	if r := p.Probe(context.Background(), target(t, w, "eth0"), time.Second, 0); r.OK || !strings.Contains(r.Err, "no byte back") || !r.Intercepted {
		t.Fatalf("silent server: %+v", r)
	}
}

func TestICMP(t *testing.T) {
	w := world(t)
	p := mustProber(t, Config{Method: ICMP, Host: testbed.EchoAddr.String()})
	eth := target(t, w, "eth0")
	if r := p.Probe(context.Background(), eth, time.Second, 0); !r.OK {
		t.Fatalf("ping: %+v", r)
	}
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	if r := p.Probe(context.Background(), eth, 300*time.Millisecond, 0); r.OK {
		t.Fatalf("ping through black hole succeeded: %+v", r)
	}
	if r := p.Probe(context.Background(), target(t, w, "wlan0"), time.Second, 0); !r.OK {
		t.Fatalf("ping via wlan0: %+v", r)
	}
}

func TestHTTP204(t *testing.T) {
	w := world(t)
	l, err := w.Cloud.Listen("tcp4", "198.19.0.1:8206")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/generate_204" {
			rw.WriteHeader(http.StatusNoContent)
			return
		}
		http.Redirect(rw, r, "http://portal/", http.StatusFound)
	})}
	go srv.Serve(l)
	defer srv.Close()
	eth, wlan := target(t, w, "eth0"), target(t, w, "wlan0")
	ok := mustProber(t, Config{Method: HTTP, URL: "http://echo.afero.io:8206/generate_204"})
	for _, tg := range []Target{eth, wlan} {
		if r := ok.Probe(context.Background(), tg, 5*time.Second, 0); !r.OK {
			t.Fatalf("204 via %s: %+v", tg.Device, r)
		}
	}
	// A captive portal's redirect is the far end's answer: the round fails
	// with it at once instead of asking again until its timeout.
	portal := mustProber(t, Config{Method: HTTP, URL: "http://198.19.0.1:8206/other"})
	start := time.Now()
	if r := portal.Probe(context.Background(), eth, 20*time.Second, 0); r.OK || !strings.Contains(r.Err, "status 302, want 204") {
		t.Fatalf("redirect must fail: %+v", r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("redirect: the round waited %v for its timeout", d)
	}
	// Bound to the uplink: eth0's upstream dies, wlan0's still answers.
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	if r := ok.Probe(context.Background(), eth, time.Second, 0); r.OK || !strings.Contains(r.Err, "http http://echo.afero.io:8206/generate_204 (198.19.0.1:8206): dial") {
		t.Fatalf("eth0 black-holed: %+v", r)
	}
	if r := ok.Probe(context.Background(), wlan, 5*time.Second, 0); !r.OK {
		t.Fatalf("wlan0 while eth0 dead: %+v", r)
	}
}

// What the probe sends, and the round's outcome and reason for each kind
// of answer, from a server that says exactly what each case wants.
func TestHTTPAnswers(t *testing.T) {
	w := world(t)
	l, err := w.Cloud.Listen("tcp4", "198.19.0.1:8205")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var answer atomic.Pointer[string] // nil: read the request, answer nothing
	requests := make(chan string, 1000)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				var req []byte
				buf := make([]byte, 512)
				for !bytes.HasSuffix(req, []byte("\r\n\r\n")) {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					req = append(req, buf[:n]...)
				}
				requests <- string(req)
				a := answer.Load()
				if a == nil {
					io.Copy(io.Discard, c) // until the prober gives up
					return
				}
				c.Write([]byte(*a))
				if strings.HasSuffix(*a, "...") {
					io.Copy(io.Discard, c) // a part, then silence
				}
			}()
		}
	}()
	eth := target(t, w, "eth0")
	p := mustProber(t, Config{Method: HTTP, URL: "http://echo.afero.io:8205/generate_204?x=1"})
	const wantReq = "GET /generate_204?x=1 HTTP/1.1\r\nHost: echo.afero.io:8205\r\nConnection: close\r\nUser-Agent: connmgr\r\n\r\n"
	str := func(s string) *string { return &s }
	for _, c := range []struct {
		answer *string
		ok     bool
		why    string
	}{
		{str("HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"), true, ""},
		{str("HTTP/1.0 204\n\n"), true, ""},
		{str("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), false, "status 200, want 204"},
		{str("SSH-2.0-OpenSSH_9.2\r\n"), false, "malformed status line"},
		{str(strings.Repeat("HTTP/1.1 204 ", 30)), false, "longer than 256 bytes"},
		{str("HTTP/1.1 20"), false, "status line cut short after 11 bytes"},
		{str("HTTP/1.1 2..."), false, "status line cut short after 13 bytes"},
		{str(""), false, "connection closed without an answer"},
		{nil, false, "no answer"},
	} {
		answer.Store(c.answer)
		r := p.Probe(context.Background(), eth, 1500*time.Millisecond, 0)
		if r.OK != c.ok || !strings.Contains(r.Err, c.why) {
			t.Errorf("answer %.30q: %+v; want ok %v, reason %q", deref(c.answer), r, c.ok, c.why)
		}
		if !c.ok && !strings.HasPrefix(r.Err, "http http://echo.afero.io:8205/generate_204?x=1 (198.19.0.1:8205): ") {
			t.Errorf("reason %q does not say what was probed", r.Err)
		}
		for len(requests) > 0 {
			if got := <-requests; got != wantReq {
				t.Fatalf("request %q, want %q", got, wantReq)
			}
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "(none)"
	}
	return *s
}

// Under 20% loss each way, hedged rounds should almost always succeed:
// this is what keeps a lossy link from being declared failing.
func TestHedgingUnderLoss(t *testing.T) {
	w := world(t)
	if err := w.SetFault("eth0", testbed.Fault{LossPercent: 20}); err != nil {
		t.Fatal(err)
	}
	p := mustProber(t, Config{Host: testbed.EchoAddr.String(), Port: testbed.EchoPort})
	eth := target(t, w, "eth0")
	fails := 0
	const rounds = 40
	for range rounds {
		if r := p.Probe(context.Background(), eth, 500*time.Millisecond, 0); !r.OK {
			fails++
		}
	}
	t.Logf("%d of %d rounds failed under 20%% loss", fails, rounds)
	if fails > rounds/6 {
		t.Fatalf("%d of %d rounds failed: hedging does not work", fails, rounds)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, c := range []Config{
		{Method: "smoke", Host: "x", Port: 1},
		{Method: Echo, Port: 80},
		{Method: Echo, Host: "x", Port: 0},
		{Method: HTTP},
		{Method: HTTP, URL: "https://echo.afero.io/generate_204"},
		{Method: HTTP, URL: "http://x/a b"},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
