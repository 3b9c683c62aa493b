package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/inns"
)

// This file is the small piece of ctnetlink the capture needs: getting
// the one conntrack entry of a TCP tuple (IPCTNL_MSG_CT_GET) and reading
// its tuples, status, TCP state and reply-direction counters.

// ctnetlink numbers (linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h).
const (
	nfnlSubsysCTNetlink = 1
	ipctnlMsgCTNew      = 0
	ipctnlMsgCTGet      = 1

	ctaTupleOrig      = 1
	ctaTupleReply     = 2
	ctaStatus         = 3
	ctaProtoinfo      = 4
	ctaCountersReply  = 10
	ctaID             = 12
	ctaTupleIP        = 1
	ctaTupleProto     = 2
	ctaIPv4Src        = 1
	ctaIPv4Dst        = 2
	ctaIPv6Src        = 3
	ctaIPv6Dst        = 4
	ctaProtoNum       = 1
	ctaProtoSrcPort   = 2
	ctaProtoDstPort   = 3
	ctaProtoinfoTCP   = 1
	ctaProtoinfoState = 1
	// CTA_PROTOINFO_TCP_FLAGS_ORIGINAL/_REPLY: struct nf_ct_tcp_flags
	// {flags, mask} of each direction.
	ctaProtoinfoTCPFlagsOrig  = 4
	ctaProtoinfoTCPFlagsReply = 5
	// ipCTTCPFlagBeLiberal: conntrack does not check this direction's
	// TCP window (a connection picked up in mid-stream has it both ways).
	ipCTTCPFlagBeLiberal = 0x08
	ctaCountersPkts      = 1

	ipsSeenReply = 1 << 1
	ipsConfirmed = 1 << 3
	ipsDying     = 1 << 9

	tcpConntrackEstablished = 3
)

// tuple is one direction of a TCP connection.
type tuple struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

// ctEntry is what the capture needs of a conntrack entry.
type ctEntry struct {
	orig, reply tuple
	status      uint32
	tcpState    uint8 // 0 if absent
	// liberal says conntrack does not check the TCP window of a
	// direction (IP_CT_TCP_FLAG_BE_LIBERAL), as for a connection it
	// picked up in mid-stream: it then counts any segment with the tuple.
	liberal bool
	id      uint32
	// replyPackets counts the packets conntrack accepted in the reply
	// direction; hasCounters is false when accounting is off
	// (net.netfilter.nf_conntrack_acct=0).
	replyPackets uint64
	hasCounters  bool
}

// ctConn is a ctnetlink socket in the capture's namespace.
type ctConn struct {
	fd  int
	seq atomic.Uint32
}

var errNoEntry = errors.New("no such conntrack entry")

func openCT(ns netns.NsHandle) (*ctConn, error) {
	var fd int
	err := inns.Do(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ctnetlink socket: %w", err)
	}
	// A reply comes at once; the timeout only guards against a kernel
	// that never answers (the capture's goroutine must not hang).
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnetlink bind: %w", err)
	}
	return &ctConn{fd: fd}, nil
}

func (c *ctConn) Close() { unix.Close(c.fd) }

// getRequest builds the IPCTNL_MSG_CT_GET request for the entry that has
// t as one of its directions (the kernel finds either).
func getRequest(t tuple, seq uint32) []byte {
	family, srcAttr, dstAttr := byte(unix.AF_INET), uint16(ctaIPv4Src), uint16(ctaIPv4Dst)
	if t.src.Is6() {
		family, srcAttr, dstAttr = unix.AF_INET6, ctaIPv6Src, ctaIPv6Dst
	}
	ip := nest(ctaTupleIP, attr(srcAttr, t.src.AsSlice()), attr(dstAttr, t.dst.AsSlice()))
	proto := nest(ctaTupleProto, attr(ctaProtoNum, []byte{unix.IPPROTO_TCP}),
		attr(ctaProtoSrcPort, be16(t.srcPort)), attr(ctaProtoDstPort, be16(t.dstPort)))
	body := append([]byte{family, unix.NFNETLINK_V0, 0, 0}, nest(ctaTupleReply, ip, proto)...)
	b := make([]byte, unix.NLMSG_HDRLEN, unix.NLMSG_HDRLEN+len(body))
	binary.NativeEndian.PutUint32(b[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(b[4:], nfnlSubsysCTNetlink<<8|ipctnlMsgCTGet)
	binary.NativeEndian.PutUint16(b[6:], unix.NLM_F_REQUEST)
	binary.NativeEndian.PutUint32(b[8:], seq)
	return append(b, body...)
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

func attr(typ uint16, data []byte) []byte {
	n := unix.SizeofNlAttr + len(data)
	b := make([]byte, unix.SizeofNlAttr, (n+3)&^3)
	binary.NativeEndian.PutUint16(b[0:], uint16(n))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, data...)
	return append(b, make([]byte, cap(b)-len(b))...)
}

func nest(typ uint16, children ...[]byte) []byte {
	var data []byte
	for _, c := range children {
		data = append(data, c...)
	}
	return attr(typ|unix.NLA_F_NESTED, data)
}

// get asks for the entry of which t is the reply direction or the
// original one; errNoEntry if conntrack has none.
func (c *ctConn) get(t tuple) (ctEntry, error) {
	seq := c.seq.Add(1)
	if err := unix.Sendto(c.fd, getRequest(t, seq), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return ctEntry{}, fmt.Errorf("ctnetlink get: %w", err)
	}
	var buf [4096]byte
	for {
		n, _, err := unix.Recvfrom(c.fd, buf[:], 0)
		if err != nil {
			return ctEntry{}, fmt.Errorf("ctnetlink get: %w", err)
		}
		e, gotSeq, err := parseReply(buf[:n])
		if gotSeq != seq {
			continue // a late answer to an earlier request that timed out
		}
		return e, err
	}
}

// parseReply reads the kernel's answer to a get: one message, either the
// entry (IPCTNL_MSG_CT_NEW) or an error; it returns the message's
// sequence number too.
func parseReply(b []byte) (ctEntry, uint32, error) {
	if len(b) < unix.NLMSG_HDRLEN {
		return ctEntry{}, 0, fmt.Errorf("ctnetlink: short message (%d bytes)", len(b))
	}
	l := binary.NativeEndian.Uint32(b[0:])
	typ := binary.NativeEndian.Uint16(b[4:])
	seq := binary.NativeEndian.Uint32(b[8:])
	if l < unix.NLMSG_HDRLEN || int(l) > len(b) {
		return ctEntry{}, seq, fmt.Errorf("ctnetlink: message length %d of %d bytes", l, len(b))
	}
	b = b[unix.NLMSG_HDRLEN:l]
	if typ == unix.NLMSG_ERROR {
		if len(b) < 4 {
			return ctEntry{}, seq, errors.New("ctnetlink: short error message")
		}
		errno := -int32(binary.NativeEndian.Uint32(b))
		if errno == int32(unix.ENOENT) {
			return ctEntry{}, seq, errNoEntry
		}
		return ctEntry{}, seq, fmt.Errorf("ctnetlink get: %w", unix.Errno(errno))
	}
	if typ != nfnlSubsysCTNetlink<<8|ipctnlMsgCTNew {
		return ctEntry{}, seq, fmt.Errorf("ctnetlink: unexpected message type %#x", typ)
	}
	if len(b) < 4 {
		return ctEntry{}, seq, errors.New("ctnetlink: message without nfgenmsg")
	}
	var e ctEntry
	err := walk(b[4:], func(typ uint16, v []byte) error {
		switch typ {
		case ctaTupleOrig:
			return parseTuple(v, &e.orig)
		case ctaTupleReply:
			return parseTuple(v, &e.reply)
		case ctaStatus:
			x, err := u32(v, "status")
			e.status = x
			return err
		case ctaID:
			x, err := u32(v, "id")
			e.id = x
			return err
		case ctaProtoinfo:
			return walk(v, func(typ uint16, v []byte) error {
				if typ != ctaProtoinfoTCP {
					return nil
				}
				return walk(v, func(typ uint16, v []byte) error {
					switch {
					case typ == ctaProtoinfoState && len(v) >= 1:
						e.tcpState = v[0]
					case (typ == ctaProtoinfoTCPFlagsOrig || typ == ctaProtoinfoTCPFlagsReply) && len(v) >= 1:
						e.liberal = e.liberal || v[0]&ipCTTCPFlagBeLiberal != 0
					}
					return nil
				})
			})
		case ctaCountersReply:
			return walk(v, func(typ uint16, v []byte) error {
				if typ != ctaCountersPkts {
					return nil
				}
				if len(v) != 8 {
					return fmt.Errorf("ctnetlink: reply packet counter of %d bytes", len(v))
				}
				e.replyPackets, e.hasCounters = binary.BigEndian.Uint64(v), true
				return nil
			})
		}
		return nil
	})
	return e, seq, err
}

func u32(v []byte, what string) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("ctnetlink: %s of %d bytes", what, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

func parseTuple(b []byte, t *tuple) error {
	return walk(b, func(typ uint16, v []byte) error {
		switch typ {
		case ctaTupleIP:
			return walk(v, func(typ uint16, v []byte) error {
				a, ok := netip.AddrFromSlice(v)
				if !ok || (typ != ctaIPv4Src && typ != ctaIPv4Dst && typ != ctaIPv6Src && typ != ctaIPv6Dst) {
					return nil
				}
				if typ == ctaIPv4Src || typ == ctaIPv6Src {
					t.src = a
				} else {
					t.dst = a
				}
				return nil
			})
		case ctaTupleProto:
			return walk(v, func(typ uint16, v []byte) error {
				if (typ == ctaProtoSrcPort || typ == ctaProtoDstPort) && len(v) == 2 {
					p := binary.BigEndian.Uint16(v)
					if typ == ctaProtoSrcPort {
						t.srcPort = p
					} else {
						t.dstPort = p
					}
				}
				return nil
			})
		}
		return nil
	})
}

// walk calls f for each netlink attribute in b (type without the nested
// and byte-order flags).
func walk(b []byte, f func(typ uint16, v []byte) error) error {
	for len(b) > 0 {
		if len(b) < unix.SizeofNlAttr {
			return fmt.Errorf("ctnetlink: %d stray bytes after the attributes", len(b))
		}
		l := int(binary.NativeEndian.Uint16(b[0:]))
		typ := binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < unix.SizeofNlAttr || l > len(b) {
			return fmt.Errorf("ctnetlink: attribute %d of length %d in %d bytes", typ, l, len(b))
		}
		if err := f(typ, b[unix.SizeofNlAttr:l]); err != nil {
			return err
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return nil
}
