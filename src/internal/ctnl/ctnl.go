// Package ctnl is the small part of ctnetlink (the kernel's conntrack over
// netlink) connmgr uses, for IPv4 and IPv6 alike: Get asks for the entry of
// one tuple (passive liveness in package capture reads its status, TCP
// state and reply counters), DeleteFlows removes the entries a function
// picks from a dump of either family or both (route.Manager.FlushConntrack clears
// the flows of a dead uplink's addresses).
//
// It speaks netlink on a raw socket with its own framing: a request is one
// message and the answer is matched by sequence number, so an answer that
// comes after its request timed out is skipped rather than taken for the
// next one's.
package ctnl

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/inns"
)

// ctnetlink numbers (linux/netfilter/nfnetlink.h, nfnetlink_conntrack.h).
const (
	msgNew    = unix.NFNL_SUBSYS_CTNETLINK<<8 | 0 // IPCTNL_MSG_CT_NEW
	msgGet    = unix.NFNL_SUBSYS_CTNETLINK<<8 | 1 // IPCTNL_MSG_CT_GET
	msgDelete = unix.NFNL_SUBSYS_CTNETLINK<<8 | 2 // IPCTNL_MSG_CT_DELETE

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
)

// Bits of Entry.Status (IPS_*) and values of Entry.TCPState.
const (
	StatusSeenReply = 1 << 1
	StatusConfirmed = 1 << 3
	StatusDying     = 1 << 9

	TCPEstablished = 3 // TCP_CONNTRACK_ESTABLISHED
)

// Tuple is one direction of a flow. Src and Dst are both IPv4 or both
// IPv6; the ports are those of TCP, UDP and the like (zero for others).
type Tuple struct {
	Src, Dst         netip.Addr
	Proto            uint8 // IPPROTO_*
	SrcPort, DstPort uint16
}

// Entry is what connmgr reads of a conntrack entry.
type Entry struct {
	Orig, Reply Tuple
	Status      uint32 // IPS_* bits
	TCPState    uint8  // TCP_CONNTRACK_*; 0 if absent
	// Liberal says conntrack does not check the TCP window of a direction
	// (IP_CT_TCP_FLAG_BE_LIBERAL), as for a connection it picked up in
	// mid-stream: it then counts any segment with the tuple.
	Liberal bool
	ID      uint32
	// ReplyPackets counts the packets conntrack accepted in the reply
	// direction; HasCounters is false when accounting is off
	// (net.netfilter.nf_conntrack_acct=0).
	ReplyPackets uint64
	HasCounters  bool
}

// ErrNoEntry says conntrack has no entry of the tuple asked for.
var ErrNoEntry = errors.New("no such conntrack entry")

// Conn is a ctnetlink socket. Not safe for concurrent use.
type Conn struct {
	fd  int
	seq uint32
	buf []byte
}

// dumpBuf holds one read of a dump: the kernel fills at most 32 KiB.
const dumpBuf = 64 << 10

// Open opens a ctnetlink socket in ns (the current namespace when ns is
// not set: see inns.Do). A read that waits longer than timeout fails: the
// kernel answers at once, and a caller must never hang on it.
func Open(ns netns.NsHandle, timeout time.Duration) (*Conn, error) {
	var fd int
	err := inns.Do(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ctnetlink socket: %w", err)
	}
	tv := unix.NsecToTimeval(int64(timeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnetlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("ctnetlink bind: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, 4096)}, nil
}

// Close closes the socket.
func (c *Conn) Close() error { return unix.Close(c.fd) }

// Get asks for the entry of which t is the reply direction or the
// original one (the kernel finds either); ErrNoEntry if conntrack has none.
func (c *Conn) Get(t Tuple) (Entry, error) {
	tuple, family, err := tupleAttr(ctaTupleReply, t)
	if err != nil {
		return Entry{}, fmt.Errorf("ctnetlink get: %w", err)
	}
	seq, err := c.send(msgGet, unix.NLM_F_REQUEST, family, tuple)
	if err != nil {
		return Entry{}, fmt.Errorf("ctnetlink get: %w", err)
	}
	var e Entry
	found := false
	err = c.receive(seq, true, func(typ uint16, payload []byte) error {
		if typ != msgNew {
			return fmt.Errorf("ctnetlink: unexpected message type %#x", typ)
		}
		var err error
		e, err = parseEntry(payload)
		found = true
		return err
	})
	switch {
	case errors.Is(err, unix.ENOENT):
		return Entry{}, ErrNoEntry
	case err != nil:
		return Entry{}, fmt.Errorf("ctnetlink get: %w", err)
	case !found:
		return Entry{}, errors.New("ctnetlink get: no answer")
	}
	return e, nil
}

// DeleteFlows removes the entries of family (unix.AF_INET, AF_INET6, or
// AF_UNSPEC for both) for which match is true and returns how many it
// removed. An entry gone between the dump and its removal is not an error.
func (c *Conn) DeleteFlows(family uint8, match func(Entry) bool) (uint, error) {
	seq, err := c.send(msgGet, unix.NLM_F_REQUEST|unix.NLM_F_DUMP, family, nil)
	if err != nil {
		return 0, fmt.Errorf("ctnetlink dump: %w", err)
	}
	if len(c.buf) < dumpBuf {
		c.buf = make([]byte, dumpBuf)
	}
	var doomed [][]byte
	var errs []error
	err = c.receive(seq, false, func(typ uint16, payload []byte) error {
		if typ != msgNew {
			return nil
		}
		e, err := parseEntry(payload)
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		if match(e) {
			// The entry's own nfgenmsg (its family) and attributes (its
			// tuples, zone and id) name it for the kernel.
			doomed = append(doomed, append([]byte(nil), payload...))
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("ctnetlink dump: %w", err)
	}
	var n uint
	for _, p := range doomed {
		seq, err := c.send(msgDelete, unix.NLM_F_REQUEST|unix.NLM_F_ACK, p[0], p[4:])
		if err == nil {
			err = c.receive(seq, false, func(uint16, []byte) error { return nil })
		}
		switch {
		case err == nil:
			n++
		case !errors.Is(err, unix.ENOENT):
			errs = append(errs, fmt.Errorf("ctnetlink delete: %w", err))
		}
	}
	return n, errors.Join(errs...)
}

// send sends one request of type typ with the nfgenmsg of family and
// attrs, and returns its sequence number.
func (c *Conn) send(typ, flags uint16, family uint8, attrs []byte) (uint32, error) {
	c.seq++
	b := request(typ, flags, c.seq, family, attrs)
	return c.seq, unix.Sendto(c.fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

// request is the netlink message of a ctnetlink request.
func request(typ, flags uint16, seq uint32, family uint8, attrs []byte) []byte {
	n := unix.NLMSG_HDRLEN + 4 + len(attrs)
	b := make([]byte, unix.NLMSG_HDRLEN, n)
	binary.NativeEndian.PutUint32(b[0:], uint32(n))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b = append(b, family, unix.NFNETLINK_V0, 0, 0)
	return append(b, attrs...)
}

// receive reads the answer to request seq, calling f for each message of
// it (type and payload after the netlink header), until the answer ends:
// with an acknowledgement or error (returned: unix.Errno), the end of a
// dump, or, if lone, its first message (the kernel marks the answer to a
// get NLM_F_MULTI but sends no end). Messages of other requests (late
// answers to ones that timed out) are skipped.
func (c *Conn) receive(seq uint32, lone bool, f func(typ uint16, payload []byte) error) error {
	for {
		n, _, err := unix.Recvfrom(c.fd, c.buf, 0)
		if err != nil {
			return err
		}
		done, err := walkMessages(c.buf[:n], seq, lone, f)
		if err != nil || done {
			return err
		}
	}
}

// walkMessages calls f for the messages of request seq in one read; done
// says the answer ended.
func walkMessages(b []byte, seq uint32, lone bool, f func(typ uint16, payload []byte) error) (done bool, err error) {
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return true, fmt.Errorf("ctnetlink: short message (%d bytes)", len(b))
		}
		l := binary.NativeEndian.Uint32(b[0:])
		typ := binary.NativeEndian.Uint16(b[4:])
		flags := binary.NativeEndian.Uint16(b[6:])
		mseq := binary.NativeEndian.Uint32(b[8:])
		if l < unix.NLMSG_HDRLEN || int(l) > len(b) {
			return true, fmt.Errorf("ctnetlink: message length %d of %d bytes", l, len(b))
		}
		payload := b[unix.NLMSG_HDRLEN:l]
		b = b[min(len(b), int(l+3)&^3):]
		if mseq != seq {
			continue
		}
		switch typ {
		case unix.NLMSG_ERROR, unix.NLMSG_DONE:
			if len(payload) < 4 {
				return true, fmt.Errorf("ctnetlink: short message of type %d", typ)
			}
			if errno := -int32(binary.NativeEndian.Uint32(payload)); errno != 0 {
				return true, unix.Errno(errno)
			}
			return true, nil
		}
		if err := f(typ, payload); err != nil || lone || flags&unix.NLM_F_MULTI == 0 {
			return true, err
		}
	}
	return false, nil
}

// tupleAttr is the nested attribute typ (CTA_TUPLE_*) of t, and t's family.
func tupleAttr(typ uint16, t Tuple) ([]byte, uint8, error) {
	var ip []byte
	var family uint8
	switch {
	case t.Src.Is4() && t.Dst.Is4():
		ip, family = nest(ctaTupleIP, attr(ctaIPv4Src, t.Src.AsSlice()), attr(ctaIPv4Dst, t.Dst.AsSlice())), unix.AF_INET
	case t.Src.Is6() && t.Dst.Is6() && !t.Src.Is4In6() && !t.Dst.Is4In6():
		ip, family = nest(ctaTupleIP, attr(ctaIPv6Src, t.Src.AsSlice()), attr(ctaIPv6Dst, t.Dst.AsSlice())), unix.AF_INET6
	default:
		return nil, 0, fmt.Errorf("tuple %v -> %v: not two addresses of one family", t.Src, t.Dst)
	}
	proto := nest(ctaTupleProto, attr(ctaProtoNum, []byte{t.Proto}),
		attr(ctaProtoSrcPort, binary.BigEndian.AppendUint16(nil, t.SrcPort)),
		attr(ctaProtoDstPort, binary.BigEndian.AppendUint16(nil, t.DstPort)))
	return nest(typ, ip, proto), family, nil
}

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

// parseEntry reads the payload of an IPCTNL_MSG_CT_NEW message (nfgenmsg
// and attributes).
func parseEntry(b []byte) (Entry, error) {
	if len(b) < 4 {
		return Entry{}, errors.New("ctnetlink: message without nfgenmsg")
	}
	var e Entry
	err := walk(b[4:], func(typ uint16, v []byte) error {
		switch typ {
		case ctaTupleOrig:
			return parseTuple(v, &e.Orig)
		case ctaTupleReply:
			return parseTuple(v, &e.Reply)
		case ctaStatus:
			x, err := u32(v, "status")
			e.Status = x
			return err
		case ctaID:
			x, err := u32(v, "id")
			e.ID = x
			return err
		case ctaProtoinfo:
			return walk(v, func(typ uint16, v []byte) error {
				if typ != ctaProtoinfoTCP {
					return nil
				}
				return walk(v, func(typ uint16, v []byte) error {
					switch {
					case typ == ctaProtoinfoState && len(v) >= 1:
						e.TCPState = v[0]
					case (typ == ctaProtoinfoTCPFlagsOrig || typ == ctaProtoinfoTCPFlagsReply) && len(v) >= 1:
						e.Liberal = e.Liberal || v[0]&ipCTTCPFlagBeLiberal != 0
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
				e.ReplyPackets, e.HasCounters = binary.BigEndian.Uint64(v), true
				return nil
			})
		}
		return nil
	})
	return e, err
}

func u32(v []byte, what string) (uint32, error) {
	if len(v) != 4 {
		return 0, fmt.Errorf("ctnetlink: %s of %d bytes", what, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

func parseTuple(b []byte, t *Tuple) error {
	return walk(b, func(typ uint16, v []byte) error {
		switch typ {
		case ctaTupleIP:
			return walk(v, func(typ uint16, v []byte) error {
				a, ok := netip.AddrFromSlice(v)
				if !ok {
					return nil
				}
				switch {
				case (typ == ctaIPv4Src && a.Is4()) || (typ == ctaIPv6Src && a.Is6()):
					t.Src = a
				case (typ == ctaIPv4Dst && a.Is4()) || (typ == ctaIPv6Dst && a.Is6()):
					t.Dst = a
				}
				return nil
			})
		case ctaTupleProto:
			return walk(v, func(typ uint16, v []byte) error {
				switch {
				case typ == ctaProtoNum && len(v) == 1:
					t.Proto = v[0]
				case (typ == ctaProtoSrcPort || typ == ctaProtoDstPort) && len(v) == 2:
					p := binary.BigEndian.Uint16(v)
					if typ == ctaProtoSrcPort {
						t.SrcPort = p
					} else {
						t.DstPort = p
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
