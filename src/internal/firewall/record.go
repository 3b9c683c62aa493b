package firewall

import (
	"net/netip"
	"slices"
	"time"
)

// recordKey identifies a pinhole: the same address may be open for the
// device and for forwarding independently.
type recordKey struct {
	addr    netip.Addr
	forward bool
}

type recordEntry struct {
	expires time.Time // zero: permanent
	comment string
}

// record is connmgr's own memory of the learned addresses and their
// expiry, so that it can put them back after the firewall was flushed.
// It is pure: the caller passes the time.
type record struct {
	m map[recordKey]recordEntry
	// n counts the entries of each kernel set (expired ones until pruned).
	n map[recordSet]int
}

// recordSet names a kernel set of learned addresses: family and role.
type recordSet struct{ v4, forward bool }

func (k recordKey) set() recordSet { return recordSet{k.addr.Is4(), k.forward} }

func newRecord() *record {
	return &record{m: map[recordKey]recordEntry{}, n: map[recordSet]int{}}
}

// has tells whether k is recorded (expired or not).
func (r *record) has(k recordKey) bool {
	_, ok := r.m[k]
	return ok
}

// delete forgets k.
func (r *record) delete(k recordKey) {
	if _, ok := r.m[k]; ok {
		delete(r.m, k)
		r.n[k.set()]--
	}
}

// covers tells whether the address is recorded for at least ttl from now
// (ttl 0: permanently), in which case the kernel needs no update.
func (r *record) covers(p Pinhole, now time.Time) bool {
	e, ok := r.m[recordKey{p.Addr, p.Forward}]
	if !ok {
		return false
	}
	if e.expires.IsZero() {
		return true
	}
	if p.TTL == 0 {
		return false
	}
	return !e.expires.Before(now.Add(p.TTL))
}

// put records a pinhole as now in the kernel. A longer-lived entry is
// never shortened: the kernel got the later expiry and keeps it.
func (r *record) put(p Pinhole, now time.Time) {
	k := recordKey{p.Addr, p.Forward}
	e := recordEntry{comment: p.Comment}
	if p.TTL > 0 {
		e.expires = now.Add(p.TTL)
	}
	old, ok := r.m[k]
	if ok && old.expires.IsZero() {
		e.expires = time.Time{}
	}
	if !ok {
		r.n[k.set()]++
	}
	r.m[k] = e
}

func (r *record) remove(addr netip.Addr, forward bool) {
	r.delete(recordKey{addr, forward})
}

// prune drops expired entries.
func (r *record) prune(now time.Time) {
	for k, e := range r.m {
		if !e.expires.IsZero() && !e.expires.After(now) {
			r.delete(k)
		}
	}
}

// keys returns the recorded keys in live's order.
func (r *record) keys() []recordKey {
	out := make([]recordKey, 0, len(r.m))
	for k := range r.m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b recordKey) int {
		if c := a.addr.Compare(b.addr); c != 0 {
			return c
		}
		switch {
		case a.forward == b.forward:
			return 0
		case !a.forward:
			return -1
		}
		return 1
	})
	return out
}

// pinhole returns a recorded entry with its remaining lifetime, if it is
// still live at now.
func (r *record) pinhole(k recordKey, now time.Time) (Pinhole, bool) {
	e, ok := r.m[k]
	if !ok {
		return Pinhole{}, false
	}
	p := Pinhole{Addr: k.addr, Forward: k.forward, Comment: e.comment}
	if !e.expires.IsZero() {
		p.TTL = e.expires.Sub(now)
		if p.TTL <= 0 {
			return Pinhole{}, false
		}
	}
	return p, true
}

// live returns the entries still valid at now as pinholes with their
// remaining lifetime, in a stable order (addresses, device before forward).
func (r *record) live(now time.Time) []Pinhole {
	var out []Pinhole
	for _, k := range r.keys() {
		if p, ok := r.pinhole(k, now); ok {
			out = append(out, p)
		}
	}
	return out
}

// counts returns the number of live entries: device v4, v6, forward v4, v6.
func (r *record) counts(now time.Time) (dev4, dev6, fwd4, fwd6 int) {
	for k, e := range r.m {
		if !e.expires.IsZero() && !e.expires.After(now) {
			continue
		}
		switch {
		case !k.forward && k.addr.Is4():
			dev4++
		case !k.forward:
			dev6++
		case k.addr.Is4():
			fwd4++
		default:
			fwd6++
		}
	}
	return
}
