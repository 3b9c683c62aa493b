package rtnl

import (
	"fmt"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Groups of Subscribe (bit n-1 is the rtnetlink group n); the Group*6 are
// IPv6's.
const (
	GroupLink   = 1 << (unix.RTNLGRP_LINK - 1)
	GroupAddr   = 1 << (unix.RTNLGRP_IPV4_IFADDR - 1)
	GroupRoute  = 1 << (unix.RTNLGRP_IPV4_ROUTE - 1)
	GroupRule   = 1 << (unix.RTNLGRP_IPV4_RULE - 1)
	GroupAddr6  = 1 << (unix.RTNLGRP_IPV6_IFADDR - 1)
	GroupRoute6 = 1 << (unix.RTNLGRP_IPV6_ROUTE - 1)
	GroupRule6  = 1 << (unix.RTNLGRP_IPV6_RULE - 1)
)

// Messages of a subscription, as Parse returns them.
type (
	LinkUpdate struct {
		Link
		Deleted bool
	}
	AddrUpdate struct {
		Addr
		Deleted bool
	}
	RouteUpdate struct {
		Route
		Deleted bool
	}
	// RuleUpdate says a rule changed; its content is not parsed.
	RuleUpdate struct{}
)

// Sub is a socket subscribed to rtnetlink groups.
type Sub struct{ c *netlink.Conn }

// Subscribe opens a socket in ns joined to groups (a mask of Group*), with
// a receive buffer of rcvbuf bytes (forced past rmem_max) when rcvbuf > 0.
func Subscribe(ns netns.NsHandle, groups uint32, rcvbuf int) (*Sub, error) {
	c, err := dial(unix.NETLINK_ROUTE, ns, groups)
	if err != nil {
		return nil, err
	}
	if rcvbuf > 0 {
		if err := forceRcvBuf(c, rcvbuf); err != nil {
			c.Close()
			return nil, fmt.Errorf("receive buffer: %w", err)
		}
	}
	return &Sub{c}, nil
}

func forceRcvBuf(c *netlink.Conn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, n)
	}); err != nil {
		return err
	}
	return serr
}

// Receive waits for messages; an error wrapping unix.ENOBUFS says the
// kernel dropped some.
func (s *Sub) Receive() ([]netlink.Message, error) { return s.c.Receive() }

// Close closes the socket, ending a blocked Receive.
func (s *Sub) Close() error { return s.c.Close() }

// Parse turns a message of a subscription into a LinkUpdate, AddrUpdate,
// RouteUpdate or RuleUpdate; nil for other messages and for addresses and
// routes that are neither IPv4 nor IPv6.
func Parse(m netlink.Message) (any, error) {
	switch t := uint16(m.Header.Type); t {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		l, err := ParseLink(m.Data)
		if err != nil {
			return nil, err
		}
		return LinkUpdate{l, t == unix.RTM_DELLINK}, nil
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		a, ok, err := ParseAddr(m.Data)
		if err != nil || !ok {
			return nil, err
		}
		return AddrUpdate{a, t == unix.RTM_DELADDR}, nil
	case unix.RTM_NEWROUTE, unix.RTM_DELROUTE:
		r, ok, err := ParseRoute(m.Data)
		if err != nil || !ok {
			return nil, err
		}
		return RouteUpdate{r, t == unix.RTM_DELROUTE}, nil
	case unix.RTM_NEWRULE, unix.RTM_DELRULE:
		return RuleUpdate{}, nil
	}
	return nil, nil
}
