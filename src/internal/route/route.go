// Package route owns the routing state connmgr puts in the kernel, over
// netlink only, for one address family per Manager: the default route of
// the lowest metric in the main table (IPv4: 0; IPv6: 1, as the kernel
// turns an IPv6 metric 0 into 1024) via the selected uplink's gateway; per
// uplink a routing table (default route and on-link subnets) plus a source
// rule for each of the uplink's addresses, so that connections bound to an
// uplink keep leaving through it after the default route moved; and
// removal of conntrack entries of flows through a dead uplink. Every route
// it installs carries its own protocol number, so it can find, restore and
// remove exactly its own state.
//
// Use: one Manager per family (Config.Family), each fed the Desired state
// of its family's uplinks: Uplink.Addr, OtherAddrs and Gateway are of that
// family (for IPv6 the gateway is usually link-local: the route goes via
// it and the uplink's device; OtherAddrs are the family's further addresses
// of the uplink, each of which gets a source rule; compare states with
// Desired.Equal). Apply whenever the Desired state changed or
// netmon says our routes or rules changed (it restores what was deleted);
// FlushConntrack with the addresses of a dead uplink; Cleanup on exit. Both
// Managers may share Proto, TableBase and RulePref: the kernel keeps each
// family's tables and rules apart, and each Manager touches only its own
// family's.
package route

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/ctnl"
	"github.com/afero/af-conn/internal/rtnl"
	"github.com/afero/af-conn/internal/uplink"
)

// Defaults of Config.
const (
	// DefaultProto marks our routes ("af"; unassigned in rt_protos).
	DefaultProto = 175
	// DefaultTableBase is the routing table of the uplink in slot 0.
	DefaultTableBase = 240
	// DefaultRulePref is the preference of the source rule of slot 0;
	// below the main table's 32766 and netifd's ip4table rules (10000+).
	DefaultRulePref = 9000
	// maxSlots bounds the tables and rule preferences we own.
	maxSlots = 8
)

// Config says which kernel objects are ours.
type Config struct {
	// Family is the address family of the routes and rules the Manager
	// owns; zero is IPv4.
	Family    uplink.Family
	Proto     int // route protocol of our routes
	TableBase int // table of slot i is TableBase+i
	RulePref  int // source rule of slot i has preference RulePref+i
	// Namespace, if set, is the network namespace to work in (tests).
	Namespace *netns.NsHandle
}

// Uplink is what routing needs of one up uplink, in the Manager's family.
type Uplink struct {
	Name   string
	Slot   int    // 0..7, stable per configured uplink: picks table and rule
	Device string // kernel device name
	// Addr is the uplink's address (the one its probes use), with its
	// prefix: a source rule sends its traffic to the uplink's table, and
	// the prefix is on-link there.
	Addr netip.Prefix
	// OtherAddrs are the uplink's further addresses of the family (IPv6:
	// SLAAC next to DHCPv6, several prefixes): each gets a source rule and
	// its on-link prefix too, so connections from any of them stay.
	OtherAddrs []netip.Prefix
	// Gateway is the next hop of the uplink's own default route (IPv6:
	// usually link-local, with or without zone); invalid for a
	// point-to-point device (route via the device).
	Gateway netip.Addr
}

// addrs returns Addr and OtherAddrs.
func (u *Uplink) addrs() []netip.Prefix {
	return append([]netip.Prefix{u.Addr}, u.OtherAddrs...)
}

// Desired is the routing state to have.
type Desired struct {
	Uplinks  []Uplink // the uplinks that are up (have an address and a default route)
	Selected string   // name of the uplink carrying the default route, "" for none
}

// Equal says d and o are the same state.
func (d Desired) Equal(o Desired) bool {
	return d.Selected == o.Selected && slices.EqualFunc(d.Uplinks, o.Uplinks, func(a, b Uplink) bool {
		return a.Name == b.Name && a.Slot == b.Slot && a.Device == b.Device && a.Addr == b.Addr &&
			a.Gateway == b.Gateway && slices.Equal(a.OtherAddrs, b.OtherAddrs)
	})
}

// Manager applies Desired to the kernel. Not safe for concurrent use: the
// daemon's loop owns it.
type Manager struct {
	cfg    Config
	family uint8        // unix.AF_INET or AF_INET6
	any    netip.Prefix // the family's default destination (0.0.0.0/0, ::/0)
	metric int          // of our routes: the family's lowest
	h      *rtnl.Conn   // rtnetlink
	ct     *ctnl.Conn
}

// New opens the netlink handle.
func New(cfg Config) (*Manager, error) {
	if cfg.Proto == 0 {
		cfg.Proto = DefaultProto
	}
	if cfg.TableBase == 0 {
		cfg.TableBase = DefaultTableBase
	}
	if cfg.RulePref == 0 {
		cfg.RulePref = DefaultRulePref
	}
	if cfg.Family == 0 {
		cfg.Family = uplink.IPv4
	}
	m := &Manager{cfg: cfg, family: unix.AF_INET, any: netip.PrefixFrom(netip.IPv4Unspecified(), 0)}
	switch cfg.Family {
	case uplink.IPv4:
	case uplink.IPv6:
		// The kernel makes an IPv6 route's metric 0 into 1024.
		m.family, m.any, m.metric = unix.AF_INET6, netip.PrefixFrom(netip.IPv6Unspecified(), 0), 1
	default:
		return nil, fmt.Errorf("route: unknown address family %d", cfg.Family)
	}
	ns := netns.None()
	if cfg.Namespace != nil {
		ns = *cfg.Namespace
	}
	h, err := rtnl.Dial(unix.NETLINK_ROUTE, ns)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	ct, err := ctnl.Open(ns, ctTimeout)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("open ctnetlink: %w", err)
	}
	m.h, m.ct = h, ct
	return m, nil
}

// ctTimeout bounds a wait for the kernel's answer on ctnetlink (it
// answers at once; a dump of a full table comes in many reads).
const ctTimeout = 2 * time.Second

// Close releases the netlink sockets (it does not remove routes: Cleanup).
func (m *Manager) Close() {
	m.h.Close()
	m.ct.Close()
}

// Proto returns the protocol number our routes carry.
func (m *Manager) Proto() int { return m.cfg.Proto }

// Family returns the address family of the Manager's routes and rules.
func (m *Manager) Family() uplink.Family { return m.cfg.Family }

// check says what is wrong with u for this Manager, nil if nothing.
func (m *Manager) check(u *Uplink) error {
	if u.Slot < 0 || u.Slot >= maxSlots {
		return fmt.Errorf("uplink %s: slot %d out of range 0..%d", u.Name, u.Slot, maxSlots-1)
	}
	for _, p := range u.addrs() {
		if !p.IsValid() || uplink.FamilyOf(p.Addr()) != m.cfg.Family || p.Addr().Is4In6() {
			return fmt.Errorf("uplink %s: address %v is not an %v prefix", u.Name, p, m.cfg.Family)
		}
	}
	if u.Gateway.IsValid() && (uplink.FamilyOf(u.Gateway) != m.cfg.Family || u.Gateway.Is4In6()) {
		return fmt.Errorf("uplink %s: gateway %v is not an %v address", u.Name, u.Gateway, m.cfg.Family)
	}
	return nil
}

// wantRoutes returns the routes of d, keyed for comparison.
func (m *Manager) wantRoutes(d Desired) (map[string]*rtnl.Route, error) {
	want := map[string]*rtnl.Route{}
	for _, u := range d.Uplinks {
		if err := m.check(&u); err != nil {
			return nil, err
		}
		link, err := m.h.LinkByName(u.Device)
		if err != nil {
			return nil, fmt.Errorf("uplink %s: device %s: %w", u.Name, u.Device, err)
		}
		idx := link.Index
		table := m.cfg.TableBase + u.Slot
		// A link-local gateway's zone is the device: the kernel knows it
		// by the route's device, and reports it without zone.
		gw := u.Gateway.WithZone("")
		def := m.defaultRoute(idx, gw, table, m.metric)
		want[key(def)] = def
		subnets := map[netip.Prefix]bool{}
		for _, p := range u.addrs() {
			// One on-link route per subnet (the first address is its
			// source): two would replace each other at every Apply.
			if p.Bits() >= p.Addr().BitLen() || subnets[p.Masked()] {
				continue
			}
			subnets[p.Masked()] = true
			sub := &rtnl.Route{Family: m.family, LinkIndex: idx, Dst: p.Masked(), Src: p.Addr(),
				Scope: unix.RT_SCOPE_LINK, Table: table, Priority: m.metric, Protocol: uint8(m.cfg.Proto)}
			want[key(sub)] = sub
		}
		if u.Name == d.Selected {
			main := m.defaultRoute(idx, gw, unix.RT_TABLE_MAIN, m.metric)
			want[key(main)] = main
		}
	}
	if d.Selected != "" && !slices.ContainsFunc(d.Uplinks, func(u Uplink) bool { return u.Name == d.Selected }) {
		return nil, fmt.Errorf("selected uplink %s is not among the up uplinks", d.Selected)
	}
	return want, nil
}

func (m *Manager) defaultRoute(idx int, gw netip.Addr, table, metric int) *rtnl.Route {
	r := &rtnl.Route{Family: m.family, LinkIndex: idx, Dst: m.any, Table: table, Priority: metric,
		Protocol: uint8(m.cfg.Proto)}
	if gw.IsValid() {
		r.Gw = gw
	} else {
		r.Scope = unix.RT_SCOPE_LINK
	}
	return r
}

// key identifies a route by what makes it distinct to the kernel and what
// we care to keep right (device, gateway, source).
func key(r *rtnl.Route) string {
	dst := "default"
	if !r.IsDefault() {
		dst = r.Dst.String()
	}
	return fmt.Sprintf("t%d %s m%d dev%d via %s src %s", r.Table, dst, r.Priority, r.LinkIndex, addrString(r.Gw), addrString(r.Src))
}

// addrString writes an absent address as "<nil>", as net.IP does.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return "<nil>"
	}
	return a.String()
}

// ours lists the routes with our protocol in all tables.
func (m *Manager) ours() ([]rtnl.Route, error) {
	all, err := m.h.Routes(m.family)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	rs := all[:0]
	for _, r := range all {
		if int(r.Protocol) == m.cfg.Proto {
			rs = append(rs, r)
		}
	}
	return rs, nil
}

// Apply makes the kernel's routes and rules match d: it adds what is
// missing, replaces what differs and removes what is ours but no longer
// wanted. It is idempotent and cheap when nothing changed, so it is also
// how routes someone else deleted are restored.
func (m *Manager) Apply(d Desired) error {
	want, err := m.wantRoutes(d)
	if err != nil {
		return err
	}
	have, err := m.ours()
	if err != nil {
		return err
	}
	var errs []error
	// The main default route first: it decides where new traffic goes.
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		am, bm := strings.HasPrefix(a, fmt.Sprintf("t%d ", unix.RT_TABLE_MAIN)), strings.HasPrefix(b, fmt.Sprintf("t%d ", unix.RT_TABLE_MAIN))
		switch {
		case am && !bm:
			return -1
		case bm && !am:
			return 1
		}
		return strings.Compare(a, b)
	})
	present := map[string]bool{}
	for i := range have {
		present[key(&have[i])] = true
	}
	for _, k := range keys {
		if present[k] {
			continue
		}
		// Replace: a switch of the main default route is one atomic
		// change (same table, destination and metric), never a gap.
		if err := m.h.RouteReplace(want[k]); err != nil {
			errs = append(errs, fmt.Errorf("replace route %s: %w", k, err))
		}
	}
	for i := range have {
		k := key(&have[i])
		if _, ok := want[k]; ok {
			continue
		}
		if !m.replacedBy(&have[i], want) {
			if err := m.h.RouteDel(&have[i]); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("delete route %s: %w", k, err))
			}
		}
	}
	if err := m.applyRules(d); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// replacedBy reports whether an old route of ours was already overwritten
// in place by a wanted one (same table, destination and metric).
func (m *Manager) replacedBy(old *rtnl.Route, want map[string]*rtnl.Route) bool {
	for _, w := range want {
		if w.Table == old.Table && w.Priority == old.Priority && m.dstOf(w) == m.dstOf(old) {
			return true
		}
	}
	return false
}

func (m *Manager) dstOf(r *rtnl.Route) netip.Prefix {
	if !r.Dst.IsValid() {
		return m.any
	}
	return r.Dst
}

// rulesOf returns the source rules of u: one per address.
func (m *Manager) rulesOf(u Uplink) []*rtnl.Rule {
	var rs []*rtnl.Rule
	for _, p := range u.addrs() {
		rs = append(rs, &rtnl.Rule{Family: m.family, Priority: m.cfg.RulePref + u.Slot, Table: m.cfg.TableBase + u.Slot,
			Src: netip.PrefixFrom(p.Addr(), p.Addr().BitLen())})
	}
	return rs
}

// ourRule says whether a rule is in the preference range we own.
func (m *Manager) ourRule(r *rtnl.Rule) bool {
	return r.Priority >= m.cfg.RulePref && r.Priority < m.cfg.RulePref+maxSlots
}

func ruleKey(r *rtnl.Rule) string {
	src := "all"
	if r.Src.IsValid() {
		src = r.Src.String()
	}
	return fmt.Sprintf("pref %d from %s lookup %d", r.Priority, src, r.Table)
}

func (m *Manager) applyRules(d Desired) error {
	have, err := m.h.Rules(m.family)
	if err != nil {
		return fmt.Errorf("list rules: %w", err)
	}
	want := map[string]*rtnl.Rule{}
	for _, u := range d.Uplinks {
		for _, r := range m.rulesOf(u) {
			want[ruleKey(r)] = r
		}
	}
	var errs []error
	present := map[string]bool{}
	for i := range have {
		r := &have[i]
		if !m.ourRule(r) {
			continue
		}
		k := ruleKey(r)
		if _, ok := want[k]; ok && !present[k] {
			present[k] = true
			continue
		}
		if err := m.h.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete rule %s: %w", k, err))
		}
	}
	for k, r := range want {
		if present[k] {
			continue
		}
		if err := m.h.RuleAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			errs = append(errs, fmt.Errorf("add rule %s: %w", k, err))
		}
	}
	return errors.Join(errs...)
}

// Cleanup removes every route and rule of ours (daemon exit). With
// keepDefault the main table's default route stays, so the device keeps
// its connectivity while connmgr is stopped (option keep_route).
func (m *Manager) Cleanup(keepDefault bool) error {
	have, err := m.ours()
	if err != nil {
		return err
	}
	var errs []error
	for i := range have {
		r := &have[i]
		if keepDefault && r.Table == unix.RT_TABLE_MAIN {
			continue
		}
		if err := m.h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", key(r), err))
		}
	}
	if err := m.applyRules(Desired{}); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// FlushConntrack removes the conntrack entries of flows through the given
// uplink addresses, IPv4 or IPv6 (the uplink died, or lost the address),
// so masqueraded flows are translated afresh over the new route. It
// returns how many entries were removed.
func (m *Manager) FlushConntrack(addrs ...netip.Addr) (uint, error) {
	var want []netip.Addr
	for _, a := range addrs {
		if a.IsValid() {
			want = append(want, a.Unmap())
		}
	}
	if len(want) == 0 {
		return 0, nil
	}
	// A flow of an address: originated from it (locally sourced) or whose
	// reply goes to it (masqueraded forwarding).
	// Only the family of the addresses: the other's entries are none of
	// ours, and a full table is long to read.
	family := uint8(unix.AF_UNSPEC)
	if !slices.ContainsFunc(want, func(a netip.Addr) bool { return a.Is4() != want[0].Is4() }) {
		family = unix.AF_INET6
		if want[0].Is4() {
			family = unix.AF_INET
		}
	}
	n, err := m.ct.DeleteFlows(family, func(e ctnl.Entry) bool {
		return slices.Contains(want, e.Orig.Src) || slices.Contains(want, e.Reply.Dst)
	})
	if err != nil {
		return n, fmt.Errorf("delete conntrack entries of %v: %w", addrs, err)
	}
	return n, nil
}
