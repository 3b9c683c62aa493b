package testbed

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Each uplink of a dual-stack world carries both families to the cloud, with the default route
// of each family as the mode installs it, and a fault of one family leaves the other alone.
func TestDualStackWorld(t *testing.T) {
	for _, mode := range []V6Mode{V6RA, V6Static, V6SourceFilter} {
		t.Run(strings.ReplaceAll(mode.String(), " ", "_"), func(t *testing.T) {
			w := New(t, Options{IPv6: mode})
			out := w.Device.MustRun(t, "ip", "-6", "route", "show", "default")
			for _, u := range w.Uplinks {
				if !u.Addr.IsValid() || !u.Addr6.IsValid() {
					t.Fatalf("%s: addresses %v and %v", u.Dev, u.Addr, u.Addr6)
				}
				want := map[V6Mode]string{
					V6RA:           fmt.Sprintf("default via fe80::1 dev %s proto ra metric %d", u.Dev, u.Metric),
					V6Static:       fmt.Sprintf("default via fe80::1 dev %s proto static metric %d", u.Dev, u.Metric),
					V6SourceFilter: fmt.Sprintf("default from %s via fe80::1 dev %s proto static metric %d", u.Prefix6, u.Dev, u.Metric),
				}[mode]
				if !strings.Contains(out, want) {
					t.Errorf("no %q in the device's IPv6 default routes:\n%s", want, out)
				}
				if err := echoVia(w, u.Dev, 5*time.Second); err != nil {
					t.Errorf("echo via %s over IPv4: %v", u.Dev, err)
				}
				if err := echoAt(w, u.Dev, u.Addr6, netip.AddrPortFrom(Echo6Addr, EchoPort), 5*time.Second); err != nil {
					t.Errorf("echo via %s over IPv6: %v", u.Dev, err)
				}
			}
			if _, err := w.StartDNS(append(DefaultRecords(), DefaultRecords6()...)); err != nil {
				t.Fatal(err)
			}
			got, err := w.Resolve(DNS6Addr, "echo.afero.io", dns.TypeAAAA)
			if err != nil || len(got) != 1 || got[0] != Echo6Addr {
				t.Errorf("AAAA echo.afero.io at %s: %v %v", DNS6Addr, got, err)
			}
			if err := httpGet204(w, netip.AddrPortFrom(Echo6Addr, HTTPPort)); err != nil {
				t.Error(err)
			}

			if err := w.SetFault("eth0", Fault{Blackhole: true, Family: 6}); err != nil {
				t.Fatal(err)
			}
			eth0 := w.MustUplink("eth0")
			if err := echoAt(w, "eth0", eth0.Addr6, netip.AddrPortFrom(Echo6Addr, EchoPort), 500*time.Millisecond); err == nil {
				t.Error("echo over IPv6 through eth0 passed its IPv6 black hole")
			}
			if err := echoVia(w, "eth0", 5*time.Second); err != nil {
				t.Errorf("IPv4 through eth0 must survive an IPv6-only black hole: %v", err)
			}
			if _, err := w.MustUplink("eth0").Router.Run("ping", "-6", "-c1", "-W2", eth0.Addr6.String()); err != nil {
				t.Errorf("the router must still reach the device (ND) during the black hole: %v", err)
			}
			if err := w.SetFault("eth0", Fault{Blackhole: true, Family: 4}); err != nil {
				t.Fatal(err)
			}
			if err := echoAt(w, "eth0", eth0.Addr6, netip.AddrPortFrom(Echo6Addr, EchoPort), 5*time.Second); err != nil {
				t.Errorf("IPv6 through eth0 must survive an IPv4-only black hole: %v", err)
			}
			if err := echoVia(w, "eth0", 500*time.Millisecond); err == nil {
				t.Error("echo over IPv4 through eth0 passed its IPv4 black hole")
			}
		})
	}
}

// The RA mode's default route is the kernel's from radvd: deleted, it comes back with the next
// unsolicited advertisement.
func TestDualStackRAReturns(t *testing.T) {
	w := New(t, Options{IPv6: V6RA, Uplinks: []string{"eth0"}})
	w.Device.MustRun(t, "ip", "-6", "route", "del", "default", "dev", "eth0")
	if err := w.WaitRoute6("eth0", 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// An IPv6-only uplink has no IPv4 at all; the cloud's IPv6 resolver, a DNS64, synthesizes the
// AAAA of a name with only an A record, and the cloud answers at the synthesized address.
func TestIPv6OnlyUplinkDNS64(t *testing.T) {
	w := New(t, Options{IPv6Only: []string{"wwan0"}, DNS64: true})
	wwan := w.MustUplink("wwan0")
	if wwan.Addr.IsValid() || !wwan.V6Only {
		t.Fatalf("wwan0 has IPv4 %v", wwan.Addr)
	}
	if out := w.Device.MustRun(t, "ip", "-4", "addr", "show", "dev", "wwan0"); strings.Contains(out, "inet ") {
		t.Fatalf("wwan0 has an IPv4 address:\n%s", out)
	}
	if out := w.Device.MustRun(t, "ip", "-4", "route", "show", "default"); strings.Contains(out, "wwan0") {
		t.Fatalf("an IPv4 default route through wwan0:\n%s", out)
	}
	if _, err := w.StartDNS(DefaultRecords()); err != nil {
		t.Fatal(err)
	}
	got, err := w.Resolve(DNS6Addr, "echo.afero.io", dns.TypeAAAA)
	want := Synthesize(EchoAddr)
	if err != nil || len(got) != 1 || got[0] != want {
		t.Fatalf("AAAA echo.afero.io from the DNS64: %v %v, want %s", got, err, want)
	}
	if want.String() != "64:ff9b::c613:1" {
		t.Fatalf("Synthesize(%s) = %s", EchoAddr, want)
	}
	// The IPv4 resolver does not synthesize: DNS64 is the IPv6 side's.
	if got, err := w.Resolve(DNSAddr, "echo.afero.io", dns.TypeAAAA); err != nil || len(got) != 0 {
		t.Errorf("AAAA from the IPv4 resolver: %v %v, want none", got, err)
	}
	if err := echoAt(w, "wwan0", wwan.Addr6, netip.AddrPortFrom(want, EchoPort), 5*time.Second); err != nil {
		t.Errorf("echo at the synthesized address via wwan0: %v", err)
	}
	for _, dev := range []string{"eth0", "wlan0"} {
		u := w.MustUplink(dev)
		if err := echoVia(w, dev, 5*time.Second); err != nil {
			t.Errorf("echo via dual-stack %s over IPv4: %v", dev, err)
		}
		if err := echoAt(w, dev, u.Addr6, netip.AddrPortFrom(Echo6Addr, EchoPort), 5*time.Second); err != nil {
			t.Errorf("echo via dual-stack %s over IPv6: %v", dev, err)
		}
	}
}

// httpGet204 fetches /generate_204 from the device and wants 204.
func httpGet204(w *World, to netip.AddrPort) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return w.Device.Dial(ctx, network, addr)
		},
	}}
	resp, err := client.Get("http://" + to.String() + "/generate_204")
	if err != nil {
		return fmt.Errorf("GET generate_204 at %s: %w", to, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("GET generate_204 at %s: %s", to, resp.Status)
	}
	return nil
}

// A DHCPv6 exchange (Solicit to ff02::1:2, Advertise back to the link-local address) works on
// every uplink of a world without a firewall.
func TestDHCPv6Exchange(t *testing.T) {
	w := New(t, Options{IPv6: V6Static, IPv6Only: []string{"wwan0"}})
	for _, u := range w.Uplinks {
		if err := w.SolicitDHCPv6(u.Dev, 1500*time.Millisecond); err == nil {
			t.Fatalf("an Advertise on %s with no server", u.Dev)
		}
		if err := w.StartDHCPv6(u.Dev); err != nil {
			t.Fatal(err)
		}
		if err := w.SolicitDHCPv6(u.Dev, 5*time.Second); err != nil {
			t.Error(err)
		}
	}
}

// A cable pulled and plugged back (the router's end down and up) leaves the uplink's IPv6 as it
// was: the router's fe80::1 and global address, radvd advertising.
func TestDualStackCarrierReturns(t *testing.T) {
	w := New(t, Options{IPv6: V6RA, Uplinks: []string{"eth0"}})
	u := w.MustUplink("eth0")
	to := netip.AddrPortFrom(Echo6Addr, EchoPort)
	if err := w.SetCarrier("eth0", false); err != nil {
		t.Fatal(err)
	}
	if err := echoAt(w, "eth0", u.Addr6, to, 500*time.Millisecond); err == nil {
		t.Fatal("IPv6 echo without carrier")
	}
	if err := w.SetCarrier("eth0", true); err != nil {
		t.Fatal(err)
	}
	if err := eventually(5*time.Second, func() error { return echoAt(w, "eth0", u.Addr6, to, time.Second) }); err != nil {
		t.Fatalf("IPv6 echo after the carrier came back: %v", err)
	}
	w.Device.MustRun(t, "ip", "-6", "route", "del", "default", "dev", "eth0")
	if err := w.WaitRoute6("eth0", 10*time.Second); err != nil {
		t.Fatalf("radvd after the carrier came back: %v", err)
	}
}
