// Package rtnl is the small part of rtnetlink connmgr uses, over
// mdlayher/netlink (already linked for nftables): dumps of links, and of
// IPv4 and IPv6 addresses (with their IFA_FLAGS), routes and rules; route
// replace/delete and rule add/delete in either family; a subscription to
// link, address, route and rule changes of both families. It parses only
// the attributes connmgr reads; a general netlink library costs the package
// about 150 KB of code it never runs.
//
// A Route or Rule says its family in Family (unix.AF_INET or AF_INET6); when
// adding one with Family 0 the family of its addresses is used (IPv4 if it
// has none). IPv6 routes keep a zone-less link-local gateway (fe80::1): the
// device (LinkIndex) says the link. Note that the kernel turns an IPv6
// route's metric 0 into 1024: the lowest IPv6 metric is 1.
package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/inns"
)

// Operational states of IFLA_OPERSTATE (RFC 2863, linux/if.h).
const (
	operDown           = 2
	operLowerLayerDown = 5
)

// Link is what connmgr reads of a network device.
type Link struct {
	Index     int
	Name      string
	Flags     uint32 // IFF_* of ifinfomsg
	OperState uint8  // IF_OPER_*, 0 (unknown) when absent
}

// Up says the device is administratively up.
func (l Link) Up() bool { return l.Flags&unix.IFF_UP != 0 }

// Carrier says the device has a carrier: lower layer up and its
// operational state not down.
func (l Link) Carrier() bool {
	return l.Flags&unix.IFF_LOWER_UP != 0 && l.OperState != operDown &&
		l.OperState != operLowerLayerDown
}

// Addr is an IPv4 or IPv6 address of a device.
type Addr struct {
	Index  int
	Prefix netip.Prefix // the local address with its prefix length
	Scope  uint8
	Flags  uint32 // IFA_F_*: IFA_FLAGS when present, else ifa_flags
}

// addrUnusable are the flags of an IPv6 address that cannot source new
// connections: duplicate address detection still running or failed, or
// its preferred lifetime over (RFC 4862 5.5.4). An optimistic address
// (RFC 4429) is usable.
const addrUnusable = unix.IFA_F_TENTATIVE | unix.IFA_F_DADFAILED | unix.IFA_F_DEPRECATED

// Usable says the address can carry an uplink's traffic: of global scope
// (not link-local, host or site) and, for IPv6, neither tentative,
// DAD-failed nor deprecated. An IPv4 address is judged by its scope alone,
// as the kernel uses a deprecated IPv4 address as any other.
func (a Addr) Usable() bool {
	if a.Scope != unix.RT_SCOPE_UNIVERSE {
		return false
	}
	return a.Prefix.Addr().Is4() || a.Flags&addrUnusable == 0
}

// Deprecated says the address is a global IPv6 one whose preferred
// lifetime is over but which is still valid: no new connection starts
// from it, but those already using it go on (RFC 4862 5.5.4).
func (a Addr) Deprecated() bool {
	return a.Scope == unix.RT_SCOPE_UNIVERSE && a.Prefix.Addr().Is6() &&
		a.Flags&addrUnusable == unix.IFA_F_DEPRECATED
}

// Route is an IPv4 or IPv6 route. An invalid Dst is the default route.
type Route struct {
	Family    uint8 // unix.AF_INET or AF_INET6; 0 when adding: of the addresses
	Dst       netip.Prefix
	Gw        netip.Addr
	Src       netip.Addr // preferred source (RTA_PREFSRC)
	LinkIndex int
	Priority  int
	Table     int
	Protocol  uint8
	Scope     uint8
	Type      uint8 // RTN_*; 0 means unicast when adding
	Flags     uint32
	// Pref is an IPv6 route's router preference from its RA (RTA_PREF:
	// RFC 4191's 0 medium, 1 high, 3 low); read only.
	Pref uint8
	// Expires is the lifetime left of a route that has one (an RA's),
	// negative once it ran out (the kernel keeps an expired route, unused,
	// until its garbage collection); 0 for none. Read only.
	Expires time.Duration
}

// Router preferences of Route.Pref (ICMPV6_ROUTER_PREF_*).
const (
	PrefMedium = 0
	PrefHigh   = 1
	PrefLow    = 3
)

// IsDefault says r is a default route (no destination, or a /0).
func (r *Route) IsDefault() bool { return !r.Dst.IsValid() || r.Dst.Bits() == 0 }

// Rule is an IPv4 or IPv6 policy routing rule.
type Rule struct {
	Family   uint8 // unix.AF_INET or AF_INET6; 0 when adding: of Src
	Priority int
	Src      netip.Prefix // invalid: from all
	Table    int
	Action   uint8
}

// Conn is a netlink socket for requests.
type Conn struct{ c *netlink.Conn }

// dial opens a socket of the given netlink family (unix.NETLINK_ROUTE or
// NETLINK_NETFILTER) in ns, or in the current namespace when ns is not set
// (see inns.Do), joined to the groups of the bitmask groups.
func dial(family int, ns netns.NsHandle, groups uint32) (*netlink.Conn, error) {
	var c *netlink.Conn
	err := inns.Do(ns, func() (err error) {
		c, err = netlink.Dial(family, &netlink.Config{Groups: groups})
		return err
	})
	return c, err
}

// Dial opens a request socket of family in ns (see inns.Do).
func Dial(family int, ns netns.NsHandle) (*Conn, error) {
	c, err := dial(family, ns, 0)
	if err != nil {
		return nil, err
	}
	return &Conn{c}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return c.c.Close() }

func (c *Conn) dump(typ uint16, hdr []byte) ([]netlink.Message, error) {
	return c.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Dump},
		Data:   hdr,
	})
}

func (c *Conn) do(typ uint16, flags netlink.HeaderFlags, data []byte) error {
	_, err := c.c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   data,
	})
	return err
}

// Links dumps every device.
func (c *Conn) Links() ([]Link, error) {
	msgs, err := c.dump(unix.RTM_GETLINK, make([]byte, unix.SizeofIfInfomsg))
	if err != nil {
		return nil, err
	}
	ls := make([]Link, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK {
			continue
		}
		l, err := ParseLink(m.Data)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// LinkByName asks for one device; the error wraps unix.ENODEV when there
// is none.
func (c *Conn) LinkByName(name string) (Link, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	attrs, err := ae.Encode()
	if err != nil {
		return Link{}, err
	}
	msgs, err := c.c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETLINK, Flags: netlink.Request},
		Data:   append(make([]byte, unix.SizeofIfInfomsg), attrs...),
	})
	if err != nil {
		return Link{}, fmt.Errorf("link %s: %w", name, err)
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWLINK {
			return ParseLink(m.Data)
		}
	}
	return Link{}, fmt.Errorf("link %s: %w", name, unix.ENODEV)
}

// dumpFamily dumps the objects of a kind in family (unix.AF_INET,
// AF_INET6, or AF_UNSPEC for both): the request typ with a header of
// hdrLen bytes, the replies of type reply parsed by parse.
func dumpFamily[T any](c *Conn, family uint8, typ, reply uint16, hdrLen int, parse func([]byte) (T, bool, error)) ([]T, error) {
	hdr := make([]byte, hdrLen)
	hdr[0] = family
	msgs, err := c.dump(typ, hdr)
	if err != nil {
		return nil, err
	}
	var out []T
	for _, m := range msgs {
		if uint16(m.Header.Type) != reply {
			continue
		}
		v, ok, err := parse(m.Data)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, v)
		}
	}
	return out, nil
}

// Addrs dumps the IPv4 and IPv6 addresses.
func (c *Conn) Addrs() ([]Addr, error) {
	return dumpFamily(c, unix.AF_UNSPEC, unix.RTM_GETADDR, unix.RTM_NEWADDR, unix.SizeofIfAddrmsg, ParseAddr)
}

// Routes dumps the routes of family (unix.AF_INET, AF_INET6, or AF_UNSPEC
// for both) in every table, cloned cache entries left out.
func (c *Conn) Routes(family uint8) ([]Route, error) {
	rs, err := dumpFamily(c, family, unix.RTM_GETROUTE, unix.RTM_NEWROUTE, unix.SizeofRtMsg, ParseRoute)
	return slices.DeleteFunc(rs, func(r Route) bool { return r.Flags&unix.RTM_F_CLONED != 0 }), err
}

// Rules dumps the rules of family (unix.AF_INET, AF_INET6, or AF_UNSPEC
// for both).
func (c *Conn) Rules(family uint8) ([]Rule, error) {
	return dumpFamily(c, family, unix.RTM_GETRULE, unix.RTM_NEWRULE, sizeofRuleHdr, ParseRule)
}

// RouteReplace adds r or replaces the route of the same table,
// destination and metric.
func (c *Conn) RouteReplace(r *Route) error {
	return c.send(unix.RTM_NEWROUTE, netlink.Create|netlink.Replace, r.marshal)
}

// RouteDel removes r; the error wraps unix.ESRCH when it is not there.
func (c *Conn) RouteDel(r *Route) error { return c.send(unix.RTM_DELROUTE, 0, r.marshal) }

// RuleAdd adds r; the error wraps unix.EEXIST when it is there.
func (c *Conn) RuleAdd(r *Rule) error {
	return c.send(unix.RTM_NEWRULE, netlink.Create|netlink.Excl, r.marshal)
}

// RuleDel removes r; the error wraps unix.ENOENT when it is not there.
func (c *Conn) RuleDel(r *Rule) error { return c.send(unix.RTM_DELRULE, 0, r.marshal) }

// send sends the request typ with what marshal makes, if it can.
func (c *Conn) send(typ uint16, flags netlink.HeaderFlags, marshal func() ([]byte, error)) error {
	b, err := marshal()
	if err != nil {
		return err
	}
	return c.do(typ, flags, b)
}

var errShort = errors.New("message too short")

// ParseLink reads an RTM_NEWLINK/DELLINK payload.
func ParseLink(b []byte) (Link, error) {
	if len(b) < unix.SizeofIfInfomsg {
		return Link{}, fmt.Errorf("link: %w (%d bytes)", errShort, len(b))
	}
	l := Link{Index: int(int32(binary.NativeEndian.Uint32(b[4:8]))), Flags: binary.NativeEndian.Uint32(b[8:12])}
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return Link{}, fmt.Errorf("link %d: %w", l.Index, err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			l.Name = ad.String()
		case unix.IFLA_OPERSTATE:
			l.OperState = ad.Uint8()
		}
	}
	if err := ad.Err(); err != nil {
		return Link{}, fmt.Errorf("link %d: %w", l.Index, err)
	}
	return l, nil
}

// ParseAddr reads an RTM_NEWADDR/DELADDR payload; ok is false for an
// address that is neither IPv4 nor IPv6.
func ParseAddr(b []byte) (a Addr, ok bool, err error) {
	if len(b) < unix.SizeofIfAddrmsg {
		return Addr{}, false, fmt.Errorf("address: %w (%d bytes)", errShort, len(b))
	}
	family := b[0]
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return Addr{}, false, nil
	}
	bits := int(b[1])
	a = Addr{Flags: uint32(b[2]), Scope: b[3], Index: int(binary.NativeEndian.Uint32(b[4:8]))}
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfAddrmsg:])
	if err != nil {
		return Addr{}, false, fmt.Errorf("address on %d: %w", a.Index, err)
	}
	// IFA_LOCAL is the device's own address; IFA_ADDRESS is the peer's
	// on a point-to-point device and the same as IFA_LOCAL otherwise.
	var local, address netip.Addr
	for ad.Next() {
		switch ad.Type() {
		case unix.IFA_LOCAL:
			local, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_ADDRESS:
			address, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.IFA_FLAGS: // all 32 bits; ifa_flags has the low 8
			a.Flags = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return Addr{}, false, fmt.Errorf("address on %d: %w", a.Index, err)
	}
	ip := local
	if !ip.IsValid() {
		ip = address
	}
	if !ofFamily(ip, family) || bits > ip.BitLen() {
		return Addr{}, false, nil
	}
	a.Prefix = netip.PrefixFrom(ip, bits)
	return a, true, nil
}

// ofFamily says a is an address of family (AF_INET: 4 bytes, AF_INET6:
// 16); false for an invalid one.
func ofFamily(a netip.Addr, family uint8) bool {
	return (family == unix.AF_INET && a.Is4()) || (family == unix.AF_INET6 && a.Is6())
}

// familyOf returns a's address family.
func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}

// appendAddr appends the address attribute typ of a, which must be of
// family.
func appendAddr(ae *netlink.AttributeEncoder, typ uint16, a netip.Addr, family uint8) error {
	if !ofFamily(a, family) {
		return fmt.Errorf("address %s is not of family %d", a, family)
	}
	ae.Bytes(typ, a.AsSlice())
	return nil
}

// ParseRoute reads an RTM_NEWROUTE/DELROUTE payload; ok is false for a
// route that is neither IPv4 nor IPv6.
func ParseRoute(b []byte) (r Route, ok bool, err error) {
	if len(b) < unix.SizeofRtMsg {
		return Route{}, false, fmt.Errorf("route: %w (%d bytes)", errShort, len(b))
	}
	family := b[0]
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return Route{}, false, nil
	}
	dstLen := int(b[1])
	r = Route{Family: family, Table: int(b[4]), Protocol: b[5], Scope: b[6], Type: b[7], Flags: binary.NativeEndian.Uint32(b[8:12])}
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofRtMsg:])
	if err != nil {
		return Route{}, false, fmt.Errorf("route: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_DST:
			r.Dst = prefixOf(ad.Bytes(), dstLen, family)
		case unix.RTA_GATEWAY:
			r.Gw = addrOf(ad.Bytes(), family)
		case unix.RTA_PREFSRC:
			r.Src = addrOf(ad.Bytes(), family)
		case unix.RTA_OIF:
			r.LinkIndex = int(ad.Uint32())
		case unix.RTA_PRIORITY:
			r.Priority = int(ad.Uint32())
		case unix.RTA_TABLE:
			r.Table = int(ad.Uint32())
		case unix.RTA_PREF:
			r.Pref = ad.Uint8()
		case unix.RTA_CACHEINFO:
			// struct rta_cacheinfo: rta_expires (s32, clock ticks of
			// USER_HZ, 100 per second) after two u32s.
			if b := ad.Bytes(); len(b) >= 12 {
				r.Expires = time.Duration(int32(binary.NativeEndian.Uint32(b[8:12]))) * 10 * time.Millisecond
			}
		}
	}
	if err := ad.Err(); err != nil {
		return Route{}, false, fmt.Errorf("route: %w", err)
	}
	return r, true, nil
}

// family returns the family of r: Family, else that of its addresses,
// else IPv4.
func (r *Route) family() uint8 {
	if r.Family != 0 {
		return r.Family
	}
	for _, a := range []netip.Addr{r.Dst.Addr(), r.Gw, r.Src} {
		if a.IsValid() {
			return familyOf(a)
		}
	}
	return unix.AF_INET
}

func (r *Route) marshal() ([]byte, error) {
	family := r.family()
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, fmt.Errorf("route: family %d is neither IPv4 nor IPv6", family)
	}
	hdr := make([]byte, unix.SizeofRtMsg)
	hdr[0] = family
	typ := r.Type
	if typ == 0 {
		typ = unix.RTN_UNICAST
	}
	hdr[5], hdr[6], hdr[7] = r.Protocol, r.Scope, typ
	if r.Table < 256 {
		hdr[4] = uint8(r.Table)
	}
	ae := netlink.NewAttributeEncoder()
	if r.Dst.IsValid() {
		hdr[1] = uint8(r.Dst.Bits())
		if err := appendAddr(ae, unix.RTA_DST, r.Dst.Masked().Addr(), family); err != nil {
			return nil, fmt.Errorf("route to %s: %w", r.Dst, err)
		}
	}
	for _, x := range []struct {
		typ uint16
		a   netip.Addr
	}{{unix.RTA_GATEWAY, r.Gw}, {unix.RTA_PREFSRC, r.Src}} {
		if x.a.IsValid() {
			if err := appendAddr(ae, x.typ, x.a.WithZone(""), family); err != nil {
				return nil, fmt.Errorf("route: %w", err)
			}
		}
	}
	if r.LinkIndex > 0 {
		ae.Uint32(unix.RTA_OIF, uint32(r.LinkIndex))
	}
	ae.Uint32(unix.RTA_PRIORITY, uint32(r.Priority))
	ae.Uint32(unix.RTA_TABLE, uint32(r.Table))
	attrs, err := ae.Encode()
	return append(hdr, attrs...), err
}

// addrOf is the address of an attribute of family; invalid if it is not
// of that family's size.
func addrOf(b []byte, family uint8) netip.Addr {
	a, ok := netip.AddrFromSlice(b)
	if !ok || !ofFamily(a, family) {
		return netip.Addr{}
	}
	return a
}

// prefixOf is the prefix of an address attribute of family and the
// header's length byte; invalid if either does not fit the family.
func prefixOf(b []byte, bits int, family uint8) netip.Prefix {
	a := addrOf(b, family)
	if !a.IsValid() || bits > a.BitLen() {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits)
}

// The header of a rule message (struct fib_rule_hdr).
const sizeofRuleHdr = 12

// ParseRule reads an RTM_NEWRULE/DELRULE payload; ok is false for a rule
// that is neither IPv4 nor IPv6.
func ParseRule(b []byte) (r Rule, ok bool, err error) {
	if len(b) < sizeofRuleHdr {
		return Rule{}, false, fmt.Errorf("rule: %w (%d bytes)", errShort, len(b))
	}
	family := b[0]
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return Rule{}, false, nil
	}
	srcLen := int(b[2])
	r = Rule{Family: family, Table: int(b[4]), Action: b[7]}
	ad, err := netlink.NewAttributeDecoder(b[sizeofRuleHdr:])
	if err != nil {
		return Rule{}, false, fmt.Errorf("rule: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.FRA_SRC:
			r.Src = prefixOf(ad.Bytes(), srcLen, family)
		case unix.FRA_PRIORITY:
			r.Priority = int(ad.Uint32())
		case unix.FRA_TABLE:
			r.Table = int(ad.Uint32())
		}
	}
	if err := ad.Err(); err != nil {
		return Rule{}, false, fmt.Errorf("rule: %w", err)
	}
	return r, true, nil
}

func (r *Rule) marshal() ([]byte, error) {
	family := r.Family
	if family == 0 {
		family = unix.AF_INET
		if r.Src.IsValid() {
			family = familyOf(r.Src.Addr())
		}
	}
	if family != unix.AF_INET && family != unix.AF_INET6 {
		return nil, fmt.Errorf("rule: family %d is neither IPv4 nor IPv6", family)
	}
	hdr := make([]byte, sizeofRuleHdr)
	hdr[0] = family
	hdr[7] = unix.FR_ACT_TO_TBL
	if r.Table < 256 {
		hdr[4] = uint8(r.Table)
	}
	ae := netlink.NewAttributeEncoder()
	if r.Src.IsValid() {
		// A source of the other family must not become "from all".
		hdr[2] = uint8(r.Src.Bits())
		if err := appendAddr(ae, unix.FRA_SRC, r.Src.Masked().Addr(), family); err != nil {
			return nil, fmt.Errorf("rule from %s: %w", r.Src, err)
		}
	}
	ae.Uint32(unix.FRA_PRIORITY, uint32(r.Priority))
	ae.Uint32(unix.FRA_TABLE, uint32(r.Table))
	attrs, err := ae.Encode()
	return append(hdr, attrs...), err
}
