package probe

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/uplink"
)

// The IPv6 tests run in the test bed's dual-stack worlds (see testbed's
// ipv6.go): for uplink i the device has 2001:db8:(10i)::2/64 and a default
// route via the router's link-local fe80::1, as netifd installs one; the
// cloud has the echo (port 80) and HTTP 204 (port 8204) services on
// testbed.Echo6Addr and on every address of 64:ff9b::/96 (standing in for
// the NAT64 translator: v4only.afero.io's synthesized AAAA, 64:ff9b::c613:1,
// is answered there), and a DNS64 resolver on testbed.DNS6Addr.

// linkDNS is a resolver on the uplink's link (the router's link-local
// address), as netifd reports one from an RA's RDNSS.
var linkDNS = netip.MustParseAddr("fe80::53")

// records6 are the names the IPv6 tests resolve (echo.afero.io has both
// families); world6 adds v4only.afero.io with an A record only.
func records6() []testbed.Record {
	return append(testbed.DefaultRecords6(), testbed.DefaultRecords()...)
}

// world6 is a dual-stack world with eth0 and wlan0, and wwan0 IPv6-only
// (a cellular SIM behind DNS64/NAT64).
func world6(t *testing.T) *testbed.World {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0", "wlan0", "wwan0"}, IPv6: testbed.V6Static,
		IPv6Only: []string{"wwan0"}, DNS64: true})
	if _, err := w.StartDNS(append(records6(), testbed.Record{Name: "v4only.afero.io", TTL: 60, Addr: testbed.EchoAddr})); err != nil {
		t.Fatal(err)
	}
	return w
}

// target6 is an IPv6 round's target: the uplink's IPv6 source and the
// cloud's IPv6 resolver.
func target6(t *testing.T, w *testbed.World, dev string) Target {
	return Target{Device: dev, Source: w.MustUplink(dev).Addr6, DNS: []netip.Addr{testbed.DNS6Addr}, Namespace: w.Device.Handle(t)}
}

// A round from an IPv6 source resolves the echo host's AAAA and probes it
// over IPv6, bound to the uplink: every method, the DNS64-synthesized
// AAAA of an IPv4-only name, and an IPv6 literal.
func TestProbesOverIPv6(t *testing.T) {
	w := world6(t)
	eth, wlan, wwan := target6(t, w, "eth0"), target6(t, w, "wlan0"), target6(t, w, "wwan0")
	probers := map[string]*Prober{
		"echo":         mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort}),
		"echo literal": mustProber(t, Config{Host: testbed.Echo6Addr.String(), Port: testbed.EchoPort}),
		"echo dns64":   mustProber(t, Config{Host: "v4only.afero.io", Port: testbed.EchoPort}),
		"icmp":         mustProber(t, Config{Method: ICMP, Host: "echo.afero.io"}),
		"http":         mustProber(t, Config{Method: HTTP, URL: "http://echo.afero.io:8204/generate_204"}),
		"http literal": mustProber(t, Config{Method: HTTP, URL: "http://[" + testbed.Echo6Addr.String() + "]:8204/generate_204"}),
		"http dns64":   mustProber(t, Config{Method: HTTP, URL: "http://v4only.afero.io:8204/generate_204"}),
	}
	for name, p := range probers {
		for _, tg := range []Target{eth, wlan, wwan} {
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
	// wlan0's upstream drops IPv6 only: its IPv6 rounds fail, its IPv4
	// ones (the same prober, a source of the other family) still work.
	if err := w.SetFault("wlan0", testbed.Fault{Blackhole: true, Family: 6}); err != nil {
		t.Fatal(err)
	}
	wlan4 := Target{Device: "wlan0", Source: w.MustUplink("wlan0").Addr, DNS: []netip.Addr{testbed.DNSAddr}, Namespace: w.Device.Handle(t)}
	for _, name := range []string{"echo", "icmp", "http"} {
		p := probers[name]
		if r := p.Probe(context.Background(), wlan, 500*time.Millisecond, 0); r.OK {
			t.Errorf("%s via wlan0 over IPv6, dead: %+v", name, r)
		}
		if r := p.Probe(context.Background(), wlan4, 3*time.Second, 0); !r.OK {
			t.Errorf("%s via wlan0 over IPv4 while its IPv6 is dead: %+v", name, r)
		}
	}
}

// The family of a round is its source's: the same prober runs an IPv4 and
// an IPv6 round on the same uplink, each with its own family's address of
// the echo host, and the IPv6 round really goes over IPv6.
func TestRoundFamilyIsSourceFamily(t *testing.T) {
	w := world6(t)
	peers := make(chan netip.AddrPort, 16)
	l, err := w.Cloud.Listen("tcp6", "["+testbed.Echo6Addr.String()+"]:81")
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
		{Device: "eth0", Source: u.Addr6, DNS: v4dns},
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
	// Zoned by index: the net package's cache of interface names is the
	// process's, and todev is in every router's namespace.
	srv, err := w.StartDNSIn(r1, linkDNS.WithZone(strconv.Itoa(idx)), records6())
	if err != nil {
		t.Fatal(err)
	}
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
