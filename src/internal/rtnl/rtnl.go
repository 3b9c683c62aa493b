// Package rtnl is the small part of rtnetlink and ctnetlink connmgr uses,
// over mdlayher/netlink (already linked for nftables): dumps of links,
// IPv4 addresses, routes and rules, route replace/delete, rule add/delete,
// a subscription to link, address, route and rule changes, and removal of
// conntrack entries. It parses only the attributes connmgr reads; a general
// netlink library costs the package about 150 KB of code it never runs.
package rtnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

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

// Addr is an IPv4 address of a device.
type Addr struct {
	Index  int
	Prefix netip.Prefix // the local address with its prefix length
	Scope  uint8
}

// Route is an IPv4 route. An invalid Dst is the default route.
type Route struct {
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
}

// IsDefault says r is a default route (no destination, or a /0).
func (r *Route) IsDefault() bool { return !r.Dst.IsValid() || r.Dst.Bits() == 0 }

// Rule is an IPv4 policy routing rule.
type Rule struct {
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

// dumpIPv4 dumps the IPv4 objects of a kind: the request typ with a
// header of hdrLen bytes, the replies of type reply parsed by parse.
func dumpIPv4[T any](c *Conn, typ, reply uint16, hdrLen int, parse func([]byte) (T, bool, error)) ([]T, error) {
	hdr := make([]byte, hdrLen)
	hdr[0] = unix.AF_INET
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

// Addrs dumps the IPv4 addresses.
func (c *Conn) Addrs() ([]Addr, error) {
	return dumpIPv4(c, unix.RTM_GETADDR, unix.RTM_NEWADDR, unix.SizeofIfAddrmsg, ParseAddr)
}

// Routes dumps the IPv4 routes of every table (cloned cache entries
// left out).
func (c *Conn) Routes() ([]Route, error) {
	rs, err := dumpIPv4(c, unix.RTM_GETROUTE, unix.RTM_NEWROUTE, unix.SizeofRtMsg, ParseRoute)
	return slices.DeleteFunc(rs, func(r Route) bool { return r.Flags&unix.RTM_F_CLONED != 0 }), err
}

// Rules dumps the IPv4 rules.
func (c *Conn) Rules() ([]Rule, error) {
	return dumpIPv4(c, unix.RTM_GETRULE, unix.RTM_NEWRULE, sizeofRuleHdr, ParseRule)
}

// RouteReplace adds r or replaces the route of the same table,
// destination and metric.
func (c *Conn) RouteReplace(r *Route) error {
	b, err := r.marshal()
	if err != nil {
		return err
	}
	return c.do(unix.RTM_NEWROUTE, netlink.Create|netlink.Replace, b)
}

// RouteDel removes r; the error wraps unix.ESRCH when it is not there.
func (c *Conn) RouteDel(r *Route) error {
	b, err := r.marshal()
	if err != nil {
		return err
	}
	return c.do(unix.RTM_DELROUTE, 0, b)
}

// RuleAdd adds r; the error wraps unix.EEXIST when it is there.
func (c *Conn) RuleAdd(r *Rule) error {
	return c.do(unix.RTM_NEWRULE, netlink.Create|netlink.Excl, r.marshal())
}

// RuleDel removes r; the error wraps unix.ENOENT when it is not there.
func (c *Conn) RuleDel(r *Rule) error { return c.do(unix.RTM_DELRULE, 0, r.marshal()) }

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
// address that is not IPv4.
func ParseAddr(b []byte) (a Addr, ok bool, err error) {
	if len(b) < unix.SizeofIfAddrmsg {
		return Addr{}, false, fmt.Errorf("address: %w (%d bytes)", errShort, len(b))
	}
	if b[0] != unix.AF_INET {
		return Addr{}, false, nil
	}
	bits := int(b[1])
	a = Addr{Scope: b[3], Index: int(binary.NativeEndian.Uint32(b[4:8]))}
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
		}
	}
	if err := ad.Err(); err != nil {
		return Addr{}, false, fmt.Errorf("address on %d: %w", a.Index, err)
	}
	ip := local
	if !ip.IsValid() {
		ip = address
	}
	if !ip.Is4() || bits > 32 {
		return Addr{}, false, nil
	}
	a.Prefix = netip.PrefixFrom(ip, bits)
	return a, true, nil
}

// ParseRoute reads an RTM_NEWROUTE/DELROUTE payload; ok is false for a
// route that is not IPv4.
func ParseRoute(b []byte) (r Route, ok bool, err error) {
	if len(b) < unix.SizeofRtMsg {
		return Route{}, false, fmt.Errorf("route: %w (%d bytes)", errShort, len(b))
	}
	if b[0] != unix.AF_INET {
		return Route{}, false, nil
	}
	dstLen := int(b[1])
	r = Route{Table: int(b[4]), Protocol: b[5], Scope: b[6], Type: b[7], Flags: binary.NativeEndian.Uint32(b[8:12])}
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofRtMsg:])
	if err != nil {
		return Route{}, false, fmt.Errorf("route: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.RTA_DST:
			r.Dst = prefix4(ad.Bytes(), dstLen)
		case unix.RTA_GATEWAY:
			r.Gw, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_PREFSRC:
			r.Src, _ = netip.AddrFromSlice(ad.Bytes())
		case unix.RTA_OIF:
			r.LinkIndex = int(ad.Uint32())
		case unix.RTA_PRIORITY:
			r.Priority = int(ad.Uint32())
		case unix.RTA_TABLE:
			r.Table = int(ad.Uint32())
		}
	}
	if err := ad.Err(); err != nil {
		return Route{}, false, fmt.Errorf("route: %w", err)
	}
	return r, true, nil
}

func (r *Route) marshal() ([]byte, error) {
	hdr := make([]byte, unix.SizeofRtMsg)
	hdr[0] = unix.AF_INET
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
		if !r.Dst.Addr().Is4() {
			return nil, fmt.Errorf("route to %s: not IPv4", r.Dst)
		}
		hdr[1] = uint8(r.Dst.Bits())
		a := r.Dst.Masked().Addr().As4()
		ae.Bytes(unix.RTA_DST, a[:])
	}
	for _, x := range []struct {
		typ uint16
		a   netip.Addr
	}{{unix.RTA_GATEWAY, r.Gw}, {unix.RTA_PREFSRC, r.Src}} {
		if x.a.IsValid() {
			if !x.a.Is4() {
				return nil, fmt.Errorf("route address %s: not IPv4", x.a)
			}
			a := x.a.As4()
			ae.Bytes(x.typ, a[:])
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

// prefix4 is the IPv4 prefix of an address attribute and the header's
// length byte; invalid if either is not IPv4's.
func prefix4(b []byte, bits int) netip.Prefix {
	a, ok := netip.AddrFromSlice(b)
	if !ok || !a.Is4() || bits > 32 {
		return netip.Prefix{}
	}
	return netip.PrefixFrom(a, bits)
}

// The header of a rule message (struct fib_rule_hdr).
const sizeofRuleHdr = 12

// ParseRule reads an RTM_NEWRULE/DELRULE payload; ok is false for a rule
// that is not IPv4.
func ParseRule(b []byte) (r Rule, ok bool, err error) {
	if len(b) < sizeofRuleHdr {
		return Rule{}, false, fmt.Errorf("rule: %w (%d bytes)", errShort, len(b))
	}
	if b[0] != unix.AF_INET {
		return Rule{}, false, nil
	}
	srcLen := int(b[2])
	r = Rule{Table: int(b[4]), Action: b[7]}
	ad, err := netlink.NewAttributeDecoder(b[sizeofRuleHdr:])
	if err != nil {
		return Rule{}, false, fmt.Errorf("rule: %w", err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.FRA_SRC:
			r.Src = prefix4(ad.Bytes(), srcLen)
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

func (r *Rule) marshal() []byte {
	hdr := make([]byte, sizeofRuleHdr)
	hdr[0] = unix.AF_INET
	hdr[7] = unix.FR_ACT_TO_TBL
	if r.Table < 256 {
		hdr[4] = uint8(r.Table)
	}
	ae := netlink.NewAttributeEncoder()
	if r.Src.IsValid() && r.Src.Addr().Is4() {
		hdr[2] = uint8(r.Src.Bits())
		a := r.Src.Masked().Addr().As4()
		ae.Bytes(unix.FRA_SRC, a[:])
	}
	ae.Uint32(unix.FRA_PRIORITY, uint32(r.Priority))
	ae.Uint32(unix.FRA_TABLE, uint32(r.Table))
	attrs, _ := ae.Encode() // fixed-size attributes only: cannot fail
	return append(hdr, attrs...)
}
