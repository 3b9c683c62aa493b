package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/capture"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/netmon"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/uplink"
	"github.com/afero/af-conn/internal/usage"
)

// familyRig runs a daemon (firewall off, no bus) on fakeNet with a fake clock that the
// waits advance.
type familyRig struct {
	t      *testing.T
	dir    string // UCI directory
	d      *Daemon
	net    *fakeNet
	notes  *noticeLog
	clock  *fakeClock
	ctx    context.Context
	cancel context.CancelFunc
	done   chan error
}

func dualDev(v4, gw4, v6, gw6 string) uplink.Device {
	d := uplink.Device{Present: true, AdminUp: true, Carrier: true}
	if v4 != "" {
		d.Addrs, d.HasDefault = append(d.Addrs, netip.MustParsePrefix(v4)), true
		if gw4 != "" {
			d.Gateway = netip.MustParseAddr(gw4)
		}
	}
	if v6 != "" {
		d.Addrs, d.HasDefault6, d.Gateway6 = append(d.Addrs, netip.MustParsePrefix(v6)), true, netip.MustParseAddr(gw6)
	}
	return d
}

func startFamilyRig(t *testing.T, devs map[string]uplink.Device, before func(r *familyRig)) *familyRig {
	return startFamilyRigConf(t, "config connmgr 'main'\n\toption firewall '0'\n", devs, before)
}

func startFamilyRigConf(t *testing.T, conf string, devs map[string]uplink.Device, before func(r *familyRig)) *familyRig {
	dir := t.TempDir()
	writeConnmgr(t, dir, conf)
	clock := newFakeClock()
	d, err := New(Options{UCIDir: dir, WhitelistPath: filepath.Join(dir, "whitelist"), Logger: logline.Discard(), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	cleaned := false
	r := &familyRig{t: t, dir: dir, d: d, clock: clock, notes: &noticeLog{}, done: make(chan error, 1),
		net: &fakeNet{cleaned: &cleaned, devs: devs, dead: map[string]bool{}, hang: map[string]bool{}}}
	d.uplinks.net = r.net
	d.components = append(d.components, r.notes)
	if before != nil {
		before(r)
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	go func() { r.done <- d.Run(r.ctx) }()
	t.Cleanup(func() {
		r.cancel()
		if err := <-r.done; err != nil {
			t.Error(err)
		}
		if !cleaned {
			t.Error("routes not cleaned up on stop")
		}
	})
	return r
}

func (r *familyRig) status() Status {
	var s Status
	if err := r.d.Do(r.ctx, func() { s = r.d.Status() }); err != nil {
		r.t.Fatal(err)
	}
	return s
}

// wait advances the fake clock 100 ms at a time (probes and wake-ups follow it) until the
// status shows what ok wants.
func (r *familyRig) wait(what string, ok func(Status) bool) Status {
	r.t.Helper()
	for range 600 {
		if s := r.status(); ok(s) {
			return s
		}
		r.clock.Advance(100 * time.Millisecond)
		time.Sleep(2 * time.Millisecond) // probe goroutines post their results
	}
	r.t.Fatalf("status never showed %s: %+v", what, r.status())
	return Status{}
}

func (r *familyRig) setDead(key string, dead bool) {
	r.net.mu.Lock()
	r.net.dead[key] = dead
	r.net.mu.Unlock()
}

func (r *familyRig) update(devs map[string]uplink.Device) {
	r.net.mu.Lock()
	notify := r.net.notify
	for k, v := range devs {
		r.net.devs[k] = v
	}
	r.net.mu.Unlock()
	notify(netmon.Update{Devices: devs})
}

func (r *familyRig) noticesNamed(name string) []Notice {
	r.notes.mu.Lock()
	defer r.notes.mu.Unlock()
	var out []Notice
	for _, n := range r.notes.got {
		if n.Name == name {
			out = append(out, n)
		}
	}
	return out
}

func byNetwork(s Status, name string) UplinkStatus {
	for _, u := range s.Uplinks {
		if u.Network == name {
			return u
		}
	}
	return UplinkStatus{}
}

var (
	eth0Dual = dualDev("198.18.10.2/24", "198.18.10.1", "2001:db8:10::2/64", "fe80::10")
	wlanDual = dualDev("198.18.20.2/24", "198.18.20.1", "2001:db8:20::2/64", "fe80::20")
	wwanOnly = dualDev("", "", "2001:db8:30::2/64", "fe80::30")
)

// A dual-stack hub: both families proven and routed on Ethernet; the IPv6-only cellular uplink
// is up (ITFUP_SS), not ITFDOWN_SX. Ethernet's IPv6 dies while its IPv4 works: IPv6 moves to
// Wi-Fi, IPv4 and attribute 65008 stay on Ethernet. Then Ethernet and Wi-Fi lose their carrier:
// IPv6-only cellular carries the hub, and 65008 says WAN.
func TestUplinksDualStack(t *testing.T) {
	r := startFamilyRig(t, map[string]uplink.Device{"eth0": eth0Dual, "wlan0": wlanDual, "wwan0": wwanOnly}, nil)
	s := r.wait("both families on Ethernet, all proven", func(s Status) bool {
		return s.InUseIPv4 == "ethnet" && s.InUseIPv6 == "ethnet" && byNetwork(s, "modemnet").StateNum == 4 &&
			byNetwork(s, "stanet").IPv6 != nil && byNetwork(s, "stanet").IPv6.StateNum == 4
	})
	eth, wwan := byNetwork(s, "ethnet"), byNetwork(s, "modemnet")
	if s.InUse != "ethnet" || s.InUseDevice != "eth0" || s.NetworkType != 0 || eth.Address != "198.18.10.2/24" || eth.Gateway != "198.18.10.1" ||
		eth.IPv6 == nil || eth.IPv6.Address != "2001:db8:10::2/64" || eth.IPv6.Gateway != "fe80::10" || !eth.IPv6.InUse || eth.IPv6.LastProbe != "success" ||
		eth.IPv4 == nil || eth.IPv4.StateNum != 4 || !eth.IPv4.InUse {
		t.Fatalf("Ethernet: %+v (ipv4 %+v, ipv6 %+v)", eth, eth.IPv4, eth.IPv6)
	}
	if wwan.State != "ITFUP_SS" || wwan.Address != "2001:db8:30::2/64" || wwan.Gateway != "fe80::30" || wwan.IPv4.StateNum != 1 || wwan.LastProbe != "success" {
		t.Fatalf("IPv6-only cellular: %+v (ipv4 %+v)", wwan, wwan.IPv4)
	}
	if r6 := r.net.routesOf(uplink.IPv6); r6.Selected != "ethnet" || len(r6.Uplinks) != 3 || r6.Uplinks[2].Addr.String() != "2001:db8:30::2/64" {
		t.Fatalf("IPv6 routes %+v", r6)
	}
	if r4 := r.net.routesOf(uplink.IPv4); r4.Selected != "ethnet" || len(r4.Uplinks) != 2 {
		t.Fatalf("IPv4 routes %+v", r4)
	}
	r.net.mu.Lock()
	for _, p := range r.net.probes {
		if p.Device == "wwan0" && !p.Source.Is6() {
			t.Errorf("IPv6-only uplink probed from %v", p.Source)
		}
	}
	r.net.mu.Unlock()

	// Ethernet's IPv6 dies; its IPv4 works.
	networks := len(r.noticesNamed(NoticeNetwork))
	r.setDead("eth0/ipv6", true)
	s = r.wait("IPv6 on Wi-Fi, IPv4 on Ethernet", func(s Status) bool { return s.InUseIPv6 == "stanet" })
	eth = byNetwork(s, "ethnet")
	if s.InUse != "ethnet" || s.InUseIPv4 != "ethnet" || s.NetworkType != 0 || eth.StateNum != 4 || eth.IPv6.StateNum != 5 || eth.IPv6.InUse || !eth.InUse {
		t.Fatalf("after Ethernet's IPv6 died: in use %q (v4 %q) type %d; ethnet %+v ipv6 %+v", s.InUse, s.InUseIPv4, s.NetworkType, eth, eth.IPv6)
	}
	if r4, r6 := r.net.routesOf(uplink.IPv4), r.net.routesOf(uplink.IPv6); r4.Selected != "ethnet" || r6.Selected != "stanet" {
		t.Fatalf("routes: IPv4 on %q, IPv6 on %q", r4.Selected, r6.Selected)
	}
	r.net.mu.Lock()
	flushed4, flushed6 := r.net.flushed[uplink.IPv4], slices.Clone(r.net.flushed[uplink.IPv6])
	r.net.mu.Unlock()
	if len(flushed4) != 0 || !slices.Equal(flushed6, []netip.Addr{netip.MustParseAddr("2001:db8:10::2")}) {
		t.Fatalf("flushed IPv4 %v, IPv6 %v: want only Ethernet's IPv6 address", flushed4, flushed6)
	}
	ns := r.noticesNamed(NoticeNetwork)[networks:]
	if len(ns) != 1 || ns[0].Data["family"] != "ipv6" || ns[0].Data["old"] != "ethnet" || ns[0].Data["new"] != "ethnet" ||
		ns[0].Data["ipv4"] != "ethnet" || ns[0].Data["ipv6"] != "stanet" || ns[0].Data["network_type"] != 0 || ns[0].Data["reason"] != "failover" {
		t.Fatalf("connmgr.network after the IPv6 switch: %+v", ns)
	}
	var ifaceIPv6 bool
	for _, n := range r.noticesNamed(NoticeInterface) {
		if n.Data["network"] == "ethnet" && n.Data["family"] == "ipv6" && n.Data["state_num"] == 4 && n.Data["old_state_num"] == 4 {
			v6, _ := n.Data["ipv6"].(ubus.Table)
			v4, _ := n.Data["ipv4"].(ubus.Table)
			st, _ := v6.Int("state_num")
			addr, _ := v6.String("address")
			gw, _ := v6.String("gateway")
			probe, _ := v6.String("last_probe")
			addr4, _ := v4.String("address")
			ifaceIPv6 = st == 5 && addr == "2001:db8:10::2/64" && gw == "fe80::10" && probe == "failure" && addr4 == "198.18.10.2/24" &&
				n.Data["address"] == "198.18.10.2/24"
		}
	}
	if !ifaceIPv6 {
		t.Errorf("no connmgr.interface for Ethernet's IPv6 going down (the uplink staying ITFUP_SS) with both families' status: %+v", r.noticesNamed(NoticeInterface))
	}

	// Ethernet and Wi-Fi lose their carrier: only IPv6-only cellular is left.
	noCarrier := func(d uplink.Device) uplink.Device { d.Carrier = false; return d }
	r.update(map[string]uplink.Device{"eth0": noCarrier(eth0Dual), "wlan0": noCarrier(wlanDual)})
	s = r.wait("IPv6-only cellular in use", func(s Status) bool { return s.InUse == "modemnet" })
	if s.NetworkType != 2 || s.InUseIPv4 != "" || s.InUseIPv6 != "modemnet" || s.InUseDevice != "wwan0" {
		t.Fatalf("IPv6-only: type %d, v4 %q v6 %q device %q", s.NetworkType, s.InUseIPv4, s.InUseIPv6, s.InUseDevice)
	}
	var attr int64
	if err := r.d.Do(r.ctx, func() {
		st := r.d.Status()
		a, _ := findAttribute(AttrWANState)
		attr = a.get(&st)
	}); err != nil || attr != 2 {
		t.Fatalf("attribute 65037 (WAN state) %d, %v: want 2 (up and confirmed)", attr, err)
	}
	last := r.noticesNamed(NoticeNetwork)
	if n := last[len(last)-1]; n.Data["new"] != "modemnet" || n.Data["network_type"] != 2 || n.Data["ipv4"] != "" || n.Data["ipv6"] != "modemnet" {
		t.Fatalf("last connmgr.network %+v", n.Data)
	}
}

// 464XLAT: netifd reports the uplink's dynamic interface of proto 464xlat on its clat device;
// the uplink's IPv4 is watched, probed and routed there, its IPv6 on the uplink's own device.
func TestUplinks464XLAT(t *testing.T) {
	clat := dualDev("198.18.46.2/32", "", "", "")
	r := startFamilyRig(t, map[string]uplink.Device{"eth0": {}, "wlan0": {}, "wwan0": wwanOnly, "464-modemnet": clat}, nil)
	r.wait("IPv6 on cellular", func(s Status) bool { return s.InUseIPv6 == "modemnet" })
	if s := r.status(); s.InUseIPv4 != "" {
		t.Fatalf("IPv4 in use before netifd told of the clat device: %q", s.InUseIPv4)
	}
	info := &NetifdInterface{Network: "modemnet_6_4", Up: true, Proto: "464xlat", L3Device: "464-modemnet", Device: "464-modemnet"}
	if err := r.d.Do(r.ctx, func() { r.d.noteL3(info.Network, info); r.d.uplinks.netifdChanged(info.Network, info) }); err != nil {
		t.Fatal(err)
	}
	s := r.wait("IPv4 through the clat device, proven", func(s Status) bool {
		m := byNetwork(s, "modemnet")
		return s.InUseIPv4 == "modemnet" && m.IPv4 != nil && m.IPv4.StateNum == 4
	})
	m := byNetwork(s, "modemnet")
	if s.InUse != "modemnet" || s.InUseDevice != "464-modemnet" || m.Device != "wwan0" || m.IPv4.Device != "464-modemnet" ||
		m.IPv4.Address != "198.18.46.2/32" || m.IPv4.Gateway != "" || m.IPv4.StateNum != 4 || m.IPv6.Device != "wwan0" || m.Address != "198.18.46.2/32" {
		t.Fatalf("464XLAT status: in use %q on %q; modemnet %+v ipv4 %+v ipv6 %+v", s.InUse, s.InUseDevice, m, m.IPv4, m.IPv6)
	}
	r4 := r.net.routesOf(uplink.IPv4)
	if r4.Selected != "modemnet" || len(r4.Uplinks) != 1 || r4.Uplinks[0].Device != "464-modemnet" || r4.Uplinks[0].Gateway.IsValid() {
		t.Fatalf("IPv4 routes %+v: want the default route through the clat device", r4)
	}
	if r6 := r.net.routesOf(uplink.IPv6); r6.Selected != "modemnet" || r6.Uplinks[0].Device != "wwan0" {
		t.Fatalf("IPv6 routes %+v", r6)
	}
	r.net.mu.Lock()
	var clatProbe bool
	for _, p := range r.net.probes {
		clatProbe = clatProbe || p.Device == "464-modemnet" && p.Source == netip.MustParseAddr("198.18.46.2") && p.Device6 == "wwan0"
		if p.Device == "wwan0" && p.Device6 != "" {
			t.Errorf("IPv6 round on wwan0 with Device6 %q", p.Device6)
		}
	}
	r.net.mu.Unlock()
	if !clatProbe {
		t.Error("the uplink's IPv4 was not probed through the clat device (with its IPv6 resolvers through wwan0)")
	}
	// Its IPv4 rounds reach wwan0 translated to IPv6: they are budgeted at IPv6's cost.
	var cost4, cost6 int
	if err := r.d.Do(r.ctx, func() {
		cost4 = r.d.uplinks.settings(r.d.cur.Config, uplink.IPv4).Uplinks[2].ProbeCost
		cost6 = r.d.uplinks.settings(r.d.cur.Config, uplink.IPv6).Uplinks[2].ProbeCost
	}); err != nil {
		t.Fatal(err)
	}
	if want := usage.ProbeCost("echo", true, true); cost4 != want || cost6 != want {
		t.Errorf("a 464XLAT uplink's rounds budgeted at %d bytes (IPv4, through the clat) and %d (IPv6), want IPv6's %d", cost4, cost6, want)
	}
	// netifd removes the 464XLAT interface: IPv4 is the uplink's own device's again (none).
	if err := r.d.Do(r.ctx, func() { r.d.noteL3(info.Network, nil); r.d.uplinks.netifdChanged(info.Network, nil) }); err != nil {
		t.Fatal(err)
	}
	s = r.wait("IPv4 gone with the clat interface", func(s Status) bool { return s.InUseIPv4 == "" })
	if m := byNetwork(s, "modemnet"); m.IPv4.Device != "wwan0" || m.IPv4.StateNum != 1 || s.InUse != "modemnet" || s.InUseDevice != "wwan0" {
		t.Fatalf("after the clat interface went: %+v ipv4 %+v, in use %q on %q", m, m.IPv4, s.InUse, s.InUseDevice)
	}
}

// Passive liveness goes to the controller of its family: an IPv6 capture's replies prove the
// uplink's IPv6 (its probes never end here), and never its IPv4.
func TestUplinksAliveByFamily(t *testing.T) {
	r := startFamilyRig(t, map[string]uplink.Device{"eth0": eth0Dual, "wlan0": {}, "wwan0": {}}, func(r *familyRig) {
		r.net.hang["eth0/ipv4"], r.net.hang["eth0/ipv6"] = true, true
	})
	r.wait("both families up, unproven", func(s Status) bool {
		e := byNetwork(s, "ethnet")
		return e.IPv4 != nil && e.IPv4.StateNum == 3 && e.IPv6 != nil && e.IPv6.StateNum == 3
	})
	var v6 capture.Config
	r.net.mu.Lock()
	for _, c := range r.net.captures {
		if c.Device == "eth0" && len(c.Prefixes) == 1 && c.Prefixes[0].Addr().Is6() {
			v6 = c
		}
	}
	r.net.mu.Unlock()
	if v6.OnAlive == nil || v6.Prefixes[0] != netip.MustParsePrefix("2001:db8:10::2/64") {
		t.Fatalf("no IPv6 capture on eth0 (prefixes %v)", v6.Prefixes)
	}
	now := r.clock.Now()
	v6.OnAlive(capture.Alive{Family: uplink.IPv6, Local: v6.Prefixes[0].Addr(), Since: now, At: now})
	s := r.wait("IPv6 proven by replies", func(s Status) bool { return byNetwork(s, "ethnet").IPv6.StateNum == 4 })
	if e := byNetwork(s, "ethnet"); e.IPv4.StateNum != 3 || e.StateNum != 4 || s.InUseIPv6 != "ethnet" {
		t.Fatalf("after IPv6 replies: ipv4 %+v, uplink %d, IPv6 in use %q", e.IPv4, e.StateNum, s.InUseIPv6)
	}
}

// An echo_host the probe cannot reach over IPv6 (an IPv4 literal): IPv6 is neither judged nor
// routed (no route of ours; ITFNOTSUPP_SX in that family), IPv4 runs as before. A reload with a
// name brings IPv6 back.
func TestUplinksFamilyTheProbeCannotServe(t *testing.T) {
	const conf = "config connmgr 'main'\n\toption firewall '0'\n\toption echo_host '%s'\n"
	r := startFamilyRigConf(t, fmt.Sprintf(conf, "198.18.0.10"), map[string]uplink.Device{"eth0": eth0Dual, "wlan0": wlanDual, "wwan0": wwanOnly}, nil)
	s := r.wait("IPv4 on Ethernet", func(s Status) bool { return s.InUseIPv4 == "ethnet" && byNetwork(s, "stanet").StateNum == 4 })
	for _, u := range s.Uplinks {
		if u.IPv6 == nil || u.IPv6.StateNum != 2 || u.IPv6.Probes != 0 {
			t.Errorf("%s: IPv6 %+v, want ITFNOTSUPP_SX and no probes", u.Network, u.IPv6)
		}
	}
	if m := byNetwork(s, "modemnet"); m.StateNum != 1 || s.InUseIPv6 != "" {
		t.Errorf("IPv6-only cellular %s (%d), IPv6 in use %q", m.State, m.StateNum, s.InUseIPv6)
	}
	if r6 := r.net.routesOf(uplink.IPv6); r6.Selected != "" || len(r6.Uplinks) != 0 {
		t.Errorf("IPv6 routes %+v", r6)
	}
	writeConnmgr(t, r.dir, fmt.Sprintf(conf, "echo.afero.io"))
	r.d.Reload()
	r.wait("IPv6 judged again after the reload", func(s Status) bool {
		return s.InUseIPv6 == "ethnet" && byNetwork(s, "modemnet").StateNum == 4
	})
}

// A kernel without IPv6: the IPv6 routes cannot be opened, and the daemon runs IPv4 alone
// (status without ipv6 objects) instead of failing.
func TestUplinksWithoutIPv6(t *testing.T) {
	r := startFamilyRig(t, map[string]uplink.Device{"eth0": eth0Dual, "wlan0": wlanDual, "wwan0": wwanOnly}, func(r *familyRig) { r.net.noIPv6 = true })
	s := r.wait("IPv4 on Ethernet", func(s Status) bool { return s.InUse == "ethnet" && byNetwork(s, "ethnet").StateNum == 4 })
	for _, u := range s.Uplinks {
		if u.IPv4 == nil || u.IPv6 != nil {
			t.Errorf("%s: ipv4 %+v ipv6 %+v", u.Network, u.IPv4, u.IPv6)
		}
	}
	if m := byNetwork(s, "modemnet"); m.StateNum != 1 || s.InUseIPv6 != "" || m.Device != "wwan0" {
		t.Errorf("IPv6-only cellular without IPv6: %+v, IPv6 in use %q", m, s.InUseIPv6)
	}
}

// The daemon's two controllers share an uplink's probe budget: a dual-stack cellular uplink
// in use (50K/h by default) gets half of it in each family, each family's rounds at their own
// cost on the wire (IPv4 1038 bytes a round: every 150 s; IPv6 1456: every 210 s, the
// uplink's budget_interval); when its IPv6 goes, IPv4 alone gets the whole budget again (75 s).
func TestUplinksShareProbeBudget(t *testing.T) {
	wwanDual := dualDev("198.18.30.2/24", "198.18.30.1", "2001:db8:30::2/64", "fe80::30")
	r := startFamilyRig(t, map[string]uplink.Device{"eth0": {}, "wlan0": {}, "wwan0": wwanDual}, nil)
	interval := func(s Status) int64 { return byNetwork(s, "modemnet").BudgetIntervalS }
	s := r.wait("both families of the cellular uplink up", func(s Status) bool {
		m := byNetwork(s, "modemnet")
		return m.IPv4 != nil && m.IPv4.StateNum >= 3 && m.IPv6 != nil && m.IPv6.StateNum >= 3
	})
	// The uplink's budget_interval is its families' longest: IPv6's, at IPv6's cost.
	if got, want := interval(s), int64(uplink.BudgetFloor(usage.ProbeCost("echo", true, true), 25_000)/time.Second); got != want || want != 210 {
		t.Fatalf("dual-stack: budget interval %d s, want %d (half the budget each, IPv6's rounds at their cost)", got, want)
	}
	r.net.mu.Lock()
	v4only := wwanDual
	v4only.Addrs, v4only.HasDefault6 = v4only.Addrs[:1], false
	r.net.devs["wwan0"] = v4only
	notify := r.net.notify
	r.net.mu.Unlock()
	notify(netmon.Update{Devices: map[string]uplink.Device{"wwan0": v4only}})
	r.wait("IPv6 gone: IPv4 gets the whole budget", func(s Status) bool { return interval(s) == 75 })
}
