package daemon_test

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/testbed"
)

// Red team, capture mode (no queueing, or dns_hold '0'): a LAN client sends queries for the
// name the hub is about to resolve, to the uplinks' resolver, with many IDs and IP TTL 1 (the
// hub sees them arrive and never forwards them). When the hub's own query has one of those IDs
// it looked like the NAT copy of a LAN query (same resolver, ID and question within 2 s, NAT
// "rewrote the port") and its answer opened forwarding only: the hub locked out of an address
// it resolved itself. Here the hub's ID is among the client's 256 (a client quota's worth; 16
// client addresses cover 1 in 16 of the hub's lookups).
func TestE2EDNSHubQueryNotTakenForLANCopy(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	if _, err := w.StartDNS(advRecords()); err != nil {
		t.Fatal(err)
	}
	if err := w.Cloud.IP("addr add 198.18.230.0/24 dev lo"); err != nil {
		t.Fatal(err)
	}
	serveCloudTCP(t, w)
	lan, e := startWithAP(t, w, e2eConnmgr("nftables", "0"))
	name, addr := "h-1.afero.io", hubAddr(1).String()
	const hubID = 0x4242
	lan.NS.MustDo(t, func() {
		c, err := net.ListenPacket("udp4", "0.0.0.0:5555")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, _ := c.(*net.UDPConn).SyscallConn()
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, 1) })
		q := new(dns.Msg)
		q.SetQuestion(dns.Fqdn(name), dns.TypeA)
		to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(testbed.DNSAddr, 53))
		for i := range 256 {
			q.Id = uint16(hubID - 128 + i)
			b, _ := q.Pack()
			if _, err := c.WriteTo(b, to); err != nil {
				t.Fatal(err)
			}
		}
	})
	time.Sleep(200 * time.Millisecond)
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	q.Id = hubID
	err := w.Device.Do(func() error {
		m, _, err := (&dns.Client{Timeout: 5 * time.Second}).Exchange(q, net.JoinHostPort(testbed.DNSAddr.String(), "53"))
		if err == nil && len(m.Answer) == 0 {
			err = fmt.Errorf("no answer")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !slices.Contains(e.members("allow4"), addr) && !slices.Contains(e.members("fwd4"), addr) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !slices.Contains(e.members("allow4"), addr) {
		t.Fatalf("the hub's own lookup of %s: %s not opened for the device (allow4 %v, fwd4 %v)", name, addr, e.members("allow4"), e.members("fwd4"))
	}
	if err := e.connect(addr, 3*time.Second); err != nil {
		t.Fatalf("the hub's connect to %s, which it resolved itself: %v", addr, err)
	}
}
