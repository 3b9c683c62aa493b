package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/testbed"
)

// The lock-down on IPv6 (issue 11, item 5), with the real binary, both backends, in a world
// whose eth0 and wlan0 are dual-stack (RAs from radvd) and whose wwan0 is IPv6-only behind a
// DNS64. Cloud addresses:
//
//	2001:db8:ff::100   v6.afero.io (AAAA only)
//	198.18.200.101     nat64.afero.io (A only: the DNS64 answers 64:ff9b::c612:c865)
//	2001:db8:ff::103   evil6.example (not whitelisted)
//	2001:db8:ff::66    a rogue IPv6 resolver; it answers conclave.afero.io with 2001:db8:ff::104
//	fe80::1%eth0       eth0's router answers DNS too, conclave.afero.io with 2001:db8:ff::105;
//	                   the trusted link-local resolver is fe80::1%wwan0, a different server
//
// Every cloud address serves TCP port 8080 (a greeting), both families.
var (
	v6Addr      = netip.MustParseAddr("2001:db8:ff::100")
	nat64V4     = netip.MustParseAddr("198.18.200.101")
	evil6Addr   = netip.MustParseAddr("2001:db8:ff::103")
	rogue6DNS   = netip.MustParseAddr("2001:db8:ff::66")
	rogue6Addr  = netip.MustParseAddr("2001:db8:ff::104")
	llRogueAddr = netip.MustParseAddr("2001:db8:ff::105")
)

var v6Records = []testbed.Record{
	{Name: "v6.afero.io", TTL: 60, Addr: v6Addr},
	{Name: "nat64.afero.io", TTL: 60, Addr: nat64V4},
	{Name: "evil6.example", TTL: 60, Addr: evil6Addr},
}

type fw6 struct {
	*e2e
	llDNS *testbed.DNSServer // the cellular router's own resolver, fe80::1%wwan0
}

func newFW6(t *testing.T, backend string) *fw6 {
	w := testbed.New(t, testbed.Options{IPv6: testbed.V6RA, IPv6Only: []string{"wwan0"}, DNS64: true})
	if _, err := w.StartDNS(append(testbed.DefaultRecords(), v6Records...)); err != nil {
		t.Fatal(err)
	}
	lo := []string{"addr add " + nat64V4.String() + "/32 dev lo"}
	for _, a := range []netip.Addr{v6Addr, evil6Addr, rogue6DNS, rogue6Addr, llRogueAddr} {
		lo = append(lo, "addr add "+a.String()+"/128 dev lo nodad")
	}
	if err := w.Cloud.IP(lo...); err != nil {
		t.Fatal(err)
	}
	rogue := []testbed.Record{{Name: "conclave.afero.io", TTL: 2000000, Addr: rogue6Addr}}
	if _, err := w.StartDNSAt(rogue6DNS, rogue); err != nil {
		t.Fatal(err)
	}
	// Each router answers DNS on its link-local address: the cellular one is the uplink's
	// resolver (the device's resolv.conf names it, with its zone), eth0's is nobody's.
	llRogue := []testbed.Record{{Name: "conclave.afero.io", TTL: 2000000, Addr: llRogueAddr}}
	if _, err := w.StartDNSIn(w.MustUplink("eth0").Router, netip.MustParseAddr("fe80::1%todev"), llRogue); err != nil {
		t.Fatal(err)
	}
	llDNS, err := w.StartDNSIn(w.MustUplink("wwan0").Router, netip.MustParseAddr("fe80::1%todev"), append(testbed.DefaultRecords(), v6Records...))
	if err != nil {
		t.Fatal(err)
	}
	resolv := "nameserver " + testbed.DNSAddr.String() + "\nnameserver " + testbed.DNS6Addr.String() + "\nnameserver fe80::1%wwan0\n"
	if err := os.WriteFile(filepath.Join(w.EtcDir, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		t.Fatal(err)
	}
	w.Cloud.ServeHello(t, fmt.Sprintf("[::]:%d", e2ePort))
	for _, u := range w.Uplinks {
		if err := w.StartDHCPv6(u.Dev); err != nil {
			t.Fatal(err)
		}
	}
	e := startE2E(t, w, backend, map[string]string{
		"network":   e2eNetwork,
		"connmgr":   e2eConnmgr(backend, "1"),
		"whitelist": "*.afero.io\n",
	}, nil)
	return &fw6{e2e: e, llDNS: llDNS}
}

func TestE2EFirewallIPv6(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			f := newFW6(t, backend)
			for _, step := range []struct {
				name string
				run  func()
			}{
				{"neighbour_discovery", f.neighbourDiscovery},
				{"router_advertisements", f.routerAdvertisements},
				{"dhcpv6", f.dhcpv6},
				{"aaaa_pinholes_ipv6_only", f.aaaaPinholes},
				{"rogue_ipv6_resolvers", f.rogueResolvers},
				{"capture_mode", f.captureMode},
			} {
				t.Run(step.name, func(t *testing.T) {
					f.e2e.t = t
					step.run()
				})
			}
			f.e2e.t = t
		})
	}
}

// Neighbour discovery both ways on every uplink: the device resolves its router (NS out, NA
// in) and the router resolves the device (NS in, NA out), with both caches emptied first.
func (f *fw6) neighbourDiscovery() {
	t := f.t
	for _, u := range f.w.Uplinks {
		f.w.Device.MustRun(t, "ip", "-6", "neigh", "flush", "dev", u.Dev)
		u.Router.MustRun(t, "ip", "-6", "neigh", "flush", "dev", "todev")
		if out, err := f.w.Device.Run("ping", "-6", "-c1", "-W3", "-I", u.Dev, "fe80::1"); err != nil {
			t.Errorf("device -> router on %s: %v\n%s\nlog:\n%s", u.Dev, err, out, f.p.Log())
		}
		f.w.Device.MustRun(t, "ip", "-6", "neigh", "flush", "dev", u.Dev)
		u.Router.MustRun(t, "ip", "-6", "neigh", "flush", "dev", "todev")
		if out, err := u.Router.Run("ping", "-6", "-c1", "-W3", u.Addr6.String()); err != nil {
			t.Errorf("router -> device on %s: %v\n%s", u.Dev, err, out)
		}
	}
}

// The RA's default route, deleted on every uplink, comes back with the next advertisement.
func (f *fw6) routerAdvertisements() {
	for _, u := range f.w.Uplinks {
		f.w.Device.MustRun(f.t, "ip", "-6", "route", "del", "default", "dev", u.Dev, "proto", "ra")
	}
	for _, u := range f.w.Uplinks {
		if err := f.w.WaitRoute6(u.Dev, 15*time.Second); err != nil {
			f.t.Errorf("RA through the lock-down on %s: %v", u.Dev, err)
		}
	}
}

// A DHCPv6 Solicit and its Advertise pass on every uplink.
func (f *fw6) dhcpv6() {
	for _, u := range f.w.Uplinks {
		if err := f.w.SolicitDHCPv6(u.Dev, 5*time.Second); err != nil {
			f.t.Errorf("through the lock-down: %v", err)
		}
	}
}

// On the IPv6-only uplink, an AAAA answer of the uplink's resolvers (the cloud's DNS64, the
// router's link-local resolver) opens its address for the cloud's traffic, native or
// synthesized; what is not whitelisted stays shut.
func (f *fw6) aaaaPinholes() {
	t := f.t
	nat64 := testbed.Synthesize(nat64V4)
	for _, a := range []netip.Addr{v6Addr, nat64, evil6Addr} {
		f.mustDrop6(a)
	}
	for _, c := range []struct {
		server netip.Addr
		name   string
		want   netip.Addr
	}{
		{testbed.DNS6Addr, "v6.afero.io", v6Addr},
		{testbed.DNS6Addr, "nat64.afero.io", nat64},
		{testbed.DNS6Addr, "evil6.example", evil6Addr},
	} {
		got, err := f.w.ResolveVia("wwan0", c.server, c.name, dns.TypeAAAA)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []netip.Addr{c.want}) {
			t.Fatalf("AAAA %s at %s: %v, want %s", c.name, c.server, got, c.want)
		}
	}
	for _, a := range []netip.Addr{v6Addr, nat64} {
		if err := f.hello6(a, 5*time.Second); err != nil {
			t.Errorf("the cloud at %s over wwan0 after its AAAA: %v\nallow6: %s\nlog:\n%s", a, err, f.set("allow6"), f.p.Log())
		}
	}
	f.mustDrop6(evil6Addr)
	if l := f.set("allow6"); !strings.Contains(l, v6Addr.String()) || !strings.Contains(l, nat64.String()) || strings.Contains(l, evil6Addr.String()) {
		t.Errorf("allow6: %s", l)
	}

	// The cellular router's link-local resolver is trusted on wwan0 (its zone's).
	f.llDNS.SetRecords([]testbed.Record{{Name: "ll.afero.io", TTL: 60, Addr: netip.MustParseAddr("2001:db8:ff::106")}})
	if err := f.w.Cloud.IP("addr add 2001:db8:ff::106/128 dev lo nodad"); err != nil {
		t.Fatal(err)
	}
	got, err := f.w.ResolveVia("wwan0", netip.MustParseAddr("fe80::1"), "ll.afero.io", dns.TypeAAAA)
	if err != nil || len(got) != 1 {
		t.Fatalf("AAAA ll.afero.io at fe80::1%%wwan0: %v %v", got, err)
	}
	if err := f.hello6(got[0], 5*time.Second); err != nil {
		t.Errorf("the cloud at %s after the link-local resolver's AAAA: %v", got[0], err)
	}
}

// A rogue IPv6 resolver's AAAA, and that of a link-local resolver on the wrong uplink (the same
// fe80::1 as the trusted one, on eth0), reach the hub and open nothing.
func (f *fw6) rogueResolvers() {
	t := f.t
	for _, c := range []struct {
		dev    string
		server netip.Addr
		want   netip.Addr
	}{
		{"wwan0", rogue6DNS, rogue6Addr},
		{"eth0", netip.MustParseAddr("fe80::1"), llRogueAddr},
	} {
		got, err := f.w.ResolveVia(c.dev, c.server, "conclave.afero.io", dns.TypeAAAA)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []netip.Addr{c.want}) {
			t.Fatalf("rogue %s%%%s answered %v", c.server, c.dev, got)
		}
		time.Sleep(200 * time.Millisecond)
		if l := f.set("allow6"); strings.Contains(l, c.want.String()) {
			t.Errorf("the answer of %s (on %s, not a trusted resolver there) opened %s: allow6 %s", c.server, c.dev, c.want, l)
		}
		f.mustDrop6(c.want)
	}
}

// hello6 connects to [a]:8080 over wwan0 and reads the greeting.
func (f *fw6) hello6(a netip.Addr, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := f.w.Device.DialVia(ctx, "wwan0", "tcp6", netip.AddrPortFrom(a, e2ePort).String())
	if err != nil {
		return err
	}
	defer c.Close()
	return readHello(c, "["+a.String()+"]", timeout)
}

// mustDrop6 checks that a connect to [a]:8080 over wwan0 times out (the SYN dropped).
func (f *fw6) mustDrop6(a netip.Addr) {
	f.t.Helper()
	err := f.hello6(a, 1500*time.Millisecond)
	if err == nil {
		f.t.Fatalf("connect to %s over wwan0 got through the lock-down", a)
	}
	var ne net.Error
	if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
		f.t.Fatalf("connect to %s over wwan0: %v, want a timeout (a dropped SYN)", a, err)
	}
}

// set is the raw listing of one of the firewall's sets.
func (f *fw6) set(name string) string {
	return (&adv{e2e: f.e2e}).setList(name)
}

// In capture mode (dns_hold '0', by SIGHUP) the same holds: the link-local resolver of wwan0
// opens what it answers, the rogues (the same fe80::1 on eth0 among them) open nothing.
func (f *fw6) captureMode() {
	t := f.t
	mark := f.p.Mark()
	if err := os.WriteFile(filepath.Join(f.dir, "connmgr"), []byte(e2eConnmgr(f.backend, "0")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	f.waitLog(mark, `msg="DNS extraction running" mode=capture`)
	ll := netip.MustParseAddr("2001:db8:ff::107")
	f.llDNS.SetRecords([]testbed.Record{{Name: "ll2.afero.io", TTL: 60, Addr: ll}})
	if got, err := f.w.ResolveVia("wwan0", netip.MustParseAddr("fe80::1"), "ll2.afero.io", dns.TypeAAAA); err != nil || len(got) != 1 {
		t.Fatalf("AAAA ll2.afero.io at fe80::1%%wwan0: %v %v", got, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(f.set("allow6"), ll.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("the link-local resolver's answer did not open %s in capture mode: allow6 %s", ll, f.set("allow6"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.rogueResolvers()
}
