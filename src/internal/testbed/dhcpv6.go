package testbed

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// DHCPv6 on the wire, as much as a firewall sees of it: a client's Solicit from its link-local
// address, port 546, to All_DHCP_Relay_Agents_and_Servers (ff02::1:2) port 547, and the server's
// Advertise from its link-local address, port 547, back to the client's address, port 546
// (RFC 8415 §7.1, §16.2, §18.2.1). No lease is kept: what a lock-down must let through is the
// exchange, and the exchange is real.

var dhcpv6Servers = netip.MustParseAddr("ff02::1:2")

const (
	dhcpv6Solicit   = 1
	dhcpv6Advertise = 2
	dhcpv6ClientID  = 1
	dhcpv6ServerID  = 2
)

// StartDHCPv6 makes the router of uplink dev answer Solicits on its link to the device with an
// Advertise, until the world closes.
func (w *World) StartDHCPv6(dev string) error {
	u := w.Uplink(dev)
	if u == nil || !u.Gateway6.IsValid() {
		return fmt.Errorf("testbed: no IPv6 uplink %s", dev)
	}
	var group *net.UDPConn
	err := u.Router.Do(func() error {
		ifi, err := net.InterfaceByName("todev")
		if err != nil {
			return err
		}
		group, err = net.ListenMulticastUDP("udp6", ifi, &net.UDPAddr{IP: dhcpv6Servers.AsSlice(), Port: 547})
		return err
	})
	if err != nil {
		return fmt.Errorf("testbed: DHCPv6 server on %s: %w", u.Router.Name, err)
	}
	w.OnClose(group.Close)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := group.ReadFromUDP(buf)
			if err != nil {
				return
			}
			m := buf[:n]
			if n < 4 || m[0] != dhcpv6Solicit {
				continue
			}
			clientID := dhcpv6Option(m[4:], dhcpv6ClientID)
			if clientID == nil {
				continue // RFC 8415 §16.2: a Solicit without a Client Identifier is discarded
			}
			adv := append([]byte{dhcpv6Advertise}, m[1:4]...)
			adv = appendDHCPv6Option(adv, dhcpv6ClientID, clientID)
			adv = appendDHCPv6Option(adv, dhcpv6ServerID, []byte{0, 3, 0, 1, 2, 0, 0, 0, 0, 1}) // DUID-LL
			// From the router's link-local address (the kernel's choice toward a link-local
			// destination), as a server on the link answers.
			group.WriteToUDP(adv, from)
		}
	}()
	return nil
}

// SolicitDHCPv6 sends a Solicit from the device's link-local address on dev and waits for an
// Advertise answering it (same transaction, our client identifier).
func (w *World) SolicitDHCPv6(dev string, timeout time.Duration) error {
	var c *net.UDPConn
	err := w.Device.Do(func() error {
		ll, err := linkLocal(dev)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: ll, Port: 546, Zone: dev})
		return err
	})
	if err != nil {
		return fmt.Errorf("testbed: DHCPv6 client on %s: %w", dev, err)
	}
	defer c.Close()
	xid := make([]byte, 3)
	rand.Read(xid)
	duid := append([]byte{0, 3, 0, 1}, xid[0], xid[1], xid[2], 0, 0, 2) // DUID-LL, unique per call
	sol := appendDHCPv6Option(append([]byte{dhcpv6Solicit}, xid...), dhcpv6ClientID, duid)
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		if _, err := c.WriteToUDP(sol, &net.UDPAddr{IP: dhcpv6Servers.AsSlice(), Port: 547, Zone: dev}); err != nil {
			return fmt.Errorf("testbed: DHCPv6 Solicit on %s: %w", dev, err)
		}
		// Retransmit every second (RFC 8415's SOL_TIMEOUT).
		c.SetReadDeadline(minTime(deadline, time.Now().Add(time.Second)))
		for {
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				break
			}
			m := buf[:n]
			if n >= 4 && m[0] == dhcpv6Advertise && bytes.Equal(m[1:4], xid) && bytes.Equal(dhcpv6Option(m[4:], dhcpv6ClientID), duid) {
				return nil
			}
		}
	}
	return fmt.Errorf("testbed: no DHCPv6 Advertise on %s within %v", dev, timeout)
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// linkLocal is dev's link-local address; call it inside the namespace.
func linkLocal(dev string) (net.IP, error) {
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		return nil, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() == nil && n.IP.IsLinkLocalUnicast() {
			return n.IP, nil
		}
	}
	return nil, fmt.Errorf("no link-local address on %s", dev)
}

// dhcpv6Option returns the value of the first option code in opts, or nil.
func dhcpv6Option(opts []byte, code uint16) []byte {
	for len(opts) >= 4 {
		c, n := uint16(opts[0])<<8|uint16(opts[1]), int(opts[2])<<8|int(opts[3])
		if len(opts) < 4+n {
			return nil
		}
		if c == code {
			return opts[4 : 4+n]
		}
		opts = opts[4+n:]
	}
	return nil
}

func appendDHCPv6Option(b []byte, code uint16, v []byte) []byte {
	return append(append(b, byte(code>>8), byte(code), byte(len(v)>>8), byte(len(v))), v...)
}
