package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Firewall is what the daemon uses: a Backend plus the record of learned
// addresses, so that Restore can put back everything after a flush. It is
// safe for concurrent use (the DNS extractor calls Allow from its own
// goroutine while the daemon loop verifies and restores).
type Firewall struct {
	mu       sync.Mutex
	b        Backend
	now      func() time.Time
	rec      *record
	policy   Policy
	setUp    bool
	queue    QueueMode
	restores int
	full     int
	pruned   time.Time
}

// New wraps a backend. now is the clock (nil: time.Now).
func New(b Backend, now func() time.Time) *Firewall {
	if now == nil {
		now = time.Now
	}
	return &Firewall{b: b, now: now, rec: newRecord(), queue: QueueOff}
}

// Backend names the backend in use (BackendNFT or BackendIPTables).
func (f *Firewall) Backend() string { return f.b.Name() }

// QueueMode says how DNS replies are queued since the last Setup.
func (f *Firewall) QueueMode() QueueMode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queue
}

// Setup installs the policy (idempotent) and puts the recorded addresses
// back. An error wrapping ErrQueueUnavailable means everything but the DNS
// queue hook is in force.
func (f *Firewall) Setup(p Policy) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	np, err := p.Normalize()
	if err != nil {
		return err
	}
	return f.setupLocked(np)
}

func (f *Firewall) setupLocked(p Policy) error {
	mode, err := f.b.Setup(p)
	if err != nil && !errors.Is(err, ErrQueueUnavailable) {
		return err
	}
	f.policy, f.setUp, f.queue = p, true, mode
	if rerr := f.readdLocked(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// SetUplinks changes the locked-down devices (netifd's layer-3 device of an
// uplink appeared, changed or went) and nothing else: where the backend can,
// without setting up again; else by a full Setup with the record.
func (f *Firewall) SetUplinks(devs []string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.setUp {
		return ErrNotSetUp
	}
	p := f.policy
	p.Uplinks = devs
	np, err := p.Normalize()
	if err != nil {
		return err
	}
	if slices.Equal(np.Uplinks, f.policy.Uplinks) {
		return nil
	}
	if s, ok := f.b.(uplinkSetter); ok {
		if err := s.setUplinks(np); err == nil {
			f.policy = np
			return nil
		}
		// Damaged meanwhile: set everything up again below.
	}
	if err := f.setupLocked(np); err != nil && !errors.Is(err, ErrQueueUnavailable) {
		return err
	}
	return nil
}

// readdLocked puts every live recorded address back into the kernel.
func (f *Firewall) readdLocked() error {
	now := f.now()
	f.rec.prune(now)
	live := f.rec.live(now)
	if len(live) == 0 {
		return nil
	}
	if err := f.b.Add(live); err != nil {
		return fmt.Errorf("restore %d learned addresses: %w", len(live), err)
	}
	return nil
}

// Allow opens addr for ttl (0: permanently), for the device itself or,
// with forward, for LAN clients. When the address is already open for at
// least that long nothing touches the kernel.
func (f *Firewall) Allow(addr netip.Addr, ttl time.Duration, forward bool) error {
	return f.AllowAll([]Pinhole{{Addr: addr, TTL: ttl, Forward: forward}})
}

// AllowAll opens several addresses in one kernel change (one DNS answer).
// When it returns nil every address is in the kernel set.
func (f *Firewall) AllowAll(ps []Pinhole) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.setUp {
		return ErrNotSetUp
	}
	now := f.now()
	var todo []Pinhole
	for _, p := range ps {
		np, err := p.normalize()
		if err != nil {
			return fmt.Errorf("allow: %w", err)
		}
		if !f.rec.covers(np, now) {
			todo = append(todo, np)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if err := f.b.Add(todo); err != nil {
		if errors.Is(err, ErrSetFull) {
			f.full++
		}
		return err
	}
	for _, p := range todo {
		f.rec.put(p, now)
	}
	if now.Sub(f.pruned) > 10*time.Second {
		f.rec.prune(now)
		f.pruned = now
	}
	return nil
}

// Disallow closes addr (device or forwarding) now.
func (f *Firewall) Disallow(addr netip.Addr, forward bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.setUp {
		return ErrNotSetUp
	}
	p, err := Pinhole{Addr: addr, Forward: forward}.normalize()
	if err != nil {
		return fmt.Errorf("disallow: %w", err)
	}
	f.rec.remove(p.Addr, p.Forward)
	return f.b.Del([]Pinhole{p})
}

// Forget closes learned addresses that gave way to a bound of the DNS
// extraction (its ledger made room), for the device and for forwarding. An
// address open permanently (ubus allow, fwcfg.sh add) stays, and so does one
// this firewall never recorded.
func (f *Firewall) Forget(addrs []netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.setUp {
		return ErrNotSetUp
	}
	var del []Pinhole
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		for _, fwd := range []bool{false, true} {
			k := recordKey{a, fwd}
			if e, ok := f.rec.m[k]; ok && !e.expires.IsZero() {
				delete(f.rec.m, k)
				del = append(del, Pinhole{Addr: a, Forward: fwd})
			}
		}
	}
	if len(del) == 0 {
		return nil
	}
	return f.b.Del(del)
}

// Verify returns nil when all our rules and sets are in place.
func (f *Firewall) Verify() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.setUp {
		return ErrNotSetUp
	}
	return f.b.Check()
}

// Restore re-installs the policy and the recorded addresses, whatever is
// left of them in the kernel (after `nft flush ruleset`, `iptables -F`,
// fw3/fw4 restarts).
func (f *Firewall) Restore() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.setUp {
		return ErrNotSetUp
	}
	f.restores++
	return f.setupLocked(f.policy)
}

// Ensure verifies and restores when something is missing; it reports
// whether it restored. This is the cheap periodic check of the daemon.
func (f *Firewall) Ensure() (restored bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.setUp {
		return false, nil
	}
	if f.b.Check() == nil {
		return false, nil
	}
	f.restores++
	return true, f.setupLocked(f.policy)
}

// Teardown removes everything connmgr added and forgets the record.
func (f *Firewall) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setUp = false
	f.queue = QueueOff
	f.rec = newRecord()
	return f.b.Teardown()
}

// Close releases the backend's sockets; kernel state stays.
func (f *Firewall) Close() error { return f.b.Close() }

// Stats is the firewall part of the daemon's status.
type Stats struct {
	Backend  string         `json:"backend"`
	SetUp    bool           `json:"active"`
	Queue    QueueMode      `json:"dns_queue"`
	Learned4 int            `json:"learned_ipv4"`
	Learned6 int            `json:"learned_ipv6"`
	Forward4 int            `json:"forward_ipv4"`
	Forward6 int            `json:"forward_ipv6"`
	Static   int            `json:"static"`
	MaxElem  int            `json:"set_maxelem"`
	Kernel   map[string]int `json:"kernel_sets,omitempty"`
	Full     int            `json:"set_full_errors"`
	Restores int            `json:"restores"`
}

// Stats reports counters; kernel set sizes are read when withKernel.
func (f *Firewall) Stats(withKernel bool) Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	s := Stats{Backend: f.b.Name(), SetUp: f.setUp, Queue: f.queue, Static: len(f.policy.Static),
		MaxElem: f.policy.MaxElem, Full: f.full, Restores: f.restores}
	s.Learned4, s.Learned6, s.Forward4, s.Forward6 = f.rec.counts(now)
	if withKernel && f.setUp {
		if k, err := f.b.Counts(); err == nil {
			s.Kernel = k
		}
	}
	return s
}
