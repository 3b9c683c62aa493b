// Package probe owns active probes bound to one uplink: every socket is
// bound to the uplink's device (SO_BINDTODEVICE) and source address, and
// the probe host's name is resolved through the uplink's own DNS servers,
// also bound to the uplink. Methods: the Afero echo (TCP connect, one byte
// out, one byte back; no byte back is a failure, never a success), ICMP
// echo, and HTTP expecting 204. A probe round hedges: while no attempt has
// answered, a new attempt starts every hedge interval, so one lost packet
// does not fail the round, while a dead upstream fails it within its
// timeout.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/inns"
	"github.com/afero/af-conn/internal/uplink"
)

// Methods.
const (
	Echo = "echo"
	ICMP = "icmp"
	HTTP = "http"
)

// Config says what to probe.
type Config struct {
	Method string // Echo (default), ICMP or HTTP
	Host   string // echo_host: a name or an address literal (echo, ICMP)
	Port   int    // echo_port
	URL    string // probe_url (HTTP)
	// DNSTTL is how long a resolved address is reused (default 60 s);
	// a stale one is still used while a fresh answer cannot be had.
	DNSTTL time.Duration
}

// Target is the uplink a round runs on.
type Target struct {
	Device string
	Source netip.Addr
	DNS    []netip.Addr // the uplink's DNS servers
	// Namespace, if open, is the network namespace the device lives in
	// (tests; the daemon itself runs inside the device's namespace).
	Namespace netns.NsHandle
}

// in creates sockets in the target's namespace.
func (t Target) in(fn func() error) error { return inns.Do(t.Namespace, fn) }

// dial connects from the uplink: bound to its device and source address.
func (t Target) dial(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = t.in(func() error {
		c, err = dialer(t, network).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Prober runs probe rounds; safe for concurrent use.
type Prober struct {
	cfg   Config
	mu    sync.Mutex
	cache map[string]cached // by device and host
	icmpN atomic.Uint32
}

type cached struct {
	addr netip.Addr
	at   time.Time
}

// New checks cfg and returns a prober.
func New(cfg Config) (*Prober, error) {
	switch cfg.Method {
	case "":
		cfg.Method = Echo
	case Echo, ICMP, HTTP:
	default:
		return nil, fmt.Errorf("probe method %q: want echo, icmp or http", cfg.Method)
	}
	if cfg.Method != HTTP && cfg.Host == "" {
		return nil, fmt.Errorf("probe method %s needs a host", cfg.Method)
	}
	if cfg.Method == Echo && (cfg.Port <= 0 || cfg.Port > 65535) {
		return nil, fmt.Errorf("echo port %d out of range 1..65535", cfg.Port)
	}
	if cfg.Method == HTTP && cfg.URL == "" {
		return nil, errors.New("probe method http needs probe_url")
	}
	if cfg.DNSTTL <= 0 {
		cfg.DNSTTL = time.Minute
	}
	return &Prober{cfg: cfg, cache: map[string]cached{}}, nil
}

// Probe runs one round on t, taking at most timeout, and says how it went.
// While no attempt has answered, another starts every hedge (0: a sixth of
// the timeout; the caller may stretch it to a slow link's RTT).
func (p *Prober) Probe(ctx context.Context, t Target, timeout, hedge time.Duration) uplink.ProbeResult {
	start := time.Now()
	res := uplink.ProbeResult{Started: start}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var attempt func(context.Context) error
	switch p.cfg.Method {
	case Echo, ICMP:
		addr, err := p.resolve(ctx, t, p.cfg.Host)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		if p.cfg.Method == Echo {
			dst := netip.AddrPortFrom(addr, uint16(p.cfg.Port))
			attempt = func(ctx context.Context) error { return echo(ctx, t, dst) }
		} else {
			attempt = func(ctx context.Context) error { return p.ping(ctx, t, addr) }
		}
	case HTTP:
		attempt = func(ctx context.Context) error { return p.http(ctx, t) }
	}
	if hedge <= 0 {
		hedge = timeout / 6
	}
	if err := hedged(ctx, hedge, attempt); err != nil {
		res.Err = err.Error()
		return res
	}
	res.OK, res.RTT = true, time.Since(start)
	return res
}

// hedged runs attempt, starting another every hedge while none has
// succeeded, until one succeeds or ctx ends. It returns nil on success,
// else the last attempt's error.
func hedged(ctx context.Context, hedge time.Duration, attempt func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan error, 64)
	running := 0
	launch := func() {
		running++
		go func() { results <- attempt(ctx) }()
	}
	launch()
	tick := time.NewTicker(hedge)
	defer tick.Stop()
	var last error
	for {
		select {
		case err := <-results:
			running--
			if err == nil {
				return nil
			}
			last = err
			if ctx.Err() != nil && running == 0 {
				return last
			}
		case <-tick.C:
			if ctx.Err() == nil && running < cap(results) {
				launch()
			}
		case <-ctx.Done():
			if running == 0 {
				return cmp(last, ctx.Err())
			}
			// Let the attempts notice the deadline and report.
			for running > 0 {
				if err := <-results; err == nil {
					return nil
				} else if last == nil || !errors.Is(err, context.DeadlineExceeded) {
					last = err
				}
				running--
			}
			return cmp(last, ctx.Err())
		}
	}
}

func cmp(err, fallback error) error {
	if err != nil {
		return err
	}
	return fallback
}

// control binds a socket to the uplink's device.
func control(dev string) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, dev)
		})
		if err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("bind to device %s: %w", dev, serr)
		}
		return nil
	}
}

func dialer(t Target, network string) *net.Dialer {
	d := &net.Dialer{Control: control(t.Device)}
	if t.Source.IsValid() {
		switch network {
		case "tcp", "tcp4":
			d.LocalAddr = &net.TCPAddr{IP: t.Source.AsSlice()}
		case "udp", "udp4":
			d.LocalAddr = &net.UDPAddr{IP: t.Source.AsSlice()}
		}
	}
	return d
}

// echo is one Afero echo attempt: connect, send one byte, read one back.
func echo(ctx context.Context, t Target, dst netip.AddrPort) error {
	c, err := t.dial(ctx, "tcp4", dst.String())
	if err != nil {
		return fmt.Errorf("echo %s: %w", dst, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := c.Write([]byte{'A'}); err != nil {
		return fmt.Errorf("echo %s: send: %w", dst, err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return fmt.Errorf("echo %s: no byte back: %w", dst, err)
	}
	return nil
}

// resolve returns the address of host: a literal as is, else a name
// resolved through the uplink's DNS servers, cached for DNSTTL.
func (p *Prober) resolve(ctx context.Context, t Target, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, nil
	}
	key := t.Device + "\x00" + host
	p.mu.Lock()
	c, ok := p.cache[key]
	p.mu.Unlock()
	if ok && time.Since(c.at) < p.cfg.DNSTTL {
		return c.addr, nil
	}
	if ok {
		// Stale: refresh in the background, probe with what we have, so a
		// slow DNS server never delays failure detection.
		go func() {
			rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if a, err := lookup(rctx, t, host); err == nil {
				p.store(key, a)
			}
		}()
		return c.addr, nil
	}
	a, err := lookup(ctx, t, host)
	if err != nil {
		return netip.Addr{}, err
	}
	p.store(key, a)
	return a, nil
}

func (p *Prober) store(key string, a netip.Addr) {
	p.mu.Lock()
	p.cache[key] = cached{addr: a, at: time.Now()}
	p.mu.Unlock()
}

// lookup resolves host's IPv4 address with Go's resolver, whose every DNS
// connection goes to one of the uplink's servers, bound to the uplink.
func lookup(ctx context.Context, t Target, host string) (netip.Addr, error) {
	if len(t.DNS) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: no DNS servers for %s", host, t.Device)
	}
	var n atomic.Uint32
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		srv := t.DNS[int(n.Add(1)-1)%len(t.DNS)]
		return t.dial(ctx, network, netip.AddrPortFrom(srv, 53).String())
	}}
	fqdn := host
	if fqdn[len(fqdn)-1] != '.' {
		fqdn += "." // no search domains: the name is absolute
	}
	addrs, err := r.LookupNetIP(ctx, "ip4", fqdn)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s via %s: %w", host, t.Device, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s via %s: no IPv4 address", host, t.Device)
	}
	return addrs[0].Unmap(), nil
}

// http is one HTTP attempt: GET the URL through the uplink, expect 204.
func (p *Prober) http(ctx context.Context, t Target) error {
	tr := &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			a, err := p.resolve(ctx, t, host)
			if err != nil {
				return nil, err
			}
			return t.dial(ctx, "tcp4", net.JoinHostPort(a.String(), port))
		},
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.URL, nil)
	if err != nil {
		return fmt.Errorf("probe_url %q: %w", p.cfg.URL, err)
	}
	resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a captive portal's redirect is a failure, not followed
	}}).Do(req)
	if err != nil {
		return fmt.Errorf("http %s: %w", p.cfg.URL, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("http %s: status %d, want 204", p.cfg.URL, resp.StatusCode)
	}
	return nil
}
