package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/firewall"
)

// fakeBackend is a firewall.Backend that keeps the kernel's state in memory.
type fakeBackend struct {
	mu        sync.Mutex
	setups    []firewall.Policy
	elems     map[string]firewall.Pinhole // "allow:ADDR" -> last add
	damaged   bool
	teardowns int
	closed    bool
}

func (f *fakeBackend) Name() string { return "fake" }
func (f *fakeBackend) Setup(p firewall.Policy) (firewall.QueueMode, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setups = append(f.setups, p)
	f.damaged = false
	if f.elems == nil {
		f.elems = map[string]firewall.Pinhole{}
	}
	if p.DNSQueue.Enabled {
		return firewall.QueueXT, nil
	}
	return firewall.QueueOff, nil
}
func key(p firewall.Pinhole) string { return fmt.Sprintf("%v:%v", p.Forward, p.Addr) }
func (f *fakeBackend) Add(ps []firewall.Pinhole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range ps {
		f.elems[key(p)] = p
	}
	return nil
}
func (f *fakeBackend) Fill(ps []firewall.Pinhole) error { return f.Add(ps) }
func (f *fakeBackend) Del(ps []firewall.Pinhole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range ps {
		delete(f.elems, key(p))
	}
	return nil
}
func (f *fakeBackend) Check() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.damaged {
		return errors.New("flushed")
	}
	return nil
}
func (f *fakeBackend) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.teardowns++
	f.elems = map[string]firewall.Pinhole{}
	return nil
}
func (f *fakeBackend) Counts() (map[string]int, error) { return nil, nil }
func (f *fakeBackend) Close() error                    { f.closed = true; return nil }

func (f *fakeBackend) snapshot() (setups []firewall.Policy, elems map[string]firewall.Pinhole, teardowns int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.setups), maps(f.elems), f.teardowns
}

func maps(m map[string]firewall.Pinhole) map[string]firewall.Pinhole {
	out := map[string]firewall.Pinhole{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestFirewallComponent(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"network": "config interface 'ethnet'\n\toption device 'eth0'\n\toption proto 'dhcp'\n\n" +
			"config interface 'stanet'\n\toption device 'wlan0'\n\toption proto 'dhcp'\n",
		"connmgr":   "config connmgr 'main'\n\toption set_maxelem '4096'\n\toption queue_num '7'\n",
		"whitelist": "198.18.5.0/24\n*.afero.io\n",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, _, _, logBuf := newTestDaemon(t, dir)
	fb := &fakeBackend{}
	var opened []string
	fc := newFirewallComponent(d)
	fc.open = func(opt string) (firewall.Backend, error) { opened = append(opened, opt); return fb, nil }
	d.components = []component{fc}
	clock := d.clock.(*fakeClock)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	do := func(f func()) {
		t.Helper()
		if err := d.Do(ctx, f); err != nil {
			t.Fatal(err)
		}
	}

	// Set up at start with the policy of the configuration and the whitelist.
	var st Status
	do(func() { st = d.Status() })
	setups, _, _ := fb.snapshot()
	// modemnet is not in network: its default device wwan0 is locked down all the same.
	want := firewall.Policy{Uplinks: []string{"eth0", "wlan0", "wwan0"}, Static: []netip.Prefix{netip.MustParsePrefix("198.18.5.0/24")},
		MaxElem: 4096, DNSQueue: firewall.QueueHook{Enabled: true, Num: 7}}
	if len(setups) != 1 || fmt.Sprint(setups[0]) != fmt.Sprint(want) {
		t.Fatalf("setups = %+v, want one of %+v", setups, want)
	}
	if st.Firewall.Backend != "fake" || st.Firewall.DNSQueue != "xt-nfqueue" || st.Firewall.Error != "" {
		t.Errorf("status: %+v", st.Firewall)
	}

	// Pinholes from ubus (permanent) and from the DNS gate (any goroutine, timed).
	addr := netip.MustParseAddr("198.18.0.7")
	do(func() {
		if err := d.FirewallAllow(addr, "fwcfg", true); err != nil {
			t.Error(err)
		}
	})
	var opener FirewallOpener
	do(func() { opener = d.FirewallOpener() })
	if err := opener.Allow([]dnsx.Pinhole{{Addr: netip.MustParseAddr("198.18.0.8"), Timeout: 90 * time.Second, Name: "a.afero.io"}}, false); err != nil {
		t.Fatal(err)
	}
	// A LAN client's answer opens forwarding only.
	if err := opener.Allow([]dnsx.Pinhole{{Addr: netip.MustParseAddr("198.18.0.9"), Timeout: time.Minute, Name: "b.afero.io"}}, true); err != nil {
		t.Fatal(err)
	}
	_, elems, _ := fb.snapshot()
	if _, dev := elems["false:198.18.0.9"]; dev || elems["true:198.18.0.9"].TTL != time.Minute {
		t.Errorf("LAN client's DNS allow: %+v", elems)
	}
	if p := elems["true:198.18.0.7"]; p.TTL != 0 || p.Comment != "fwcfg" {
		t.Errorf("ubus allow: %+v", elems)
	}
	if p := elems["false:198.18.0.8"]; p.TTL != 90*time.Second || p.Comment != "a.afero.io" {
		t.Errorf("DNS allow: %+v", elems)
	}

	// A flush is noticed on the next verify tick and everything is put back.
	fb.mu.Lock()
	fb.damaged, fb.elems = true, map[string]firewall.Pinhole{}
	fb.mu.Unlock()
	clock.Advance(firewallVerifyEvery)
	do(func() { st = d.Status() })
	setups, elems, _ = fb.snapshot()
	if len(setups) != 2 || len(elems) != 3 || st.Firewall.Restores != 1 || st.Firewall.Pinholes != 3 {
		t.Fatalf("after flush: %d setups, elems %v, status %+v", len(setups), elems, st.Firewall)
	}
	if p := elems["false:198.18.0.8"]; p.TTL <= 0 || p.TTL > 90*time.Second {
		t.Errorf("restored DNS pinhole has TTL %v, want what is left of 90s", p.TTL)
	}

	// firewall_restore from the include re-applies at once.
	do(func() {
		if err := d.FirewallRestore(); err != nil {
			t.Error(err)
		}
	})
	if setups, _, _ = fb.snapshot(); len(setups) != 3 {
		t.Errorf("firewall_restore: %d setups", len(setups))
	}

	// Switching the mode off tears down; the methods then refuse.
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption firewall '0'\n")
	errc := make(chan error, 1)
	d.post(reloadEvent{done: errc})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	do(func() {
		if err := d.FirewallAllow(addr, "", false); !errors.Is(err, ErrFirewallOff) {
			t.Errorf("allow while off: %v", err)
		}
		st = d.Status()
	})
	if _, _, td := fb.snapshot(); td != 1 || st.Firewall.Mode != "disabled" || st.Firewall.Backend != "" {
		t.Errorf("after switching off: %d teardowns, status %+v", td, st.Firewall)
	}
	if err := opener.Allow([]dnsx.Pinhole{{Addr: addr, Timeout: time.Second}}, false); !errors.Is(err, ErrFirewallOff) {
		t.Errorf("DNS allow while off: %v", err)
	}

	// On again (another backend option): set up afresh.
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption firewall_backend 'nftables'\n\toption dns_hold '0'\n")
	d.post(reloadEvent{done: errc})
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	setups, _, _ = fb.snapshot()
	if last := setups[len(setups)-1]; len(setups) != 4 || last.DNSQueue.Enabled {
		t.Errorf("after switching on: setups %+v", setups)
	}
	if !slices.Equal(opened, []string{"auto", "nftables"}) {
		t.Errorf("backends opened: %q", opened)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, _, td := fb.snapshot(); td != 2 {
		t.Errorf("teardowns after exit = %d, want 2", td)
	}
	if !fb.closed {
		t.Error("backend not closed at exit")
	}
	_ = logBuf
}

func TestFirewallPolicyFromConfig(t *testing.T) {
	// A disabled uplink is not locked down; the rest is covered by the component test.
	dir := t.TempDir()
	writeConnmgr(t, dir, "config connmgr 'main'\n\nconfig uplink 'ethnet'\n\toption enabled '0'\n\nconfig uplink 'stanet'\n")
	d, _, _, _ := newTestDaemon(t, dir)
	p := FirewallPolicy(d.cur.Config, d.cur.Whitelist)
	if !slices.Equal(p.Uplinks, []string{"wlan0"}) || len(p.Static) != 0 || !p.DNSQueue.Enabled {
		t.Errorf("policy = %+v", p)
	}
}
