// Package probe owns active probes bound to one uplink: every socket is
// bound to the uplink's device (SO_BINDTODEVICE) and source address, and
// the probe host's name is resolved through the uplink's own DNS servers,
// also bound to the uplink. A round runs in the family of its source
// address: an IPv6 round probes the host's AAAA (a DNS64-synthesized one
// under 64:ff9b::/96 like any other) over IPv6, and an address literal
// serves only rounds of its own family (see ErrOtherFamily). Methods: the Afero echo (TCP connect, one byte
// out, one byte back; no byte back is a failure, never a success), ICMP
// echo, and an HTTP GET expecting 204 (http:// only, see http.go). A probe
// round hedges: while no attempt has succeeded, a new attempt starts every
// hedge interval, so one lost packet does not fail the round, while a dead
// upstream fails it within its timeout.
package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
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
	URL    string // probe_url (HTTP): http://HOST[:PORT][/PATH], see ParseURL
	// DNSTTL is how long a resolved address is reused (default 60 s);
	// a stale one is still used while a fresh answer cannot be had.
	DNSTTL time.Duration
}

// Target is the uplink a round runs on.
type Target struct {
	Device string
	// Device6, if set, is the device the round's IPv6 traffic leaves by
	// instead of Device: a 464XLAT uplink's IPv4 round runs on the clat
	// device, which carries no IPv6, and reaches the uplink's IPv6
	// resolvers (DNS64) through the uplink's own device.
	Device6 string
	// Source is the uplink's address the round runs from; its family is
	// the round's (IPv4 when unset: the kernel then picks the source).
	Source netip.Addr
	// DNS are the uplink's DNS servers, of either family; a link-local
	// IPv6 one without a zone is on this uplink's link, one scoped to
	// another device is not used.
	DNS []netip.Addr
	// Namespace, if open, is the network namespace the device lives in
	// (tests; the daemon itself runs inside the device's namespace).
	Namespace netns.NsHandle
}

// in creates sockets in the target's namespace.
func (t Target) in(fn func() error) error { return inns.Do(t.Namespace, fn) }

// Family is the family of the target's rounds: its source's.
func (t Target) Family() uplink.Family {
	if !t.Source.IsValid() {
		return uplink.IPv4
	}
	return uplink.FamilyOf(t.Source)
}

// dial connects from the uplink to dst over network ("tcp" or "udp"):
// bound to its device, and to its source address when dst is of the
// source's family (a resolver of the other family is reached from an
// address the kernel picks on the device). A link-local dst is scoped to
// the device.
func (t Target) dial(ctx context.Context, network string, dst netip.AddrPort) (c net.Conn, err error) {
	fam := uplink.FamilyOf(dst.Addr())
	network += map[uplink.Family]string{uplink.IPv4: "4", uplink.IPv6: "6"}[fam]
	dev := t.deviceFor(fam)
	err = t.in(func() error {
		d := &net.Dialer{Control: control(dev)}
		if t.Source.IsValid() && uplink.FamilyOf(t.Source) == fam {
			ip := net.IP(t.Source.AsSlice())
			if network[:3] == "tcp" {
				d.LocalAddr = &net.TCPAddr{IP: ip, Zone: t.Source.Zone()}
			} else {
				d.LocalAddr = &net.UDPAddr{IP: ip, Zone: t.Source.Zone()}
			}
		}
		if dst.Addr().Is6() && dst.Addr().IsLinkLocalUnicast() {
			// The zone by index, looked up here in the device's
			// namespace: the name would go through the net package's
			// process-wide cache of interface names, which may hold
			// another namespace's device of the same name.
			ifi, err := net.InterfaceByName(dev)
			if err != nil {
				return fmt.Errorf("scope %s to %s: %w", dst.Addr(), dev, err)
			}
			dst = netip.AddrPortFrom(dst.Addr().WithZone(strconv.Itoa(ifi.Index)), dst.Port())
		}
		c, err = d.DialContext(ctx, network, dst.String())
		return err
	})
	return c, err
}

// Prober runs probe rounds; safe for concurrent use.
type Prober struct {
	cfg   Config
	url   URL // cfg.URL parsed (HTTP)
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
	p := &Prober{cfg: cfg, cache: map[string]cached{}}
	if cfg.Method == HTTP {
		if cfg.URL == "" {
			return nil, errors.New("probe method http needs probe_url")
		}
		u, err := ParseURL(cfg.URL)
		if err != nil {
			return nil, fmt.Errorf("probe_url %q: %w", cfg.URL, err)
		}
		p.url = u
	}
	if p.cfg.DNSTTL <= 0 {
		p.cfg.DNSTTL = time.Minute
	}
	return p, nil
}

// ErrOtherFamily says an address literal (echo_host, probe_url's host) is
// of the other family than the round: it cannot probe the uplink in the
// round's family. The round fails saying so rather than being skipped: a
// family nothing can prove is not proven (the daemon may ask Supports
// first and not run that family's rounds at all).
var ErrOtherFamily = errors.New("address literal of the other family")

// Supports says whether rounds of family f can run: nil, or an error
// wrapping ErrOtherFamily when the probe host is an address literal of
// the other family.
func (p *Prober) Supports(f uplink.Family) error {
	what, host := "echo_host", p.cfg.Host
	if p.cfg.Method == HTTP {
		what, host = "probe_url host", p.url.Host
	}
	a, err := netip.ParseAddr(host)
	if err != nil || uplink.FamilyOf(a) == f {
		return nil
	}
	kind := map[uplink.Family]string{uplink.IPv4: "an IPv4", uplink.IPv6: "an IPv6"}[uplink.FamilyOf(a)]
	return fmt.Errorf("%s %s is %s address: no target for an %s round: %w", what, host, kind, f, ErrOtherFamily)
}

// Probe runs one round on t, taking at most timeout, and says how it went.
// While no attempt has succeeded, another starts every hedge (0: a sixth of
// the timeout; the caller may stretch it to a slow link's RTT).
func (p *Prober) Probe(ctx context.Context, t Target, timeout, hedge time.Duration) uplink.ProbeResult {
	start := time.Now()
	res := uplink.ProbeResult{Started: start}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	host := p.cfg.Host
	if p.cfg.Method == HTTP {
		host = p.url.Host
	}
	if err := p.Supports(t.Family()); err != nil {
		// The sentinel's words are left out: the rest says it all.
		res.Err = strings.TrimSuffix(err.Error(), ": "+ErrOtherFamily.Error())
		return res
	}
	addr, err := p.resolve(ctx, t, host)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	var attempt func(context.Context) error
	switch p.cfg.Method {
	case Echo:
		dst := netip.AddrPortFrom(addr, uint16(p.cfg.Port))
		attempt = func(ctx context.Context) error { return echo(ctx, t, dst) }
	case ICMP:
		attempt = func(ctx context.Context) error { return p.ping(ctx, t, addr) }
	case HTTP:
		dst := netip.AddrPortFrom(addr, p.url.Port)
		attempt = func(ctx context.Context) error { return get204(ctx, t, dst, p.url) }
	}
	if hedge <= 0 {
		hedge = timeout / 6
	}
	at, err := hedged(ctx, hedge, attempt)
	if err != nil {
		res.Err = err.Error()
		res.Intercepted = errors.As(err, new(intercepted))
		return res
	}
	res.OK, res.RTT = true, at.Sub(start)
	return res
}

// maxAttempts bounds the attempts of one round.
const maxAttempts = 64

// hedged runs attempt, starting another every hedge while none has
// succeeded, until one succeeds, one fails with the far end's answer
// (answered), or ctx ends. Then it cancels the attempts still running and
// waits for them: none outlives the round, so none is left inside the
// uplink's network namespace or holding a socket. It returns when the
// round was decided, and nil on success, the answered error, or else the
// first attempt's error: the first attempt had the whole timeout, while a
// later one may have been cut short by the round's end in any step, so
// its error says less and would make the reason of the same failure vary
// from round to round.
func hedged(ctx context.Context, hedge time.Duration, attempt func(context.Context) error) (time.Time, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		n   int
		err error
	}
	results := make(chan result, maxAttempts)
	launched, running := 0, 0
	launch := func() {
		n := launched
		launched++
		running++
		go func() { results <- result{n, attempt(ctx)} }()
	}
	launch()
	tick := time.NewTicker(hedge)
	defer tick.Stop()
	var (
		at     time.Time // when the round was decided
		won    bool
		answer error
		first  error
	)
	decide := func() {
		at = time.Now()
		cancel()
	}
	done := ctx.Done()
	for running > 0 || done != nil {
		select {
		case r := <-results:
			running--
			switch {
			case !at.IsZero(): // decided: only collecting
			case r.err == nil:
				won = true
				decide()
			case errors.As(r.err, new(answered)):
				answer = r.err
				decide()
			case r.n == 0:
				first = r.err
			}
		case <-tick.C:
			if ctx.Err() == nil && launched < maxAttempts {
				launch()
			}
		case <-done:
			done = nil // from now on only collect: the attempts see the end too
		}
	}
	switch {
	case won:
		return at, nil
	case answer != nil:
		return at, answer
	}
	return time.Now(), first
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

// connect opens a TCP connection from the uplink to dst whose reads and
// writes end with ctx (its deadline, or its cancellation when the round is
// over); release closes it.
func (t Target) connect(ctx context.Context, dst netip.AddrPort) (net.Conn, func(), error) {
	c, err := t.dial(ctx, "tcp", dst)
	if err != nil {
		return nil, nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	return c, func() { stop(); c.Close() }, nil
}

// intercepted marks a failure after the connection to the probe host was
// accepted: whatever accepted it did not give the host's answer, and may
// be a portal or proxy answering every connection in the cloud's name
// (uplink.ProbeResult.Intercepted).
type intercepted struct{ error }

func (i intercepted) Unwrap() error { return i.error }

// echo is one Afero echo attempt: connect, send one byte, read one back.
func echo(ctx context.Context, t Target, dst netip.AddrPort) error {
	c, release, err := t.connect(ctx, dst)
	if err != nil {
		return fmt.Errorf("echo %s: %w", dst, err)
	}
	defer release()
	if _, err := c.Write([]byte{'A'}); err != nil {
		return intercepted{fmt.Errorf("echo %s: send: %w", dst, err)}
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return intercepted{fmt.Errorf("echo %s: no byte back: %w", dst, err)}
	}
	return nil
}

// resolve returns the address of host in the round's family: a literal
// as is (Supports checked its family), else a name resolved through the
// uplink's DNS servers, cached for DNSTTL.
func (p *Prober) resolve(ctx context.Context, t Target, host string) (netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return a, nil
	}
	key := t.Device + "\x00" + t.Family().String() + "\x00" + host
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

// lookup resolves host's address of the round's family (A or AAAA) with
// Go's resolver, whose every DNS connection goes to one of the uplink's
// servers, bound to the uplink.
func lookup(ctx context.Context, t Target, host string) (netip.Addr, error) {
	servers := t.servers()
	if len(servers) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: no DNS servers for %s", host, t.Device)
	}
	var n atomic.Uint32
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		srv := servers[int(n.Add(1)-1)%len(servers)]
		return t.dial(ctx, network, netip.AddrPortFrom(srv, 53))
	}}
	fqdn := host
	if fqdn[len(fqdn)-1] != '.' {
		fqdn += "." // no search domains: the name is absolute
	}
	fam := t.Family()
	addrs, err := r.LookupNetIP(ctx, map[uplink.Family]string{uplink.IPv4: "ip4", uplink.IPv6: "ip6"}[fam], fqdn)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s via %s: %w", host, t.Device, err)
	}
	for _, a := range addrs {
		// An IPv4-mapped AAAA is no IPv6 destination.
		if uplink.FamilyOf(a) == fam {
			return a.Unmap(), nil
		}
	}
	return netip.Addr{}, fmt.Errorf("resolve %s via %s: no %s address", host, t.Device, fam)
}

// deviceFor is the device traffic of family f leaves by (Device6 for IPv6
// when set, else Device).
func (t Target) deviceFor(f uplink.Family) string {
	if f == uplink.IPv6 && t.Device6 != "" {
		return t.Device6
	}
	return t.Device
}

// servers returns the DNS servers a round may ask: those of the round's
// family first (reached from the round's source), then the others (a
// dual-stack uplink's IPv4 resolver answers AAAA questions too). A
// link-local server scoped to another device is not on this uplink.
func (t Target) servers() []netip.Addr {
	var same, other []netip.Addr
	for _, s := range t.DNS {
		if s.Is6() && s.IsLinkLocalUnicast() && s.Zone() != "" && s.Zone() != t.deviceFor(uplink.IPv6) {
			continue
		}
		if uplink.FamilyOf(s) == t.Family() {
			same = append(same, s)
		} else {
			other = append(other, s)
		}
	}
	return append(same, other...)
}
