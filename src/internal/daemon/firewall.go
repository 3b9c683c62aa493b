package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/dnsgate"
	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/whitelist"
)

// ErrFirewallOff is returned by the firewall methods while the firewall mode is off (-d or
// option firewall '0').
var ErrFirewallOff = errors.New("firewall mode is off")

// firewallVerifyEvery is how often the component checks that nobody flushed its rules. The
// watch of nf_tables' notifications repairs at once (nft flush ruleset, fw4 flush and stop,
// iptables-nft -F), and so does the firewall include (fw3/fw4 reload); this is the backstop,
// and what notices iptables-legacy and ip set damage.
const firewallVerifyEvery = 5 * time.Second

// FirewallPolicy is the lock-down for a configuration: the enabled uplinks' configured devices
// (the daemon adds netifd's layer-3 devices), the
// whitelist's addresses and prefixes (and echo_host when it is an address), the set bound and, when DNS replies are held, the
// queue hook. `connmgr fw init` without a daemon uses it too.
func FirewallPolicy(cfg *config.Config, wl *whitelist.List) firewall.Policy {
	p := firewall.Policy{MaxElem: cfg.Main.SetMaxElem,
		DNSQueue: firewall.QueueHook{Enabled: cfg.Main.DNSHold, Num: cfg.Main.QueueNum}}
	for _, u := range cfg.Uplinks {
		if u.Enabled && u.Device != "" && !slices.Contains(p.Uplinks, u.Device) {
			p.Uplinks = append(p.Uplinks, u.Device)
		}
	}
	if wl != nil {
		p.Static = wl.Prefixes()
	}
	// The probe's own target is never firewalled away from it; a name is opened by the DNS
	// extraction instead (see dnsMatcher).
	if a, err := netip.ParseAddr(cfg.Main.EchoHost); err == nil {
		a = a.Unmap().WithZone("")
		p.Static = append(p.Static, netip.PrefixFrom(a, a.BitLen()))
	}
	return p
}

// firewallComponent keeps the lock-down in force while the firewall mode is on: set up at
// start and when the mode is switched on, re-applied when the configuration changes, checked
// every few seconds and restored with the learned addresses after a flush, removed at exit and
// when the mode is switched off.
type firewallComponent struct {
	d *Daemon
	// open makes the backend for the option firewall_backend (tests inject a fake).
	open    func(option string) (firewall.Backend, error)
	fw      atomic.Pointer[firewall.Firewall] // nil while off; read by the DNS gate's goroutines
	backend string                            // option the open backend was made for
	policy  firewall.Policy
	timer   Timer
	lastErr string
	// unwatch ends the watch of the firewall in c.fw; watching says whether one runs.
	unwatch  context.CancelFunc
	watching bool
}

func newFirewallComponent(d *Daemon) *firewallComponent {
	return &firewallComponent{d: d, open: firewall.Open}
}

func (c *firewallComponent) start(ctx context.Context) error {
	c.apply(c.d.cur)
	c.schedule()
	return nil
}

func (c *firewallComponent) schedule() {
	c.timer = c.d.after(firewallVerifyEvery, funcEvent{f: c.verify, done: make(chan struct{})})
}

// verify runs on the loop: restore what a flush removed, or retry a failed set-up.
func (c *firewallComponent) verify() {
	defer c.schedule()
	fw := c.fw.Load()
	switch {
	case fw == nil && c.d.cur.FirewallOn:
		c.apply(c.d.cur)
	case fw != nil && c.d.cur.FirewallOn && c.d.cur.Config.Main.FirewallBackend != c.backend:
		c.apply(c.d.cur) // a switch of backend that failed before
	case fw != nil:
		restored, err := fw.Ensure()
		if restored {
			c.logRestored(fw, "periodic check", err)
		}
		c.noteErr(err)
	}
}

// logRestored says that the rules were put back, and how the learned addresses went.
func (c *firewallComponent) logRestored(fw *firewall.Firewall, by string, err error) {
	r := fw.LastRestore()
	args := []any{"noticed_by", by, "learned", r.Learned, "restored", r.Restored, "refused", r.Failed,
		"took", r.Took.Round(time.Millisecond)}
	if err != nil { // a restore that worked logs no err=<nil>
		args = append(args, "err", err)
	}
	c.d.log.Warn("firewall rules were removed from the kernel (flush or firewall restart); restored them with the learned addresses", args...)
}

// watch starts repairing fw on nf_tables' notifications, replacing any earlier watch.
func (c *firewallComponent) watch(fw *firewall.Firewall) {
	if c.unwatch != nil {
		c.unwatch()
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.unwatch = cancel
	err := fw.Watch(ctx, func(err error) {
		by := "nf_tables event"
		if fw.LastRestore().Noticed.IsZero() { // the check's find, no notification came
			by = "periodic check"
		}
		c.logRestored(fw, by, err)
		// The loop owns lastErr; the watch must not wait on a loop that is stopping.
		select {
		case c.d.events <- funcEvent{f: func() { c.noteErr(err) }, done: make(chan struct{})}:
		case <-ctx.Done():
		}
	})
	c.watching = err == nil
	if err != nil {
		c.d.log.Info("firewall damage is noticed by the periodic check only", "every", firewallVerifyEvery, "why", err)
	}
}

// apply brings the kernel to what l asks for.
func (c *firewallComponent) apply(l *Loaded) {
	fw := c.fw.Load()
	if !l.FirewallOn {
		if fw != nil {
			c.off("firewall mode switched off")
		}
		return
	}
	opt := l.Config.Main.FirewallBackend
	old := fw
	if fw == nil || opt != c.backend {
		// A new backend, or a switch: the new one takes the learned addresses of the old,
		// and the old stays in force until the new one is.
		b, err := c.open(opt)
		if err != nil {
			c.noteErr(fmt.Errorf("firewall backend %s: %w", opt, err))
			return
		}
		switch {
		case old != nil && b.Name() == old.Backend():
			// The option changed (auto to what auto chose): nothing to switch.
			b.Close()
			c.backend = opt
		default:
			fw = firewall.New(b, c.d.clock.Now)
			if old != nil {
				fw.Adopt(old)
			}
		}
	}
	p := FirewallPolicy(l.Config, l.Whitelist)
	p.Uplinks = c.d.lockdownDevices(l.Config)
	err := fw.Setup(p)
	switch {
	case errors.Is(err, firewall.ErrQueueUnavailable):
		c.d.log.Warn("DNS replies cannot be queued here; DNS extraction falls back to capture", "err", err)
		err = nil
	case err != nil && fw == old:
		// The firewall in force keeps its rules and its record of learned addresses; the
		// periodic check tries the new policy again.
		c.noteErr(fmt.Errorf("firewall set-up: %w", err))
		return
	case err != nil:
		// The verify tick retries with a fresh backend; a switch keeps the old one meanwhile.
		c.noteErr(fmt.Errorf("firewall set-up: %w", err))
		fw.Close()
		return
	}
	c.noteErr(nil)
	c.policy = p
	if fw != old {
		if old != nil {
			c.off("firewall_backend changed to " + opt)
		}
		c.backend = opt
		c.fw.Store(fw)
		c.watch(fw)
	}
	c.d.log.Info("firewall lock-down in force", "backend", fw.Backend(), "uplinks", p.Uplinks,
		"static", len(p.Static), "dns_queue", fw.QueueMode())
}

// off removes everything connmgr added.
func (c *firewallComponent) off(why string) {
	fw := c.fw.Swap(nil)
	if fw == nil {
		return
	}
	if c.unwatch != nil {
		c.unwatch()
		c.unwatch, c.watching = nil, false
	}
	if err := fw.Teardown(); err != nil {
		c.d.log.Error("firewall teardown", "err", err)
	} else {
		c.d.log.Info("firewall lock-down removed", "why", why)
	}
	fw.Close()
}

func (c *firewallComponent) noteErr(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	if msg != "" && msg != c.lastErr {
		c.d.log.Error("firewall", "err", err)
	}
	c.lastErr = msg
}

func (c *firewallComponent) reload(old, cur *Loaded) { c.apply(cur) }

// netifdChanged follows the uplinks' layer-3 devices: only the locked-down devices change,
// the learned addresses stay where they are.
func (c *firewallComponent) netifdChanged(string, *NetifdInterface) {
	fw := c.fw.Load()
	if fw == nil {
		return
	}
	devs := c.d.lockdownDevices(c.d.cur.Config)
	if slices.Equal(devs, c.policy.Uplinks) {
		return
	}
	if err := fw.SetUplinks(devs); err != nil {
		c.noteErr(fmt.Errorf("firewall: uplink devices %v: %w", devs, err))
		return
	}
	c.d.log.Info("firewall lock-down follows the uplink devices", "uplinks", devs, "was", c.policy.Uplinks)
	c.policy.Uplinks = devs
}

func (c *firewallComponent) stop() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.off("connmgr exits")
}

func (c *firewallComponent) fillStatus(s *Status) {
	fw := c.fw.Load()
	s.Firewall.Error = c.lastErr
	if fw == nil {
		return
	}
	st := fw.Stats(false)
	s.Firewall.Backend = st.Backend
	s.Firewall.Pinholes = st.Learned4 + st.Learned6 + st.Forward4 + st.Forward6
	s.Firewall.DNSQueue = string(st.Queue)
	s.Firewall.Restores = st.Restores
	s.Firewall.SetFullErrors = st.Full
	if r := fw.LastRestore(); !r.At.IsZero() {
		s.Firewall.LastRestore = &r
	}
	s.Firewall.Watch = "periodic check"
	if c.watching {
		s.Firewall.Watch = "nf_tables events"
	}
}

// firewall returns the firewall component, nil when the daemon has none.
func (d *Daemon) firewall() *firewallComponent {
	for _, c := range d.components {
		if f, ok := c.(*firewallComponent); ok {
			return f
		}
	}
	return nil
}

func (d *Daemon) activeFirewall() (*firewall.Firewall, error) {
	c := d.firewall()
	if c == nil || !d.cur.FirewallOn {
		return nil, ErrFirewallOff
	}
	fw := c.fw.Load()
	if fw == nil {
		return nil, fmt.Errorf("firewall not set up: %s", c.lastErr)
	}
	return fw, nil
}

// FirewallAllow opens addr permanently (until teardown) for the device, or with forward for
// LAN clients: ubus allow, `connmgr fw add|add_forwarding`. It runs on the loop (use Do).
func (d *Daemon) FirewallAllow(addr netip.Addr, comment string, forward bool) error {
	fw, err := d.activeFirewall()
	if err != nil {
		return err
	}
	return fw.AllowAll([]firewall.Pinhole{{Addr: addr, Forward: forward, Comment: comment}})
}

// FirewallDisallow closes addr: ubus disallow, `connmgr fw del|del_forwarding`. It runs on the
// loop (use Do).
func (d *Daemon) FirewallDisallow(addr netip.Addr, forward bool) error {
	fw, err := d.activeFirewall()
	if err != nil {
		return err
	}
	return fw.Disallow(addr, forward)
}

// FirewallRestore re-installs the rules and the learned addresses: ubus firewall_restore,
// called by the firewall include after every fw3/fw4 reload. It runs on the loop (use Do).
func (d *Daemon) FirewallRestore() error {
	c := d.firewall()
	if c == nil || !d.cur.FirewallOn {
		return ErrFirewallOff
	}
	fw := c.fw.Load()
	if fw == nil {
		c.apply(d.cur)
		if c.fw.Load() == nil {
			return fmt.Errorf("firewall not set up: %s", c.lastErr)
		}
		return nil
	}
	err := fw.Restore()
	if errors.Is(err, firewall.ErrQueueUnavailable) {
		err = nil
	}
	return err
}

// FirewallOpener is what the DNS extraction opens pinholes with. It may be called from any
// goroutine; it returns once the kernel holds every address.
func (d *Daemon) FirewallOpener() FirewallOpener { return FirewallOpener{c: d.firewall()} }

// FirewallQueueMode says how DNS replies reach the extractor (nft-queue, xt-nfqueue,
// unavailable or off). It runs on the loop.
func (d *Daemon) FirewallQueueMode() firewall.QueueMode {
	if c := d.firewall(); c != nil {
		if fw := c.fw.Load(); fw != nil {
			return fw.QueueMode()
		}
	}
	return firewall.QueueOff
}

// FirewallOpener adapts the firewall to the DNS gate's Opener.
type FirewallOpener struct{ c *firewallComponent }

// Allow opens the answered addresses for their TTL (plus grace, already in Timeout): for the
// device (and the LAN behind it), or with forward, a LAN client's answer, for forwarding only.
// A full set is reported as dnsgate.ErrSetFull, so the gate makes room and tries again.
func (o FirewallOpener) Allow(ps []dnsx.Pinhole, forward bool) error {
	fw, err := o.active()
	if err != nil {
		return err
	}
	out := make([]firewall.Pinhole, 0, len(ps))
	for _, p := range ps {
		// A timeout of 0 would mean permanent: DNS answers always expire.
		out = append(out, firewall.Pinhole{Addr: p.Addr, TTL: max(p.Timeout, time.Second), Forward: forward, Comment: p.Name})
	}
	err = fw.AllowAll(out)
	if errors.Is(err, firewall.ErrSetFull) {
		return fmt.Errorf("%w: %w", dnsgate.ErrSetFull, err)
	}
	return err
}

// Forget closes learned addresses that gave way to a bound of DNS extraction (addresses
// opened by hand stay).
func (o FirewallOpener) Forget(as []netip.Addr) error {
	fw, err := o.active()
	if err != nil {
		return err
	}
	return fw.Forget(as)
}

func (o FirewallOpener) active() (*firewall.Firewall, error) {
	if o.c == nil {
		return nil, ErrFirewallOff
	}
	if fw := o.c.fw.Load(); fw != nil {
		return fw, nil
	}
	return nil, ErrFirewallOff
}
