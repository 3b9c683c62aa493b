package rtnl

import (
	"errors"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ctnetlink message types and attributes (linux/netfilter/nfnetlink_conntrack.h).
const (
	ctMsgGet    = unix.NFNL_SUBSYS_CTNETLINK<<8 | 1 // IPCTNL_MSG_CT_GET
	ctMsgDelete = unix.NFNL_SUBSYS_CTNETLINK<<8 | 2 // IPCTNL_MSG_CT_DELETE

	ctaTupleOrig  = 1
	ctaTupleReply = 2
	ctaTupleIP    = 1
	ctaIPv4Src    = 1
	ctaIPv4Dst    = 2
)

// Flow is the addresses of an IPv4 conntrack entry: the original
// direction's source and the reply direction's destination (which differs
// from the former when the flow is masqueraded).
type Flow struct {
	OrigSrc, ReplyDst netip.Addr
}

// ParseFlow reads the payload of an IPCTNL_MSG_CT_NEW message after its
// nfgenmsg header.
func ParseFlow(attrs []byte) (Flow, error) {
	var f Flow
	ad, err := netlink.NewAttributeDecoder(attrs)
	if err != nil {
		return f, err
	}
	for ad.Next() {
		var want uint16
		var into *netip.Addr
		switch ad.Type() {
		case ctaTupleOrig:
			want, into = ctaIPv4Src, &f.OrigSrc
		case ctaTupleReply:
			want, into = ctaIPv4Dst, &f.ReplyDst
		default:
			continue
		}
		ad.Nested(func(tad *netlink.AttributeDecoder) error {
			for tad.Next() {
				if tad.Type() != ctaTupleIP {
					continue
				}
				tad.Nested(func(iad *netlink.AttributeDecoder) error {
					for iad.Next() {
						if iad.Type() == want {
							*into, _ = netip.AddrFromSlice(iad.Bytes())
						}
					}
					return nil
				})
			}
			return nil
		})
	}
	return f, ad.Err()
}

// DeleteFlows removes the IPv4 conntrack entries for which match is true
// and returns how many it removed. c must be a NETLINK_NETFILTER socket.
// An entry gone between the dump and its removal is not an error.
func (c *Conn) DeleteFlows(match func(Flow) bool) (uint, error) {
	nfgen := []byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}
	msgs, err := c.dump(ctMsgGet, nfgen)
	if err != nil {
		return 0, err
	}
	var n uint
	var errs []error
	for _, m := range msgs {
		if len(m.Data) < len(nfgen) {
			continue
		}
		f, err := ParseFlow(m.Data[len(nfgen):])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if !match(f) {
			continue
		}
		// The entry's own attributes name it (its tuples, zone and id).
		err = c.do(ctMsgDelete, 0, append(nfgen[:len(nfgen):len(nfgen)], m.Data[len(nfgen):]...))
		switch {
		case err == nil:
			n++
		case !errors.Is(err, unix.ENOENT):
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}
