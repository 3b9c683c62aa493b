package daemon

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/dnsgate"
	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/whitelist"
)

func TestDNSPlan(t *testing.T) {
	for _, tc := range []struct {
		on, up, hold bool
		queue        firewall.QueueMode
		mode, why    string
	}{
		{false, true, true, firewall.QueueXT, "off", "firewall mode is off"},
		{true, false, true, firewall.QueueOff, "off", "the firewall lock-down is not in force"},
		{true, true, true, firewall.QueueXT, "hold", ""},
		{true, true, true, firewall.QueueNative, "hold", ""},
		{true, true, false, firewall.QueueOff, "capture", "dns_hold is '0'"},
		{true, true, false, firewall.QueueXT, "capture", "dns_hold is '0'"},
		{true, true, true, firewall.QueueUnavailable, "capture", "the kernel cannot queue DNS replies (neither nft queue nor xt NFQUEUE)"},
		{true, true, true, firewall.QueueOff, "capture", "the firewall has no DNS queue hook (off)"},
	} {
		mode, why := dnsPlan(tc.on, tc.up, tc.hold, tc.queue)
		if mode != tc.mode || why != tc.why {
			t.Errorf("dnsPlan(on %v, up %v, hold %v, %s) = %s %q, want %s %q", tc.on, tc.up, tc.hold, tc.queue, mode, why, tc.mode, tc.why)
		}
	}
}

func TestEchoMatcher(t *testing.T) {
	wl, err := whitelist.Parse("wl", strings.NewReader("*.afero.io\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		echo, name string
		want       bool
	}{
		{"Echo.Example.NET.", "echo.example.net", true},
		{"echo.example.net", "x.echo.example.net", false},
		{"echo.example.net", "a.afero.io", true},
		{"echo.example.net", "echo.example.org", false},
		{"198.19.0.1", "198.19.0.1", false}, // an address is opened statically, never by DNS
		{"198.19.0.1", "a.afero.io", true},
	} {
		m := echoMatcher{wl: wl, echo: echoName(tc.echo)}
		if got := m.Match(tc.name); got != tc.want {
			t.Errorf("echo %q: Match(%q) = %v, want %v", tc.echo, tc.name, got, tc.want)
		}
	}
}

func TestFirewallPolicyEchoAddress(t *testing.T) {
	dir := t.TempDir()
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption echo_host '198.19.0.1'\n")
	d, _, _, _ := newTestDaemon(t, dir)
	p := FirewallPolicy(d.cur.Config, d.cur.Whitelist)
	if !slices.Contains(p.Static, netip.MustParsePrefix("198.19.0.1/32")) {
		t.Errorf("echo address not static: %v", p.Static)
	}
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption echo_host 'echo.afero.io'\n")
	d, _, _, _ = newTestDaemon(t, dir)
	if p := FirewallPolicy(d.cur.Config, d.cur.Whitelist); len(p.Static) != 0 {
		t.Errorf("echo name made static entries: %v", p.Static)
	}
}

// fakeGate records what the component asked of it.
type fakeGate struct {
	mu      sync.Mutex
	cfg     dnsgate.Config
	matcher dnsx.Matcher
	policy  dnsx.Policy
	limits  dnsx.Limits
	ifaces  [][2][]int
	status  dnsgate.Status
	closed  bool
}

func (g *fakeGate) Mode() dnsgate.Mode { return g.cfg.Mode }
func (g *fakeGate) SetInterfaces(u, l []int) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ifaces = append(g.ifaces, [2][]int{u, l})
	return nil
}
func (g *fakeGate) SetMatcher(m dnsx.Matcher) { g.mu.Lock(); g.matcher = m; g.mu.Unlock() }
func (g *fakeGate) SetPolicy(p dnsx.Policy)   { g.mu.Lock(); g.policy = p; g.mu.Unlock() }
func (g *fakeGate) SetLimits(l dnsx.Limits)   { g.mu.Lock(); g.limits = l; g.mu.Unlock() }
func (g *fakeGate) Status() dnsgate.Status {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.status
}
func (g *fakeGate) Close() error { g.mu.Lock(); g.closed = true; g.mu.Unlock(); return nil }

// fakeHost has the interfaces a test gives it.
type fakeHost struct {
	mu      sync.Mutex
	idx     map[string]int
	changed func()
}

func (h *fakeHost) Ifindex(name string) (int, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i, ok := h.idx[name]
	return i, ok
}
func (h *fakeHost) LANInterfaces() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]int{}
	for n, i := range h.idx {
		if n != "lo" {
			out[n] = i
		}
	}
	return out
}
func (h *fakeHost) LocalAddrs() []netip.Addr {
	return []netip.Addr{netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("::ffff:10.0.0.1")}
}
func (h *fakeHost) Watch(ctx context.Context, changed func()) error {
	h.mu.Lock()
	h.changed = changed
	h.mu.Unlock()
	<-ctx.Done()
	return nil
}

// set changes an interface and tells the watcher, once the component has started watching.
func (h *fakeHost) set(t *testing.T, name string, i int) {
	var changed func()
	waitFor(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		changed = h.changed
		return changed != nil
	})
	h.mu.Lock()
	if i == 0 {
		delete(h.idx, name)
	} else {
		h.idx[name] = i
	}
	h.mu.Unlock()
	changed()
}

func TestDNSComponent(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"network": "config interface 'ethnet'\n\toption device 'eth0'\n\toption proto 'dhcp'\n\tlist dns '198.18.7.7'\n\n" +
			"config interface 'apnet'\n\toption device 'br-apnet'\n\toption proto 'static'\n",
		"wireless": "config wifi-iface 'ap'\n\toption device 'radio0'\n\toption mode 'ap'\n\toption network 'apnet'\n\toption ifname 'wlan0-1'\n",
		"connmgr": "config connmgr 'main'\n\toption queue_num '9'\n\toption dns_grace '5s'\n\toption dns_min_ttl '20s'\n" +
			"\toption echo_host 'Probe.Example.com'\n",
		"whitelist": "*.afero.io\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, _, _, logBuf := newTestDaemon(t, dir)
	if len(d.cur.Config.AP) != 1 {
		t.Fatalf("test config has no AP network: %+v", d.cur.Config.AP)
	}
	fb := &fakeBackend{}
	fc := newFirewallComponent(d)
	fc.open = func(string) (firewall.Backend, error) { return fb, nil }
	host := &fakeHost{idx: map[string]int{"eth0": 2, "wwan0": 4, "br-apnet": 7, "lo": 1}}
	var mu sync.Mutex
	var gates []*fakeGate
	dc := newDNSComponent(d)
	dc.host = host
	resolvConf := filepath.Join(dir, "resolv.conf.auto")
	if err := os.WriteFile(resolvConf, []byte("# Interface ethnet\nnameserver 198.18.9.9\nnameserver fe80::53%eth0\n# Interface loopback\nnameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dc.resolvConfs = []string{resolvConf, filepath.Join(dir, "missing")}
	dc.openGate = func(c dnsgate.Config) (dnsGate, error) {
		mu.Lock()
		defer mu.Unlock()
		g := &fakeGate{cfg: c, matcher: c.Extractor.Matcher, policy: c.Extractor.Policy}
		gates = append(gates, g)
		return g, nil
	}
	lastGate := func() (*fakeGate, int) {
		mu.Lock()
		defer mu.Unlock()
		return gates[len(gates)-1], len(gates)
	}
	d.components = []component{fc, dc}
	clock := d.clock.(*fakeClock)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	status := func() (st Status) {
		t.Helper()
		if err := d.Do(ctx, func() { st = d.Status() }); err != nil {
			t.Fatal(err)
		}
		return st
	}
	reload := func(connmgr string) {
		t.Helper()
		writeConnmgr(t, dir, connmgr)
		errc := make(chan error, 1)
		d.post(reloadEvent{done: errc})
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}

	// Hold mode (the fake firewall queues), on the uplinks that exist (wlan0 does not) and the
	// AP bridge; the whitelist plus the echo host's name; the policy of the config.
	st := status()
	g, n := lastGate()
	if n != 1 || g.cfg.Mode != dnsgate.ModeHold || g.cfg.QueueNum != 9 ||
		!slices.Equal(g.cfg.Uplinks, []int{2, 4}) || !slices.Equal(g.cfg.LANs, []int{7}) {
		t.Fatalf("gate config %+v", g.cfg)
	}
	if p := g.cfg.Extractor.Policy; p.Grace != 5*time.Second || p.MinTTL != 20*time.Second || p.MaxTimeout != 24*time.Hour {
		t.Errorf("policy %+v", p)
	}
	if l := g.cfg.Extractor.Limits; l.PerReply != 32 || l.PerName != 50 || l.Capacity != 65536 {
		t.Errorf("limits %+v", l)
	}
	// Trusted: the uplink's list dns, resolv.conf.auto's servers (a link-local one on its own
	// link only: eth0 is ifindex 2, as the gate zones it), never loopback or anything else.
	trusts := func(a string) bool { return g.cfg.Extractor.Trusted(netip.MustParseAddr(a)) }
	for a, want := range map[string]bool{"198.18.7.7": true, "198.18.9.9": true, "fe80::53%2": true,
		"fe80::53%4": false, "fe80::53": false,
		"198.18.8.8": false, "127.0.0.1": false, "198.18.6.6": false} {
		if trusts(a) != want {
			t.Errorf("trusts %s: %v, want %v", a, !want, want)
		}
	}
	if got := strings.Join(st.Firewall.DNSTrustedResolvers, " "); got != "198.18.7.7 198.18.9.9 fe80::53%2" {
		t.Errorf("status trusted resolvers %q", got)
	}
	m := g.cfg.Extractor.Matcher
	if !m.Match("probe.example.com") || !m.Match("x.afero.io") || m.Match("evil.example") {
		t.Errorf("matcher does not match whitelist + echo host")
	}
	if !g.cfg.IsLocal(netip.MustParseAddr("192.168.1.1")) || !g.cfg.IsLocal(netip.MustParseAddr("10.0.0.1")) || g.cfg.IsLocal(netip.MustParseAddr("192.168.1.2")) {
		t.Errorf("IsLocal wrong")
	}
	if st.Firewall.DNSMode != "hold" || st.Firewall.DNSFallback != "" {
		t.Errorf("status %+v", st.Firewall)
	}
	if !strings.Contains(logBuf.String(), "echo host is not on the whitelist") {
		t.Errorf("echo host not logged:\n%s", logBuf)
	}

	// Counters come from the gate.
	g.mu.Lock()
	g.status = dnsgate.Status{Mode: dnsgate.ModeHold, Stats: dnsx.Stats{Replies: 10}, Opened: 4,
		Rejected: map[string]uint64{"wrong_id": 2, "unsolicited": 1}, LatencyP50: 80 * time.Microsecond, LatencyP99: 400 * time.Microsecond}
	g.mu.Unlock()
	st = status()
	if c := st.Counters; c.DNSReplies != 10 || c.PinholesAdded != 4 || c.ForgedReplies != 3 {
		t.Errorf("counters %+v", c)
	}
	if st.Firewall.DNSRejected["wrong_id"] != 2 || st.Firewall.DNSLatencyP99us != 400 {
		t.Errorf("firewall status %+v", st.Firewall)
	}

	// A link appears: the interfaces change on the running gate.
	host.set(t, "wlan0", 3)
	waitFor(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.ifaces) == 1 && slices.Equal(g.ifaces[0][0], []int{2, 3, 4})
	})

	// Reload with another whitelist and policy: the same gate, updated, nothing dropped.
	if err := os.WriteFile(filepath.Join(dir, "whitelist"), []byte("api.example.net\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reload("config connmgr 'main'\n\toption queue_num '9'\n\toption dns_grace '1s'\n\toption dns_min_ttl '0'\n\toption echo_host '198.19.0.1'\n" +
		"\tlist trusted_resolver '198.18.8.8'\n\toption dns_reply_max_addrs '4'\n\toption dns_name_max_addrs '8'\n")
	if g2, n := lastGate(); n != 1 || g2 != g {
		t.Fatalf("reload restarted the gate")
	}
	// The trusted set follows the reload (the gate reads it live).
	if !trusts("198.18.8.8") || !trusts("198.18.7.7") {
		t.Errorf("after reload: trusted_resolver not trusted")
	}
	g.mu.Lock()
	if g.limits.PerReply != 4 || g.limits.PerName != 8 {
		t.Errorf("after reload: limits %+v", g.limits)
	}
	g.mu.Unlock()
	g.mu.Lock()
	if !g.matcher.Match("api.example.net") || g.matcher.Match("x.afero.io") || g.matcher.Match("probe.example.com") || g.policy.Grace != time.Second || g.policy.MinTTL != 0 {
		t.Errorf("after reload: policy %+v", g.policy)
	}
	g.mu.Unlock()

	// dns_hold '0': capture mode, a new gate; the counters carry over.
	reload("config connmgr 'main'\n\toption queue_num '9'\n\toption dns_hold '0'\n")
	g2, n := lastGate()
	st = status()
	if n != 2 || g2.cfg.Mode != dnsgate.ModeCapture || !g.closed || st.Firewall.DNSMode != "capture" || st.Firewall.DNSFallback != "dns_hold is '0'" {
		t.Fatalf("dns_hold 0: %d gates, mode %s, status %+v", n, g2.cfg.Mode, st.Firewall)
	}
	if st.Counters.DNSReplies != 10 || st.Counters.ForgedReplies != 3 {
		t.Errorf("counters lost across restart: %+v", st.Counters)
	}

	// The gate's own fallback (queue not bindable) shows in the status.
	reload("config connmgr 'main'\n\toption queue_num '9'\n")
	g3, _ := lastGate()
	g3.mu.Lock()
	g3.status = dnsgate.Status{Mode: dnsgate.ModeCapture, Fallback: "netfilter queue 9 unavailable: busy"}
	g3.mu.Unlock()
	if st = status(); st.Firewall.DNSMode != "capture" || !strings.Contains(st.Firewall.DNSFallback, "busy") {
		t.Errorf("gate fallback: %+v", st.Firewall)
	}

	// A bad reload keeps everything as it is.
	if err := os.WriteFile(filepath.Join(dir, "whitelist"), []byte("bad entry with spaces\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	d.post(reloadEvent{done: errc})
	if err := <-errc; err == nil {
		t.Fatal("bad whitelist accepted")
	}
	if g4, n := lastGate(); g4 != g3 || n != 3 || g3.closed {
		t.Fatalf("bad reload touched the gate")
	}

	// Firewall mode off: the gate closes.
	reload("config connmgr 'main'\n\toption firewall '0'\n")
	if st = status(); !g3.closed || st.Firewall.DNSMode != "off" {
		t.Errorf("firewall off: status %+v", st.Firewall)
	}
	// On again; the periodic check leaves a healthy gate alone.
	if err := os.WriteFile(filepath.Join(dir, "whitelist"), []byte("*.afero.io\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reload("config connmgr 'main'\n")
	clock.Advance(dnsCheckEvery)
	status()
	g5, n := lastGate()
	if n != 4 || g5.cfg.Mode != dnsgate.ModeHold || g5.cfg.QueueNum != 27 {
		t.Fatalf("on again: %d gates, %+v", n, g5.cfg)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !g5.closed {
		t.Error("gate not closed at exit")
	}
	if !strings.Contains(logBuf.String(), "DNS extraction stopped") {
		t.Errorf("no summary at exit:\n%s", logBuf)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// The trusted resolvers follow netifd: an uplink's DNS servers are trusted while netifd reports
// them, and no longer once it stops.
func TestDNSTrustFollowsNetifd(t *testing.T) {
	var dc *dnsComponent
	bt := startBus(t, busOpts{noServer: true, more: func(d *Daemon) []component {
		dc = newDNSComponent(d)
		dc.host = &fakeHost{idx: map[string]int{}}
		dc.resolvConfs = nil // not the test machine's
		return []component{dc}
	}})
	var mu sync.Mutex
	answer := readNetifdSample(t) // ethnet up, DNS 198.18.1.1 and 198.18.0.53
	bt.startServerWith(func() {
		bt.publishNetifd("ethnet", func() (ubus.Table, error) { mu.Lock(); defer mu.Unlock(); return answer, nil })
	})
	bt.waitObject()
	trusts := func(a string) bool { return dc.isTrusted(netip.MustParseAddr(a)) }
	bt.eventually("netifd's DNS servers trusted", func() bool { return trusts("198.18.1.1") && trusts("198.18.0.53") })
	var st Status
	bt.loop(func() { st = bt.d.Status() })
	if got := strings.Join(st.Firewall.DNSTrustedResolvers, " "); got != "198.18.0.53 198.18.1.1" {
		t.Errorf("status trusted resolvers %q", got)
	}
	mu.Lock()
	answer = ubus.Table{{Name: "up", Value: false}, {Name: "device", Value: "eth0"}}
	mu.Unlock()
	if err := bt.conn.Send(bt.ctx, "network.interface", args("action", "ifdown", "interface", "ethnet")); err != nil {
		t.Fatal(err)
	}
	bt.eventually("netifd's old DNS servers no longer trusted", func() bool { return !trusts("198.18.1.1") && !trusts("198.18.0.53") })
}
