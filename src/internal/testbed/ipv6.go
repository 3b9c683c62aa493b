package testbed

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// IPv6 half of a world (Options.IPv6, Options.IPv6Only, Options.DNS64). For uplink i:
//
//	device ns: DEV 2001:db8:(10i)::2/64 (static, as DHCPv6's IA_NA gives it), link-local auto;
//	           default route via fe80::1 from the router's RA (proto ra, metric 10/20/50 by
//	           ra_defrtr_metric) or, in V6Static and V6SourceFilter, installed as netifd
//	           does (proto static; from the uplink's prefix with sourcefilter)
//	router ns: "todev" fe80::1 and 2001:db8:(10i)::1/64, radvd advertising the prefix (no
//	           SLAAC) and the cloud's resolver; "tocloud" 2001:db8:(10i+1)::1/64
//	cloud ns:  "rI" 2001:db8:(10i+1)::2/64; on lo echo [2001:db8:ff::1]:80, DNS
//	           [2001:db8:ff::53]:53, HTTP 204 on port 8204 (both families, dual-stack worlds
//	           only); with DNS64 every address of
//	           64:ff9b::/96 is the cloud's own (a local route), so the IPv4 service at 198.19.0.1
//	           answers at 64:ff9b::c613:1 too.
//
// DNS64/NAT64 without a translator: the cloud answers at the synthesized address itself. The
// device cannot tell this from a real NAT64 (it sees an IPv6 destination in 64:ff9b::/96 leave
// its uplink and replies come from it); what is not exercised is the translator's own IPv4 side,
// which is the operator's and never connmgr's.

// V6Mode says whether and how a world's uplinks carry IPv6.
type V6Mode int

const (
	// V6None: IPv4 only (the zero value; every world before IPv6 was this).
	V6None V6Mode = iota
	// V6RA: the routers advertise (radvd, Debian's package) and the device's kernel installs
	// the default route from the RA: `default via fe80::1 dev eth0 proto ra metric 10`.
	V6RA
	// V6Static: no RA; the default route is a link-local gateway installed as netifd does for
	// a static or DHCPv6 interface with option sourcefilter '0':
	// `default via fe80::1 dev eth0 proto static metric 10`.
	V6Static
	// V6SourceFilter: as V6Static, with netifd's default option sourcefilter '1': the default
	// route is restricted to the uplink's prefix,
	// `default from 2001:db8:10::/64 via fe80::1 dev eth0 proto static metric 10` (forwarded
	// traffic from other prefixes has no route, as on OpenWrt).
	V6SourceFilter
)

func (m V6Mode) String() string {
	switch m {
	case V6None:
		return "IPv4 only"
	case V6RA:
		return "RA"
	case V6Static:
		return "netifd static"
	case V6SourceFilter:
		return "netifd sourcefilter"
	}
	return fmt.Sprintf("V6Mode(%d)", int(m))
}

// Well-known IPv6 addresses of a dual-stack world.
var (
	Echo6Addr = netip.MustParseAddr("2001:db8:ff::1")
	DNS6Addr  = netip.MustParseAddr("2001:db8:ff::53")
	// NAT64Prefix is the well-known prefix of RFC 6052 the world's DNS64 synthesizes in.
	NAT64Prefix = netip.MustParsePrefix("64:ff9b::/96")

	routerLinkLocal = netip.MustParseAddr("fe80::1")
)

// HTTPPort is the port of the cloud's HTTP service (GET /generate_204 answers 204).
const HTTPPort = 8204

// ErrNoRadvd is what Build returns for a V6RA world on a machine without radvd; New skips the
// test with a clear message (fails it under CI, where .ci/run installs radvd).
var ErrNoRadvd = errors.New("testbed: IPv6 worlds with router advertisements need radvd (apt-get install radvd; make setup installs it)")

// Synthesize returns the address DNS64 makes of an IPv4 address: 64:ff9b::a.b.c.d.
func Synthesize(a netip.Addr) netip.Addr { return synthesizeIn(NAT64Prefix, a) }

func (w *World) dualStack() bool { return w.opt.IPv6 != V6None }

// DualStack tells whether the world's uplinks carry IPv6.
func (w *World) DualStack() bool { return w.dualStack() }

// V6Mode is how the world's uplinks get their IPv6 default route.
func (w *World) V6Mode() V6Mode { return w.opt.IPv6 }

// prepareV6 sets a new namespace up for IPv6 before any link exists in it: no duplicate
// address detection (addresses usable at once; the world makes them unique), forwarding in
// routers and the cloud, and in them addresses kept while a link is down: SetCarrier pulls a
// cable by taking the router's end down, and the kernel would otherwise delete that end's IPv6
// addresses, which a real router's cable pull never does (fe80::1, the gateway, goes whatever
// keep_addr_on_down says: SetCarrier puts it back).
func (w *World) prepareV6(ns *NS) error {
	// lo predates these settings: its own too, for the addresses tests add to it later.
	for _, k := range []string{"net.ipv6.conf.all.accept_dad", "net.ipv6.conf.default.accept_dad", "net.ipv6.conf.lo.accept_dad"} {
		if err := ns.Sysctl(k, "0"); err != nil {
			return err
		}
	}
	if ns == w.Device {
		return nil
	}
	if err := ns.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
		return err
	}
	return ns.Sysctl("net.ipv6.conf.all.keep_addr_on_down", "1")
}

// routerV6 are the router's ip commands before (pre) and after (post) its links come up.
func routerV6(u *Uplink) (pre, post []string) {
	pre = []string{
		// Its link-local address is fe80::1 and nothing else, so the device's gateway is
		// known (the RA's source address is it).
		"link set todev addrgenmode none",
		"addr add " + routerLinkLocal.String() + "/64 dev todev",
		fmt.Sprintf("addr add 2001:db8:%d::1/64 dev todev nodad", 10*u.Index),
		fmt.Sprintf("addr add 2001:db8:%d::1/64 dev tocloud nodad", 10*u.Index+1),
	}
	post = []string{fmt.Sprintf("route add ::/0 via 2001:db8:%d::2", 10*u.Index+1)}
	return pre, post
}

// cloudV6 are the cloud's own IPv6 addresses (on lo).
func (w *World) cloudV6() []string {
	cmds := []string{
		// nodad: lo predates the namespace's accept_dad=0, and an address
		// still tentative cannot be bound (flaky "cannot assign requested
		// address" for the DNS server started right after).
		"addr add " + Echo6Addr.String() + "/128 dev lo nodad",
		"addr add " + DNS6Addr.String() + "/128 dev lo nodad",
	}
	if w.opt.DNS64 {
		// Every synthesized address is the cloud's: it answers for the NAT64.
		cmds = append(cmds, "route add local "+NAT64Prefix.String()+" dev lo")
	}
	return cmds
}

// cloudV6Uplink are the cloud's IPv6 commands toward uplink u's router.
func cloudV6Uplink(u *Uplink) []string {
	return []string{
		fmt.Sprintf("addr add 2001:db8:%d::2/64 dev %s nodad", 10*u.Index+1, u.CloudDev),
		fmt.Sprintf("route add %s via 2001:db8:%d::1", u.Prefix6, 10*u.Index+1),
	}
}

// deviceV6Sysctls sets how the device's kernel treats RAs on u, before the link comes up (the
// first router solicitation goes then).
func (w *World) deviceV6Sysctls(u *Uplink) error {
	conf := "net.ipv6.conf." + u.Dev + "."
	set := map[string]string{"accept_ra": "0", "autoconf": "0"}
	if w.opt.IPv6 == V6RA {
		// 2: RAs are taken even when a test makes the device forward (a LAN).
		set["accept_ra"] = "2"
		set["ra_defrtr_metric"] = fmt.Sprint(u.Metric)
	}
	for k, v := range set {
		if err := w.Device.Sysctl(conf+k, v); err != nil {
			return err
		}
	}
	return nil
}

// deviceV6 are the device's IPv6 commands for u once its link is up.
func (w *World) deviceV6(u *Uplink) []string {
	cmds := []string{fmt.Sprintf("addr add %s/64 dev %s nodad", u.Addr6, u.Dev)}
	switch w.opt.IPv6 {
	case V6Static:
		cmds = append(cmds, fmt.Sprintf("route add ::/0 via %s dev %s metric %d proto static", u.Gateway6, u.Dev, u.Metric))
	case V6SourceFilter:
		cmds = append(cmds, fmt.Sprintf("route add ::/0 from %s via %s dev %s metric %d proto static", u.Prefix6, u.Gateway6, u.Dev, u.Metric))
	}
	return cmds
}

// startRouterV6 starts the router's radvd (V6RA) and waits until the device has taken the RA's
// default route.
func (w *World) startRouterV6(u *Uplink) error {
	if w.opt.IPv6 != V6RA {
		return nil
	}
	// Unsolicited RAs every 3-4 s, so a test sees one soon after it deleted the route; a
	// router lifetime of 30 minutes, so a silent upstream failure never ends the route.
	conf := fmt.Sprintf(`interface todev {
	AdvSendAdvert on;
	MinRtrAdvInterval 3;
	MaxRtrAdvInterval 4;
	AdvDefaultLifetime 1800;
	prefix %s {
		AdvOnLink on;
		AdvAutonomous off;
	};
	RDNSS %s {
	};
};
`, u.Prefix6, DNS6Addr)
	if err := w.startRadvd(u.Router, conf); err != nil {
		return err
	}
	return w.WaitRoute6(u.Dev, 10*time.Second)
}

// WaitRoute6 waits until the device has an IPv6 default route of its own through dev (the RA's
// or netifd's, not connmgr's).
func (w *World) WaitRoute6(dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		out, err := w.Device.Run("ip", "-6", "route", "show", "default", "dev", dev)
		if err == nil && strings.Contains(out, "via "+routerLinkLocal.String()) && !strings.Contains(out, "proto 175") {
			return nil
		}
		if time.Now().After(deadline) {
			all, _ := w.Device.Run("ip", "-6", "route", "show", "table", "all")
			return fmt.Errorf("testbed: no IPv6 default route through %s within %v (%v); the device's IPv6 routes:\n%s", dev, timeout, err, all)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// skipNoRadvd turns ErrNoRadvd into a skip, except under CI.
func skipNoRadvd(t testing.TB, err error) {
	t.Helper()
	if errors.Is(err, ErrNoRadvd) && os.Getenv("CI") != "true" {
		t.Skip(err.Error())
	}
}
