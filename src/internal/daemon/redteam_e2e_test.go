package daemon_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/checksum"
	"github.com/afero/af-conn/internal/testbed"
)

// Red-team tests of DNS extraction (issue 9 follow-up), with the real binary: what the gate
// believes that the hub's own stack throws away.
//
// A reply whose UDP checksum is wrong never reaches the asking process: the kernel drops it in
// udp_rcv, and in hold mode conntrack already calls it invalid, so the lock-down drops it before
// the queue. In capture mode the gate reads it from its AF_PACKET socket before any of that, and
// judges it as a reply. A forger who can see or guess the query's port and ID then (1) opens an
// address of its choice that no process on the hub was ever told about, and (2) uses up the
// query, so that the resolver's genuine answer, which the client does get and use, opens
// nothing ("unsolicited"): the hub's cloud connection is dropped by its own lock-down.
func TestE2ERedTeamBadChecksum(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) { redTeamBadChecksum(t, backend) })
	}
}

func redTeamBadChecksum(t *testing.T, backend string) {
	e := newE2E(t, backend)
	for _, mode := range []string{"hold", "capture"} {
		if mode == "capture" {
			e.switchToCapture()
		}
		forged, genuine := "198.18.200.63", "198.18.200.64"
		if mode == "capture" {
			forged, genuine = "198.18.200.61", "198.18.200.62"
		}
		f := e.newForger()
		f.ask()
		// The forgery: right resolver, right port, right ID, right question; a bad UDP checksum.
		m := new(dns.Msg)
		m.SetReply(f.query)
		rr, _ := dns.NewRR("silent.afero.io. 3600 IN A " + forged)
		m.Answer = []dns.RR{rr}
		payload, _ := m.Pack()
		src := netip.MustParseAddr(silentDNS)
		dst, _ := netip.AddrFromSlice(f.from.IP.To4())
		seg := udpSegment(src, dst, 53, uint16(f.from.Port), payload)
		sum := binary.BigEndian.Uint16(seg[6:])
		binary.BigEndian.PutUint16(seg[6:], sum+1|1) // never the right one (nor 0, "no checksum")
		raw, err := e.w.Cloud.ListenPacket("ip4:udp", silentDNS)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := raw.WriteTo(seg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			t.Fatal(err)
		}
		raw.Close()
		select {
		case got := <-f.got:
			t.Fatalf("%s: the bad-checksum reply reached the client (%v): the test's premise is wrong", mode, got)
		case <-time.After(time.Second):
		}
		if slices.Contains(e.learned(), forged) {
			t.Errorf("%s mode: a reply the hub's kernel discarded (bad UDP checksum) opened %s", mode, forged)
		}
		// The resolver's genuine answer, which the client does receive.
		m = new(dns.Msg)
		m.SetReply(f.query)
		rr, _ = dns.NewRR("silent.afero.io. 3600 IN A " + genuine)
		m.Answer = []dns.RR{rr}
		b, _ := m.Pack()
		if _, err := f.right.WriteTo(b, f.from); err != nil {
			t.Fatal(err)
		}
		select {
		case <-f.got:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the genuine reply never reached the client", mode)
		}
		deadline := time.Now().Add(3 * time.Second)
		for !slices.Contains(e.learned(), genuine) {
			if time.Now().After(deadline) {
				t.Errorf("%s mode: the genuine answer the client got did not open %s (learned %v)", mode, genuine, e.learned())
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		f.close()
	}
}

// udpSegment is a UDP header (with its right checksum over the IPv4 pseudo-header) and payload.
func udpSegment(src, dst netip.Addr, sport, dport uint16, payload []byte) []byte {
	seg := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(seg[0:], sport)
	binary.BigEndian.PutUint16(seg[2:], dport)
	binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)))
	copy(seg[8:], payload)
	c := l4Checksum(src, dst, syscall.IPPROTO_UDP, seg)
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(seg[6:], c)
	return seg
}

// l4Checksum is the UDP/TCP checksum of seg (its checksum field 0) over the IPv4 pseudo-header.
func l4Checksum(src, dst netip.Addr, proto byte, seg []byte) uint16 {
	s4, d4 := src.As4(), dst.As4()
	pseudo := append(append(s4[:], d4[:]...), 0, proto, byte(len(seg)>>8), byte(len(seg)))
	return checksum.Internet(append(pseudo, seg...))
}

// In capture mode a TCP "reply" was judged from one segment, without its sequence number: a
// forger who knows the connection's ports and the query's ID, but not the 32 bits TCP's
// sequence numbers add, opens an address of its choice, though the hub's stack drops the
// segment (out of window) and no client ever reads it. (Hold mode: conntrack calls such a
// segment invalid and the lock-down drops it before the queue.)
func TestE2ERedTeamTCPSequence(t *testing.T) {
	e := newE2E(t, "nftables")
	e.switchToCapture()
	ln, err := e.w.Cloud.Listen("tcp4", silentDNS+":53")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 512)
		n, _ := c.Read(buf)
		got <- buf[:n]
		time.Sleep(30 * time.Second) // never answers
	}()
	var conn net.Conn
	if err := e.w.Device.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", silentDNS+":53", 5*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	q := new(dns.Msg)
	q.SetQuestion("silent.afero.io.", dns.TypeA)
	qb, _ := q.Pack()
	if _, err := conn.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(qb))), qb...)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the TCP query never reached the resolver")
	}
	m := new(dns.Msg)
	m.SetReply(q)
	rr, _ := dns.NewRR("silent.afero.io. 3600 IN A 198.18.200.65")
	m.Answer = []dns.RR{rr}
	rb, _ := m.Pack()
	local := conn.LocalAddr().(*net.TCPAddr)
	dst, _ := netip.AddrFromSlice(local.IP.To4())
	seg := make([]byte, 20, 22+len(rb))
	binary.BigEndian.PutUint16(seg[0:], 53)
	binary.BigEndian.PutUint16(seg[2:], uint16(local.Port))
	binary.BigEndian.PutUint32(seg[4:], 0x5eed5eed) // a guessed sequence number
	binary.BigEndian.PutUint32(seg[8:], 0x0acc0acc) // and acknowledgement
	seg[12] = 5 << 4
	seg[13] = 0x18 // PSH|ACK
	binary.BigEndian.PutUint16(seg[14:], 65535)
	seg = append(binary.BigEndian.AppendUint16(seg, uint16(len(rb))), rb...)
	binary.BigEndian.PutUint16(seg[16:], l4Checksum(netip.MustParseAddr(silentDNS), dst, syscall.IPPROTO_TCP, seg))
	raw, err := e.w.Cloud.ListenPacket("ip4:tcp", silentDNS)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.WriteTo(seg, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	conn.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := conn.Read(make([]byte, 512)); err == nil {
		t.Fatalf("the out-of-window segment reached the client (%d bytes): the test's premise is wrong", n)
	}
	if slices.Contains(e.learned(), "198.18.200.65") {
		t.Errorf("capture mode: a TCP segment the hub's stack dropped (wrong sequence number) opened 198.18.200.65")
	}
}

// A LAN client's query must never open the device itself (README, "directions and scope"). In
// hold mode the gate tells a LAN client's answer from the hub's by where the reply goes. Over
// IPv6 there is no NAT and Linux forwards a packet whose source is one of the router's own
// addresses (IPv4 calls that a martian and drops it): a LAN client that sends its query to the
// uplink's resolver with the hub's uplink address as source gets the reply delivered to the
// hub, and its answer was opened for the device (allow6) as if the hub had asked.
func TestE2ERedTeamLANSpoofsHubV6(t *testing.T) {
	slow6DNS := netip.MustParseAddr("2001:db8:ff::54")
	w := testbed.New(t, testbed.Options{IPv6: testbed.V6Static})
	spoofed := netip.MustParseAddr("2001:db8:ff::77")
	recs := append(testbed.DefaultRecords(), testbed.Record{Name: "lan6.afero.io", TTL: 60, Addr: spoofed})
	if _, err := w.StartDNS(recs); err != nil {
		t.Fatal(err)
	}
	resolv := "nameserver " + testbed.DNSAddr.String() + "\nnameserver " + testbed.DNS6Addr.String() + "\n"
	if err := os.WriteFile(filepath.Join(w.EtcDir, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		t.Fatal(err)
	}
	lan, e := startWithAP(t, w, e2eConnmgr("nftables", "1")+"\tlist trusted_resolver '"+slow6DNS.String()+"'\n")
	// The hub's global IPv6 address on eth0, which the client claims.
	out, err := w.Device.Run("ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`inet6 (2001:db8:[0-9a-f:]+)/`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no global IPv6 address on the device's eth0: %q", out)
	}
	hub := netip.MustParseAddr(m[1])
	for _, s := range []struct{ k, v string }{{"net.ipv6.conf.eth0.accept_ra", "2"}, {"net.ipv6.conf.all.forwarding", "1"}} {
		if err := w.Device.Sysctl(s.k, s.v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Device.IP("addr add 2001:db8:100::1/64 dev wlan0-1 nodad"); err != nil {
		t.Fatal(err)
	}
	if err := lan.NS.IP("addr add 2001:db8:100::2/64 dev eth0 nodad", "addr add "+hub.String()+"/128 dev eth0 nodad",
		"route add "+slow6DNS.String()+"/128 via 2001:db8:100::1 src "+hub.String()); err != nil {
		t.Fatal(err)
	}
	// A trusted resolver 50 ms away, as real ones are (the gate reads the LAN query before the
	// reply comes; the world's own resolver answers within a millisecond, which races it).
	if err := w.Cloud.IP("addr add " + slow6DNS.String() + "/128 dev lo nodad"); err != nil {
		t.Fatal(err)
	}
	slow, err := w.Cloud.ListenPacket("udp6", netip.AddrPortFrom(slow6DNS, 53).String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := slow.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			m := new(dns.Msg)
			m.SetReply(q)
			rr, _ := dns.NewRR("lan6.afero.io. 60 IN AAAA " + spoofed.String())
			m.Answer = []dns.RR{rr}
			b, _ := m.Pack()
			time.Sleep(50 * time.Millisecond)
			slow.WriteTo(b, from)
		}
	}()
	mark := e.p.Mark()
	q := new(dns.Msg)
	q.SetQuestion("lan6.afero.io.", dns.TypeAAAA)
	qb, _ := q.Pack()
	if err := lan.NS.Do(func() error {
		c, err := net.DialUDP("udp6", net.UDPAddrFromAddrPort(netip.AddrPortFrom(hub, 40053)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(slow6DNS, 53)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(qb)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// The premise: the hub forwarded the query and the resolver's answer was judged.
	// (Logged once the answer is opened; an "untrusted DNS reply ... unsolicited" instead means
	// the gate had not read the query yet: the premise failed, not the lock-down.)
	e.waitLog(mark, `msg="DNS reply" name=lan6\.afero\.io`)
	time.Sleep(200 * time.Millisecond)
	set := func(name string) string {
		out, _ := w.Device.Run("nft", "list", "set", "inet", "afconn", name)
		return out
	}
	if strings.Contains(set("allow6"), spoofed.String()) {
		t.Errorf("a LAN client's query (source: the hub's own address) opened %s for the device (allow6): %s", spoofed, set("allow6"))
	}
	if !strings.Contains(set("fwd6"), spoofed.String()) {
		t.Errorf("the trusted answer to a LAN client's query did not open %s for forwarding (fwd6): %s", spoofed, set("fwd6"))
	}
}

// startWithAP adds an access point's LAN (wlan0-1, network apnet) to w and starts connmgr with
// the given /etc/config/connmgr (nftables backend) and the whitelist *.afero.io.
func startWithAP(t *testing.T, w *testbed.World, connmgr string) (*testbed.LAN, *e2e) {
	t.Helper()
	lan, err := w.AddLAN("wlan0-1")
	if err != nil {
		t.Fatal(err)
	}
	return lan, startE2E(t, w, "nftables", map[string]string{
		"network":   e2eNetwork + "\nconfig interface 'apnet'\n\toption proto 'static'\n",
		"wireless":  advWireless,
		"connmgr":   connmgr,
		"whitelist": "*.afero.io\n",
	}, nil)
}
