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
//
// Putting the record back never holds the lock for long: Setup, Restore
// and Ensure install the rules and sets under the lock, then stream the
// record into the kernel in chunks of restoreChunk addresses, releasing the
// lock between chunks. An Allow meanwhile goes straight to the kernel (and
// takes its address off the restore's list), so a DNS answer waits at most
// for one chunk, never for the whole record.
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
	// The restore under way: keys still to put back, in order, from next;
	// a key is pending while in pending. gen changes with every set-up, so
	// a restore that a newer one overtook stops.
	todo    []recordKey
	next    int
	pending map[recordKey]bool
	gen     int
	last    RestoreResult
	// watching is the running nf_tables watch (nil: none), which repairs what Ensure finds.
	watching *watchState
}

// restoreChunk is how many recorded addresses one step of a restore puts
// back under the lock (one or two netlink batches).
const restoreChunk = 1024

// RestoreResult says how the last putting back of the record went.
type RestoreResult struct {
	At       time.Time     `json:"at,omitzero"` // when the rules and sets were in force again (zero: none yet)
	Learned  int           `json:"learned"`     // addresses recorded when it began
	Restored int           `json:"restored"`    // put back into the kernel
	Failed   int           `json:"failed"`      // refused by the kernel (still recorded)
	Took     time.Duration `json:"took_ns"`     // from At until the last address was back
	// Noticed is when the nf_tables notification of the removal arrived (zero when the
	// periodic check, a reload or the include started it).
	Noticed time.Time `json:"noticed_at,omitzero"`
	Err     string    `json:"error,omitempty"`
}

// New wraps a backend. now is the clock (nil: time.Now).
func New(b Backend, now func() time.Time) *Firewall {
	if now == nil {
		now = time.Now
	}
	return &Firewall{b: b, now: now, rec: newRecord(), queue: QueueOff}
}

// Adopt takes the live learned addresses of another firewall into this
// one's record (a switch of backend); the next Setup puts them into the
// kernel.
func (f *Firewall) Adopt(from *Firewall) {
	from.mu.Lock()
	now := from.now()
	live := from.rec.live(now)
	from.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	now = f.now()
	for _, p := range live {
		f.rec.put(p, now)
	}
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
// queue hook is in force. When the backend refuses the policy, a firewall
// that was set up stays so, with its record, and the next Ensure or Restore
// tries the new policy again.
func (f *Firewall) Setup(p Policy) error {
	np, err := p.Normalize()
	if err != nil {
		return err
	}
	f.mu.Lock()
	err = f.setupLocked(np)
	f.mu.Unlock()
	return f.finishSetup(err)
}

// finishSetup streams the record back after a set-up that succeeded.
func (f *Firewall) finishSetup(err error) error {
	if err != nil && !errors.Is(err, ErrQueueUnavailable) {
		return err
	}
	if _, rerr := f.readd(); rerr != nil {
		return errors.Join(err, rerr)
	}
	return err
}

// SetUplinks changes the locked-down devices (netifd's layer-3 device of an
// uplink appeared, changed or went) and nothing else: where the backend can,
// without setting up again; else by a full set-up that streams the record
// back.
func (f *Firewall) SetUplinks(devs []string) error {
	f.mu.Lock()
	if !f.setUp {
		f.mu.Unlock()
		return ErrNotSetUp
	}
	p := f.policy
	p.Uplinks = devs
	np, err := p.Normalize()
	if err != nil {
		f.mu.Unlock()
		return err
	}
	if slices.Equal(np.Uplinks, f.policy.Uplinks) {
		f.mu.Unlock()
		return nil
	}
	if s, ok := f.b.(uplinkSetter); ok {
		if err := s.setUplinks(np); err == nil {
			f.policy = np
			f.mu.Unlock()
			return nil
		}
		// Damaged meanwhile: set everything up again below.
	}
	err = f.setupLocked(np)
	f.mu.Unlock()
	if err = f.finishSetup(err); err != nil && !errors.Is(err, ErrQueueUnavailable) {
		return err
	}
	return nil
}

// setupLocked installs the policy and lists the record for readd.
func (f *Firewall) setupLocked(p Policy) error {
	f.policy = p
	mode, err := f.b.Setup(p)
	if err != nil && !errors.Is(err, ErrQueueUnavailable) {
		return err
	}
	f.setUp, f.queue = true, mode
	f.listRecordLocked()
	return err
}

// listRecordLocked lists the live record for readd.
func (f *Firewall) listRecordLocked() {
	now := f.now()
	f.rec.prune(now)
	f.gen++
	f.todo = f.rec.keys()
	f.next = 0
	f.pending = make(map[recordKey]bool, len(f.todo))
	for _, k := range f.todo {
		f.pending[k] = true
	}
	f.last = RestoreResult{At: now, Learned: len(f.todo)}
}

// fillLocked puts a chunk of the record back and returns how many went in.
// A batch is all or nothing, so when a set is full the chunk is halved
// until what still fits is in (a few more batches, never one per address
// unless the set has room for single ones only).
func (f *Firewall) fillLocked(chunk []Pinhole) (int, error) {
	err := f.b.Fill(chunk)
	if err == nil {
		return len(chunk), nil
	}
	if !errors.Is(err, ErrSetFull) || len(chunk) == 1 {
		return 0, err
	}
	half := len(chunk) / 2
	n, err1 := f.fillLocked(chunk[:half])
	if err1 != nil && n < half {
		// The set filled up in the first half: the second cannot fit either.
		return n, err1
	}
	m, err2 := f.fillLocked(chunk[half:])
	return n + m, errors.Join(err1, err2)
}

// readd puts the listed record back into the kernel, a chunk at a time,
// releasing the lock between chunks. Each chunk takes the record's current
// expiry of its addresses, so what Allow extended meanwhile is never
// shortened. A chunk the kernel refuses stays recorded (it is counted and
// its error kept); a set that went missing ends the restore, the repair
// that follows starts over. superseded says a newer set-up overtook it (and
// puts the rest back).
func (f *Firewall) readd() (superseded bool, err error) {
	f.mu.Lock()
	gen, start := f.gen, time.Now()
	f.mu.Unlock()
	var errs []error
	for {
		f.mu.Lock()
		if f.gen != gen || !f.setUp {
			f.mu.Unlock()
			return true, errors.Join(errs...)
		}
		now := f.now()
		var chunk []Pinhole
		for f.next < len(f.todo) && len(chunk) < restoreChunk {
			k := f.todo[f.next]
			f.next++
			if !f.pending[k] {
				continue
			}
			delete(f.pending, k)
			if p, ok := f.rec.pinhole(k, now); ok {
				chunk = append(chunk, p)
			}
		}
		if len(chunk) == 0 {
			f.last.Took = time.Since(start)
			if len(errs) > 0 {
				f.last.Err = errors.Join(errs...).Error()
			}
			f.todo, f.pending = nil, nil
			f.mu.Unlock()
			if len(errs) > 0 {
				return false, fmt.Errorf("restore %d learned addresses: %d refused: %w", f.last.Learned, f.last.Failed, errors.Join(errs...))
			}
			return false, nil
		}
		ok, err := f.fillLocked(chunk)
		f.last.Restored += ok
		f.last.Failed += len(chunk) - ok
		switch {
		case err == nil:
		case errors.Is(err, ErrNotSetUp):
			f.last.Err = err.Error()
			f.last.Took = time.Since(start)
			f.mu.Unlock()
			return false, fmt.Errorf("restore %d learned addresses: %w", f.last.Learned, err)
		default:
			if errors.Is(err, ErrSetFull) {
				f.full++
			}
			if len(errs) < 3 {
				errs = append(errs, err)
			}
		}
		f.mu.Unlock()
	}
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
		// During a restore, an address not yet put back goes in now.
		if !f.rec.covers(np, now) || f.pending[recordKey{np.Addr, np.Forward}] {
			todo = append(todo, np)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	if err := f.roomLocked(todo, now); err != nil {
		f.full++
		return err
	}
	if err := f.b.Add(todo); err != nil {
		if errors.Is(err, ErrSetFull) {
			f.full++
		}
		return err
	}
	for _, p := range todo {
		f.rec.put(p, now)
		delete(f.pending, recordKey{p.Addr, p.Forward})
	}
	if now.Sub(f.pruned) > 10*time.Second {
		f.rec.prune(now)
		f.pruned = now
	}
	return nil
}

// roomLocked refuses, as a full kernel set would, new addresses beyond set_maxelem live ones in
// their set. connmgr keeps this bound itself: nftables' sets are made larger (expiredRoom) so
// that addresses expired but not yet collected by the kernel do not take the room of live ones.
// Expired entries are pruned first when the count says full (only near the bound).
func (f *Firewall) roomLocked(ps []Pinhole, now time.Time) error {
	for pruned := false; ; pruned = true {
		add := map[recordSet]int{}
		var over *Pinhole
		for i, p := range ps {
			k := recordKey{p.Addr, p.Forward}
			if f.rec.has(k) {
				continue
			}
			add[k.set()]++
			if f.rec.n[k.set()]+add[k.set()] > f.policy.MaxElem && over == nil {
				over = &ps[i]
			}
		}
		if over == nil {
			return nil
		}
		if pruned {
			return fmt.Errorf("%s: %s: %w%s", f.b.Name(), over.Addr, ErrSetFull, maxElemNote(f.policy.MaxElem))
		}
		f.rec.prune(now)
		f.pruned = now
	}
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
	delete(f.pending, recordKey{p.Addr, p.Forward})
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
				f.rec.delete(k)
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
// fw3/fw4 restarts). It always sets the rules up again (a rule changed in
// place escapes Check), and puts back what the record holds.
func (f *Firewall) Restore() error {
	f.mu.Lock()
	if !f.setUp {
		f.mu.Unlock()
		return ErrNotSetUp
	}
	f.restores++
	err := f.setupLocked(f.policy)
	f.mu.Unlock()
	return f.finishSetup(err)
}

// Ensure verifies and restores when something is missing; it reports
// whether it restored. This is the daemon's periodic check. While a watch
// of nf_tables' notifications runs (Watch), the damage Ensure finds is left
// to it: it repairs on the notification, or after watchGrace when none came.
func (f *Firewall) Ensure() (restored bool, err error) {
	return f.ensure(nil)
}

// ensure is Ensure, for the watch ws (nil: the periodic check).
func (f *Firewall) ensure(ws *watchState) (restored bool, err error) {
	f.mu.Lock()
	if !f.setUp || f.b.Check() == nil {
		if ws != nil {
			ws.noticed.Store(0)
			ws.deferred = false
		}
		f.mu.Unlock()
		return false, nil
	}
	if ws == nil && f.watching != nil {
		w := f.watching
		if !w.deferred {
			w.deferred = true
			time.AfterFunc(watchGrace, func() {
				f.mu.Lock()
				defer f.mu.Unlock()
				if !w.closed {
					signal(w.kick)
				}
			})
		}
		f.mu.Unlock()
		return false, nil
	}
	f.restores++
	var at int64
	if ws != nil {
		// Taken before the set-up, whose own rule deletions the watch hears of too. Zero when
		// the notification was lost and the periodic check's find is repaired.
		at = ws.noticed.Swap(0)
		ws.deferred = false
	}
	err = f.setupLocked(f.policy)
	if at != 0 {
		f.last.Noticed = time.Unix(0, at)
	}
	f.mu.Unlock()
	if err != nil && !errors.Is(err, ErrQueueUnavailable) {
		return true, err
	}
	superseded, rerr := f.readd()
	// A restore that a newer one overtook says nothing: the newer one reports.
	return !superseded, errors.Join(err, rerr)
}

// LastRestore says how the last putting back of the record went.
func (f *Firewall) LastRestore() RestoreResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

// Teardown removes everything connmgr added and forgets the record.
func (f *Firewall) Teardown() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.setUp = false
	f.queue = QueueOff
	f.rec = newRecord()
	f.gen++
	f.todo, f.pending = nil, nil
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
