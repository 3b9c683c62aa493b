package ctnl_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/ctnl"
	"github.com/afero/af-conn/internal/testbed"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// flows makes a host and a peer namespace over a veth, both families, with
// conntrack (and its accounting) running in the host as on a stock
// OpenWrt, and an echo server on the peer.
func flows(t *testing.T) (host *testbed.NS, echo func(addr string) (local, remote netip.AddrPort)) {
	host, peer := testbed.NewNS(t, "cth"), testbed.NewNS(t, "ctp")
	must(t, host.IP("link add eth0 type veth peer name eth0p netns "+peer.Name,
		"addr add 198.18.1.2/24 dev eth0", "addr add 2001:db8:1::2/64 dev eth0 nodad", "link set eth0 up"))
	must(t, peer.IP("addr add 198.18.1.1/24 dev eth0p", "addr add 2001:db8:1::1/64 dev eth0p nodad", "link set eth0p up"))
	must(t, host.Sysctl("net.netfilter.nf_conntrack_acct", "1"))
	must(t, host.Nft("table inet stockfw {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tct state established accept\n\t}\n}\n"))
	l, err := peer.Listen("tcp", "[::]:7")
	must(t, err)
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return host, func(addr string) (netip.AddrPort, netip.AddrPort) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := host.Dial(ctx, "tcp", addr)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		var b [1]byte
		for range 3 { // replies for the counter to count
			if _, err := c.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, b[:]); err != nil {
				t.Fatal(err)
			}
		}
		return netip.MustParseAddrPort(c.LocalAddr().String()), netip.MustParseAddrPort(c.RemoteAddr().String())
	}
}

// Get finds the entry of a real TCP connection of either family by its
// reply tuple (or its original one), with status, state and counters.
func TestGetBothFamilies(t *testing.T) {
	host, echo := flows(t)
	c, err := ctnl.Open(host.Handle(t), time.Second)
	must(t, err)
	defer c.Close()
	for _, addr := range []string{"198.18.1.1:7", "[2001:db8:1::1]:7"} {
		local, remote := echo(addr)
		reply := ctnl.Tuple{Src: remote.Addr(), Dst: local.Addr(), Proto: unix.IPPROTO_TCP, SrcPort: remote.Port(), DstPort: local.Port()}
		orig := ctnl.Tuple{Src: local.Addr(), Dst: remote.Addr(), Proto: unix.IPPROTO_TCP, SrcPort: local.Port(), DstPort: remote.Port()}
		for _, asked := range []ctnl.Tuple{reply, orig} {
			e, err := c.Get(asked)
			if err != nil {
				t.Fatalf("%s: get %+v: %v", addr, asked, err)
			}
			if e.Orig != orig || e.Reply != reply {
				t.Fatalf("%s: entry tuples %+v / %+v, want %+v / %+v", addr, e.Orig, e.Reply, orig, reply)
			}
			if e.Status&(ctnl.StatusConfirmed|ctnl.StatusSeenReply) != ctnl.StatusConfirmed|ctnl.StatusSeenReply ||
				e.TCPState != ctnl.TCPEstablished || e.Liberal || !e.HasCounters || e.ReplyPackets < 4 || e.ID == 0 {
				t.Fatalf("%s: entry %+v: want confirmed, replied, established, checked, counted (>= 4 replies), with id", addr, e)
			}
		}
		// A tuple of no flow: no entry, and the socket still answers right.
		none := reply
		none.DstPort++
		if _, err := c.Get(none); !errors.Is(err, ctnl.ErrNoEntry) {
			t.Fatalf("%s: get of no flow: %v, want ErrNoEntry", addr, err)
		}
		if _, err := c.Get(reply); err != nil {
			t.Fatalf("%s: get after a miss: %v", addr, err)
		}
	}
	if _, err := c.Get(ctnl.Tuple{Src: netip.MustParseAddr("198.18.1.1"), Dst: netip.MustParseAddr("2001:db8:1::2"), Proto: unix.IPPROTO_TCP}); err == nil {
		t.Fatal("a tuple of mixed families was asked for")
	}
}

// DeleteFlows removes the entries it picks, of either family, and no
// other; the kernel then has none of them.
func TestDeleteFlowsBothFamilies(t *testing.T) {
	host, echo := flows(t)
	c, err := ctnl.Open(host.Handle(t), time.Second)
	must(t, err)
	defer c.Close()
	l4, r4 := echo("198.18.1.1:7")
	l6, r6 := echo("[2001:db8:1::1]:7")
	l6b, r6b := echo("[2001:db8:1::1]:7")
	tupleOf := func(l, r netip.AddrPort) ctnl.Tuple {
		return ctnl.Tuple{Src: l.Addr(), Dst: r.Addr(), Proto: unix.IPPROTO_TCP, SrcPort: l.Port(), DstPort: r.Port()}
	}
	// One IPv6 connection, by its port.
	n, err := c.DeleteFlows(unix.AF_UNSPEC, func(e ctnl.Entry) bool { return e.Orig == tupleOf(l6, r6) })
	if err != nil || n != 1 {
		t.Fatalf("delete one IPv6 flow: %d %v", n, err)
	}
	if _, err := c.Get(tupleOf(l6, r6)); !errors.Is(err, ctnl.ErrNoEntry) {
		t.Fatalf("deleted IPv6 flow: %v", err)
	}
	for _, tu := range []ctnl.Tuple{tupleOf(l4, r4), tupleOf(l6b, r6b)} {
		if _, err := c.Get(tu); err != nil {
			t.Fatalf("flow %+v gone too: %v", tu, err)
		}
	}
	// Everything from the host's IPv4 address.
	n, err = c.DeleteFlows(unix.AF_UNSPEC, func(e ctnl.Entry) bool { return e.Orig.Src == l4.Addr() })
	if err != nil || n != 1 {
		t.Fatalf("delete the IPv4 flows: %d %v", n, err)
	}
	if _, err := c.Get(tupleOf(l4, r4)); !errors.Is(err, ctnl.ErrNoEntry) {
		t.Fatalf("deleted IPv4 flow: %v", err)
	}
	if _, err := c.Get(tupleOf(l6b, r6b)); err != nil {
		t.Fatalf("the other IPv6 flow: %v", err)
	}
	var seen int
	if _, err := c.DeleteFlows(unix.AF_UNSPEC, func(ctnl.Entry) bool { seen++; return false }); err != nil || seen == 0 {
		t.Fatalf("dump saw %d entries: %v", seen, err)
	}
}

// A dump of many entries spans many reads; every entry is seen once.
func TestDeleteFlowsLargeTable(t *testing.T) {
	host, _ := flows(t)
	c, err := ctnl.Open(host.Handle(t), time.Second)
	must(t, err)
	defer c.Close()
	// 3000 UDP flows of each family, from the host to the peer.
	must(t, host.Do(func() error {
		for _, dst := range []string{"198.18.1.1", "2001:db8:1::1"} {
			u, err := net.ListenUDP("udp", nil)
			if err != nil {
				return err
			}
			for p := range 3000 {
				if _, err := u.WriteToUDPAddrPort([]byte{0}, netip.AddrPortFrom(netip.MustParseAddr(dst), uint16(10000+p))); err != nil {
					u.Close()
					return err
				}
			}
			u.Close()
		}
		return nil
	}))
	count := func() (v4, v6 int) {
		_, err := c.DeleteFlows(unix.AF_UNSPEC, func(e ctnl.Entry) bool {
			if e.Orig.Proto == unix.IPPROTO_UDP && e.Orig.DstPort >= 10000 {
				if e.Orig.Src.Is4() {
					v4++
				} else {
					v6++
				}
			}
			return false
		})
		must(t, err)
		return v4, v6
	}
	if v4, v6 := count(); v4 != 3000 || v6 != 3000 {
		t.Fatalf("dump saw %d IPv4 and %d IPv6 flows, want 3000 each", v4, v6)
	}
	// A dump of one family has none of the other's.
	n, err := c.DeleteFlows(unix.AF_INET, func(e ctnl.Entry) bool { return e.Orig.Src.Is6() })
	if err != nil || n != 0 {
		t.Fatalf("the IPv4 dump had %d IPv6 entries: %v", n, err)
	}
	n, err = c.DeleteFlows(unix.AF_INET6, func(e ctnl.Entry) bool { return e.Orig.Proto == unix.IPPROTO_UDP })
	if err != nil || n != 3000 {
		t.Fatalf("deleted %d IPv6 flows: %v", n, err)
	}
	if v4, v6 := count(); v4 != 3000 || v6 != 0 {
		t.Fatalf("after deleting IPv6: %d IPv4 and %d IPv6 flows", v4, v6)
	}
}
