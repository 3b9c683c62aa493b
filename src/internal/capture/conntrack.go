package capture

import (
	"net/netip"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/ctnl"
)

// This file is the capture's view of conntrack, over package ctnl: the
// one entry of a TCP connection, got by the tuple of a packet.

// Status bits and TCP state the verdict reads (see ctnl).
const (
	ipsSeenReply = ctnl.StatusSeenReply
	ipsConfirmed = ctnl.StatusConfirmed
	ipsDying     = ctnl.StatusDying

	tcpConntrackEstablished = ctnl.TCPEstablished
)

// tuple is one direction of a TCP connection.
type tuple struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
}

// ctEntry is what the capture needs of a conntrack entry (ctnl.Entry's
// fields of the same names).
type ctEntry struct {
	orig, reply  tuple
	status       uint32
	tcpState     uint8
	liberal      bool
	id           uint32
	replyPackets uint64
	hasCounters  bool
}

// ctConn is a ctnetlink socket in the capture's namespace.
type ctConn struct{ *ctnl.Conn }

// openCT opens the socket. A reply comes at once; the timeout only guards
// against a kernel that never answers (the capture's goroutine must not
// hang).
func openCT(ns netns.NsHandle) (*ctConn, error) {
	c, err := ctnl.Open(ns, 200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	return &ctConn{c}, nil
}

// get asks for the entry of which t is the reply direction or the
// original one; ctnl.ErrNoEntry if conntrack has none.
func (c *ctConn) get(t tuple) (ctEntry, error) {
	e, err := c.Get(ctnl.Tuple{Src: t.src, Dst: t.dst, Proto: unix.IPPROTO_TCP, SrcPort: t.srcPort, DstPort: t.dstPort})
	if err != nil {
		return ctEntry{}, err
	}
	return ctEntry{orig: tupleOf(e.Orig), reply: tupleOf(e.Reply), status: e.Status, tcpState: e.TCPState,
		liberal: e.Liberal, id: e.ID, replyPackets: e.ReplyPackets, hasCounters: e.HasCounters}, nil
}

func tupleOf(t ctnl.Tuple) tuple {
	return tuple{src: t.Src, dst: t.Dst, srcPort: t.SrcPort, dstPort: t.DstPort}
}
