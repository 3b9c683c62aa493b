package probe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
)

// IPv6 of the test world, added to testbed's IPv4 one by dualStack: for
// uplink i, the device has 2001:db8:(10i)::2/64 with a default route via
// the router's link-local fe80::1 (as netifd installs one from an RA);
// the cloud has the echo service, a DNS server and a NAT64 address.
var (
	echo6 = netip.MustParseAddr("2001:db8:ff::1")
	dns6  = netip.MustParseAddr("2001:db8:ff::53")
	// nat64Echo is the echo address as DNS64 synthesizes it for an
	// IPv4-only name: 198.19.0.1 under 64:ff9b::/96. The test cloud owns
	// it, standing in for the NAT64 translator that would carry it to
	// 198.19.0.1: what is tested is that the probe uses a synthesized
	// AAAA like any other.
	nat64Echo = netip.MustParseAddr("64:ff9b::c613:1")
	// linkDNS is a resolver on the uplink's link (the router's
	// link-local address), as netifd reports one from an RA's RDNSS.
	linkDNS = netip.MustParseAddr("fe80::53")
)

func addr6(u *testbed.Uplink) netip.Addr {
	return netip.MustParseAddr(fmt.Sprintf("2001:db8:%d::2", 10*u.Index))
}

// records6 are the names the IPv6 tests resolve: echo.afero.io has both
// families, v4only.afero.io only its DNS64-synthesized AAAA.
func records6() []testbed.Record {
	return []testbed.Record{
		{Name: "echo.afero.io", TTL: 60, Addr: testbed.EchoAddr},
		{Name: "echo.afero.io", TTL: 60, Addr: echo6},
		{Name: "v4only.afero.io", TTL: 60, Addr: nat64Echo},
	}
}

// dualStack gives a testbed world IPv6 on every uplink, an IPv6 echo
// service (on echo6 and nat64Echo) and an IPv6 DNS server on dns6.
func dualStack(t *testing.T, w *testbed.World) {
	t.Helper()
	cloud := []string{
		"addr add " + echo6.String() + "/128 dev lo nodad",
		"addr add " + dns6.String() + "/128 dev lo nodad",
		"addr add " + nat64Echo.String() + "/128 dev lo nodad",
	}
	for _, u := range w.Uplinks {
		i := 10 * u.Index
		if err := u.Router.IP(
			fmt.Sprintf("addr add 2001:db8:%d::1/64 dev todev nodad", i),
			"addr add fe80::1/64 dev todev nodad",
			fmt.Sprintf("addr add 2001:db8:%d::1/64 dev tocloud nodad", i+1),
			fmt.Sprintf("route add ::/0 via 2001:db8:%d::2", i+1),
		); err != nil {
			t.Fatal(err)
		}
		if err := u.Router.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
			t.Fatal(err)
		}
		if err := w.Device.IP(
			fmt.Sprintf("addr add %s/64 dev %s nodad", addr6(u), u.Dev),
			fmt.Sprintf("route add ::/0 via fe80::1 dev %s metric %d", u.Dev, u.Metric),
		); err != nil {
			t.Fatal(err)
		}
		cloud = append(cloud,
			fmt.Sprintf("addr add 2001:db8:%d::2/64 dev %s nodad", i+1, u.CloudDev),
			fmt.Sprintf("route add 2001:db8:%d::/64 via 2001:db8:%d::1", i, i+1),
		)
	}
	if err := w.Cloud.IP(cloud...); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{echo6, nat64Echo} {
		w.Cloud.ServeEcho(t, netip.AddrPortFrom(a, testbed.EchoPort).String())
	}
	serveDNS(t, w.Cloud, "["+dns6.String()+"]:53")
	// The kernel's own link-local addresses are tentative for a second
	// (DAD): a router on a real link has long finished it.
	for _, ns := range append([]*testbed.NS{w.Device, w.Cloud}, routers(w)...) {
		ns.WaitNoTentative(t, 5*time.Second)
	}
}

func routers(w *testbed.World) []*testbed.NS {
	var out []*testbed.NS
	for _, u := range w.Uplinks {
		out = append(out, u.Router)
	}
	return out
}

// serveDNS answers records6 on addr (udp6) inside ns with the test bed's
// DNS server logic.
func serveDNS(t *testing.T, ns *testbed.NS, addr string) *testbed.DNSServer {
	t.Helper()
	pc, err := ns.ListenPacket("udp6", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &testbed.DNSServer{}
	s.SetRecords(records6())
	srv := &dns.Server{PacketConn: pc, Handler: s}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return s
}

func world6(t *testing.T) *testbed.World {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0", "wlan0"}})
	dualStack(t, w)
	return w
}

// target6 is an IPv6 round's target: the uplink's IPv6 source and the
// cloud's IPv6 resolver.
func target6(t *testing.T, w *testbed.World, dev string) Target {
	return Target{Device: dev, Source: addr6(w.MustUplink(dev)), DNS: []netip.Addr{dns6}, Namespace: w.Device.Handle(t)}
}

// A round from an IPv6 source resolves the echo host's AAAA and probes it
// over IPv6, bound to the uplink: every method, the DNS64-synthesized
// AAAA of an IPv4-only name, and an IPv6 literal.
func TestProbesOverIPv6(t *testing.T) {
	w := world6(t)
	h204 := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.WriteHeader(http.StatusNoContent)
	})}
	l, err := w.Cloud.Listen("tcp6", "["+echo6.String()+"]:8206")
	if err != nil {
		t.Fatal(err)
	}
	go h204.Serve(l)
	defer h204.Close()
	eth, wlan := target6(t, w, "eth0"), target6(t, w, "wlan0")
	probers := map[string]*Prober{
		"echo":         mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort}),
		"echo literal": mustProber(t, Config{Host: echo6.String(), Port: testbed.EchoPort}),
		"echo dns64":   mustProber(t, Config{Host: "v4only.afero.io", Port: testbed.EchoPort}),
		"icmp":         mustProber(t, Config{Method: ICMP, Host: "echo.afero.io"}),
		"http":         mustProber(t, Config{Method: HTTP, URL: "http://echo.afero.io:8206/generate_204"}),
		"http literal": mustProber(t, Config{Method: HTTP, URL: "http://[" + echo6.String() + "]:8206/generate_204"}),
	}
	for name, p := range probers {
		for _, tg := range []Target{eth, wlan} {
			if r := p.Probe(context.Background(), tg, 3*time.Second, 0); !r.OK {
				t.Errorf("%s via %s: %+v", name, tg.Device, r)
			}
		}
	}
	// eth0's upstream dies silently (IPv6 too): every method fails there
	// and still works on wlan0, so each is bound to its uplink.
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	for name, p := range probers {
		if r := p.Probe(context.Background(), eth, 500*time.Millisecond, 0); r.OK {
			t.Errorf("%s via black-holed eth0: %+v", name, r)
		}
		if r := p.Probe(context.Background(), wlan, 3*time.Second, 0); !r.OK {
			t.Errorf("%s via wlan0 while eth0 dead: %+v", name, r)
		}
	}
}

// The family of a round is its source's: the same prober runs an IPv4 and
// an IPv6 round on the same uplink, each with its own family's address of
// the echo host, and the IPv6 round really goes over IPv6.
func TestRoundFamilyIsSourceFamily(t *testing.T) {
	w := world6(t)
	if _, err := w.StartDNS(records6()); err != nil {
		t.Fatal(err)
	}
	peers := make(chan netip.AddrPort, 16)
	l, err := w.Cloud.Listen("tcp6", "["+echo6.String()+"]:81")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l4, err := w.Cloud.Listen("tcp4", testbed.EchoAddr.String()+":81")
	if err != nil {
		t.Fatal(err)
	}
	defer l4.Close()
	for _, l := range []net.Listener{l, l4} {
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				peers <- netip.MustParseAddrPort(c.RemoteAddr().String())
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
	}
	p := mustProber(t, Config{Host: "echo.afero.io", Port: 81})
	u := w.MustUplink("eth0")
	// Both rounds resolve through the IPv4 resolver only: the AAAA of an
	// IPv6 round may come over IPv4 on a dual-stack uplink.
	v4dns := []netip.Addr{testbed.DNSAddr}
	for _, tg := range []Target{
		{Device: "eth0", Source: u.Addr, DNS: v4dns},
		{Device: "eth0", Source: addr6(u), DNS: v4dns},
		{Device: "eth0", Source: u.Addr, DNS: v4dns},
	} {
		tg.Namespace = w.Device.Handle(t)
		if r := p.Probe(context.Background(), tg, 3*time.Second, 0); !r.OK {
			t.Fatalf("from %s: %+v", tg.Source, r)
		}
		// Every attempt of the round (hedging may start more than one)
		// came from the round's source.
		if got := (<-peers).Addr(); got != tg.Source {
			t.Fatalf("round from %s reached the echo host from %s", tg.Source, got)
		}
		time.Sleep(50 * time.Millisecond) // the accepting goroutine is behind
		for len(peers) > 0 {
			if got := (<-peers).Addr(); got != tg.Source {
				t.Fatalf("round from %s reached the echo host from %s", tg.Source, got)
			}
		}
	}
}

// Link-local resolvers (an RA's RDNSS, netifd's report of them often
// without a zone) are reached on the uplink's own link; one scoped to
// another device is not this uplink's and is not used.
func TestLinkLocalResolver(t *testing.T) {
	w := world6(t)
	r1 := w.MustUplink("eth0").Router
	var idx int
	if err := r1.Do(func() error {
		ifi, err := net.InterfaceByName("todev")
		if ifi != nil {
			idx = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := r1.IP("addr add " + linkDNS.String() + "/64 dev todev nodad"); err != nil {
		t.Fatal(err)
	}
	srv := serveDNS(t, r1, "["+linkDNS.String()+"%"+strconv.Itoa(idx)+"]:53")
	tg := target6(t, w, "eth0")
	for _, dnsAddr := range []netip.Addr{linkDNS, linkDNS.WithZone("eth0")} {
		tg.DNS = []netip.Addr{dnsAddr}
		p := mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort})
		before := srv.Queries()
		if r := p.Probe(context.Background(), tg, 3*time.Second, 0); !r.OK {
			t.Fatalf("resolver %s: %+v", dnsAddr, r)
		} else {
			t.Logf("resolver %s: %v", dnsAddr, r.RTT)
		}
		if srv.Queries() == before {
			t.Fatalf("resolver %s was not asked", dnsAddr)
		}
	}
	tg.DNS = []netip.Addr{linkDNS.WithZone("wlan0")}
	p := mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort})
	if r := p.Probe(context.Background(), tg, time.Second, 0); r.OK || !strings.Contains(r.Err, "no DNS servers") {
		t.Fatalf("a resolver on wlan0's link used for eth0: %+v", r)
	}
}

// An address literal has one family: a round of the other family fails at
// once, saying so (no network needed to know).
func TestLiteralOfOtherFamily(t *testing.T) {
	for _, c := range []struct {
		cfg Config
		src string
		why string
	}{
		{Config{Host: "198.19.0.1", Port: 80}, "2001:db8:10::2", "echo_host 198.19.0.1 is an IPv4 address: no target for an ipv6 round"},
		{Config{Method: ICMP, Host: "2001:db8:ff::1"}, "198.18.10.2", "echo_host 2001:db8:ff::1 is an IPv6 address: no target for an ipv4 round"},
		{Config{Method: HTTP, URL: "http://198.19.0.1/generate_204"}, "2001:db8:10::2", "probe_url host 198.19.0.1 is an IPv4 address: no target for an ipv6 round"},
	} {
		p := mustProber(t, c.cfg)
		tg := Target{Device: "eth0", Source: netip.MustParseAddr(c.src)}
		r := p.Probe(context.Background(), tg, time.Second, 0)
		if r.OK || r.Err != c.why {
			t.Errorf("%+v from %s: %+v, want the error %q", c.cfg, c.src, r, c.why)
		}
		if !errors.Is(p.Supports(uplink.FamilyOf(tg.Source)), ErrOtherFamily) {
			t.Errorf("%+v: Check from %s does not say ErrOtherFamily", c.cfg, c.src)
		}
	}
}
