package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/afero/af-conn/internal/capture"
	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/failover"
	"github.com/afero/af-conn/internal/netmon"
	"github.com/afero/af-conn/internal/probe"
	"github.com/afero/af-conn/internal/route"
	"github.com/afero/af-conn/internal/uplink"
	"github.com/afero/af-conn/internal/usage"
)

// uplinks is the component that keeps the hub on its best uplink. Its
// pumps (the netlink monitor, one capture per up uplink and family, one
// goroutine per probe round) post events; on the loop, one
// failover.Controller per address family decides and that family's
// route.Manager carries the decisions out. Both controllers take the same
// netlink snapshots; status and events combine them (failover/family.go).
type uplinks struct {
	d   *Daemon
	net netBackend
	ctx context.Context
	// fams are the families' controllers, IPv4 first; IPv6's is absent when its routing
	// could not be opened.
	fams     []*famCtl
	prober   *probe.Prober
	probeCfg probe.Config
	dns      probe.DNSSource
	static   map[string][]netip.Addr // uplinks' static DNS servers (network's list dns)
	// netifdDNS are the DNS servers netifd reports per uplink network.
	netifdDNS map[string][]netip.Addr
	captures  map[captureKey]func() // stop functions of running captures
	// unprobed says, per family the probe cannot serve, why (logged once per change).
	unprobed map[uplink.Family]string
	// devices are the devices the netlink monitor reports (see devices.go); devChanges
	// tells it new ones.
	devices    []string
	devChanges chan []string
	keep       bool
}

// famCtl is one family's controller with its router and wake-up timer; it is that
// controller's failover.Env.
type famCtl struct {
	u      *uplinks
	fam    uplink.Family
	ctrl   *failover.Controller
	router routeManager
	timer  Timer
	wake   time.Time
}

// captureKey names one capture: an uplink's passive liveness in one family.
type captureKey struct {
	name string
	fam  uplink.Family
}

// families are the address families the daemon runs a controller for, in order.
var families = []uplink.Family{uplink.IPv4, uplink.IPv6}

// carrierPoll bounds how late a lost carrier is seen when the kernel
// batches its report (see netmon.Options.CarrierPoll): part of the
// 100 ms carrier-loss failover budget. It runs only for a moment after
// each link message, so an idle hub never wakes for it.
const carrierPoll = 50 * time.Millisecond

// capturePeriod is the least time between two samples of an uplink's
// passive liveness (each asks conntrack about one connection): replies
// that come after a failed probe clear it within one or two periods,
// well before the next probe of a suspect uplink can fail.
const capturePeriod = 100 * time.Millisecond

func newUplinks(d *Daemon) *uplinks {
	return &uplinks{d: d, net: kernelNet{}, captures: map[captureKey]func(){}, netifdDNS: map[string][]netip.Addr{},
		devChanges: make(chan []string, 1)}
}

// netBackend is the kernel side of the component: the real one, or a
// test fake that never touches a network.
type netBackend interface {
	// routes opens the routing state of family f.
	routes(f uplink.Family) (routeManager, error)
	watch(ctx context.Context, opts netmon.Options) error
	capture(cfg capture.Config) (stop func(), err error)
	probe(ctx context.Context, p *probe.Prober, t probe.Target, timeout, hedge time.Duration) uplink.ProbeResult
}

// routeManager is route.Manager as the component uses it.
type routeManager interface {
	failover.Router
	Cleanup(keepDefault bool) error
	Close()
	Proto() int
}

type kernelNet struct{}

func (kernelNet) routes(f uplink.Family) (routeManager, error) {
	if f == uplink.IPv6 {
		// A kernel without IPv6 (CONFIG_IPV6 off, ipv6.disable=1) has no
		// IPv6 routing to manage: IPv4 runs alone.
		if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
			return nil, fmt.Errorf("this kernel has no IPv6: %w", err)
		}
	}
	return route.New(route.Config{Family: f})
}
func (kernelNet) watch(ctx context.Context, opts netmon.Options) error {
	return netmon.New(opts).Run(ctx)
}
func (kernelNet) capture(cfg capture.Config) (func(), error) {
	c, err := capture.Start(cfg)
	if err != nil {
		return nil, err
	}
	return c.Close, nil
}
func (kernelNet) probe(ctx context.Context, p *probe.Prober, t probe.Target, timeout, hedge time.Duration) uplink.ProbeResult {
	return p.Probe(ctx, t, timeout, hedge)
}

// failoverSettings turns the configuration into the settings of family f's controller (c's
// devices are that family's: familyDevices).
func failoverSettings(c *config.Config, f uplink.Family) failover.Settings {
	m := c.Main
	s := failover.Settings{
		Family: f,
		Params: uplink.Params{FailCount: m.FailCount, RecoverCount: m.RecoverCount},
		Intervals: uplink.Intervals{InUse: m.ProbeInterval, Standby: m.ProbeIntervalStandby,
			Failing: m.ProbeIntervalFailing, Cellular: m.CellularProbeInterval},
		ProbeTimeout:    m.ProbeTimeout,
		ProbeTimeoutMax: max(m.ProbeTimeout, 5*time.Second),
		RouteGrace:      failover.DefaultRouteGrace,
	}
	for _, u := range c.Uplinks {
		s.Uplinks = append(s.Uplinks, failover.UplinkSettings{Name: u.Name, Device: u.Device,
			Kind: uplink.Kind(u.Kind), Priority: u.Priority, ProbeInterval: u.ProbeInterval, Enabled: u.Enabled,
			ProbeBudget: u.ProbeBudget, ProbeBudgetStandby: u.ProbeBudgetStandby, LimitOff: u.LimitAction == "off",
			ProbeCost: roundCost(m.Probe, u, f == uplink.IPv6)})
	}
	return s
}

// roundCost is what one of uplink u's probe rounds costs on its wire, in bytes; ipv6: the
// round's packets are IPv6 there (longer headers, AAAA, neighbour solicitation).
func roundCost(method string, u config.Uplink, ipv6 bool) int {
	// A budgeted uplink's rounds come rarer than the name's cache lasts.
	return usage.ProbeCost(method, u.ProbeBudget > 0 || u.ProbeBudgetStandby > 0, ipv6)
}

// settings are family f's controller's settings for cfg: on that family's devices, and with
// every uplink disabled when the probe cannot serve the family (echo_host or probe_url's host
// an address literal of the other family): a family nothing can prove is neither judged nor
// routed (its uplinks read ITFNOTSUPP_SX in that family), and its traffic follows the kernel's
// own default routes, as before connmgr knew the family.
func (u *uplinks) settings(cfg *config.Config, f uplink.Family) failover.Settings {
	s := failoverSettings(u.d.familyDevices(cfg, f), f)
	s.Sharers = u.budgetSharers
	if f == uplink.IPv4 {
		// A 464XLAT uplink's IPv4 rounds leave by its clat device and reach the uplink's wire
		// translated to IPv6: they cost what IPv6 rounds do.
		for i, own := range u.d.withL3Devices(cfg).Uplinks {
			if s.Uplinks[i].Device != own.Device {
				s.Uplinks[i].ProbeCost = roundCost(cfg.Main.Probe, own, true)
			}
		}
	}
	why := ""
	if err := u.prober.Supports(f); err != nil {
		why = err.Error()
		for i := range s.Uplinks {
			s.Uplinks[i].Enabled = false
		}
	}
	if why != u.unprobed[f] {
		if why != "" {
			u.d.log.Warn("this family is not judged nor routed: the probe cannot reach its cloud", "family", f.String(), "err", why)
		} else if u.unprobed[f] != "" {
			u.d.log.Info("this family is judged and routed again", "family", f.String())
		}
		if u.unprobed == nil {
			u.unprobed = map[uplink.Family]string{}
		}
		u.unprobed[f] = why
	}
	return s
}

func staticDNS(c *config.Config) map[string][]netip.Addr {
	m := map[string][]netip.Addr{}
	for _, up := range c.Uplinks {
		m[up.Name] = up.DNS
	}
	return m
}

func probeConfig(c *config.Config) probe.Config {
	return probe.Config{Method: c.Main.Probe, Host: c.Main.EchoHost, Port: int(c.Main.EchoPort), URL: c.Main.ProbeURL}
}

func (u *uplinks) start(ctx context.Context) error {
	u.ctx = ctx
	cfg := u.d.cur.Config
	u.keep = cfg.Main.KeepRoute
	u.static = staticDNS(cfg)
	p, err := probe.New(probeConfig(cfg))
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	u.prober, u.probeCfg = p, probeConfig(cfg)
	for _, f := range families {
		router, err := u.net.routes(f)
		if err != nil && f == uplink.IPv4 {
			return fmt.Errorf("routes: %w", err)
		}
		if err != nil {
			u.d.log.Warn("no failover for this family: its routes cannot be managed", "family", f.String(), "err", err)
			continue
		}
		fc := &famCtl{u: u, fam: f, router: router}
		u.fams = append(u.fams, fc)
		fc.ctrl = failover.New(fc, router, u.settings(cfg, f))
		if err := fc.ctrl.SetPreference(u.d.preferred); err != nil {
			return err
		}
	}
	u.devices = u.monitoredDevices(cfg)
	opts := netmon.Options{
		Devices:       u.devices,
		DeviceChanges: u.devChanges,
		OwnProto:      u.fams[0].router.Proto(),
		CarrierPoll:   carrierPoll,
		Notify:        func(up netmon.Update) { u.d.post(netmonEvent{up}) },
		Logf:          func(f string, a ...any) { u.d.log.Warn(fmt.Sprintf(f, a...)) },
		Debugf:        func(f string, a ...any) { u.d.log.Debug(fmt.Sprintf(f, a...)) },
	}
	errc := make(chan error, 1)
	go func() { errc <- u.net.watch(ctx, opts) }()
	// Run returns at once only if it cannot subscribe at all.
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("netlink monitor: %w", err)
		}
	case <-time.After(50 * time.Millisecond):
	}
	return nil
}

func (u *uplinks) reload(_, cur *Loaded) {
	if pc := probeConfig(cur.Config); pc != u.probeCfg {
		p, err := probe.New(pc)
		if err != nil {
			u.d.log.Error("probe configuration rejected; keeping the old one", "err", err)
		} else {
			u.prober, u.probeCfg = p, pc
		}
	}
	u.keep = cur.Config.Main.KeepRoute
	u.static = staticDNS(cur.Config)
	u.followDevices(cur.Config, true)
}

// monitoredDevices are the uplinks' devices the netlink monitor reports: those of every
// family's controller (a 464XLAT uplink has its clat device besides its own).
func (u *uplinks) monitoredDevices(c *config.Config) []string {
	var devs []string
	for _, f := range families {
		for _, up := range u.d.familyDevices(c, f).Uplinks {
			if up.Device != "" && !slices.Contains(devs, up.Device) {
				devs = append(devs, up.Device)
			}
		}
	}
	return devs
}

// followDevices brings the controllers and the netlink monitor to the uplinks' devices as
// netifd reports them now; with configure, the controllers are reconfigured even when no device
// changed (a reload).
func (u *uplinks) followDevices(cfg *config.Config, configure bool) {
	devs := u.monitoredDevices(cfg)
	if !slices.Equal(devs, u.devices) {
		u.devices = devs
		// Only the loop sends: replace a list the monitor has not taken yet.
		select {
		case <-u.devChanges:
		default:
		}
		u.devChanges <- devs
		configure = true
	}
	if configure {
		for _, fc := range u.fams {
			fc.ctrl.Configure(u.settings(cfg, fc.fam))
		}
	}
}

func (u *uplinks) stop() {
	for _, fc := range u.fams {
		if fc.timer != nil {
			fc.timer.Stop()
		}
	}
	for k, stop := range u.captures {
		stop()
		delete(u.captures, k)
	}
	for _, fc := range u.fams {
		if err := fc.router.Cleanup(u.keep); err != nil {
			u.d.log.Error("route cleanup", "family", fc.fam.String(), "err", err)
		}
		fc.router.Close()
	}
}

// started says the controllers run (IPv4's at least).
func (u *uplinks) started() bool { return u.family(uplink.IPv4) != nil }

// setLimited tells every family's controller that the uplink's monthly limit is reached (or
// lifted): the limit is the uplink's, whatever family spends it.
func (u *uplinks) setLimited(name string, over bool) {
	for _, fc := range u.fams {
		if fc.ctrl != nil {
			fc.ctrl.SetLimited(name, over)
		}
	}
}

// ownDevice is the uplink's own device: IPv6's view's (IPv4's may be the clat device of a
// 464XLAT uplink), else IPv4's.
func ownDevice(cu failover.Uplink) string {
	if v, ok := cu.Family(uplink.IPv6); ok {
		return v.Settings.Device
	}
	return cu.Settings.Device
}

// family returns the controller of family f, nil when there is none.
func (u *uplinks) family(f uplink.Family) *famCtl {
	for _, fc := range u.fams {
		if fc.fam == f && fc.ctrl != nil {
			return fc
		}
	}
	return nil
}

// budgetSharers counts the families in which uplink name is up: their routine rounds share
// its probe budget (failover.Settings.Sharers), which holds per uplink.
func (u *uplinks) budgetSharers(name string) int {
	n := 0
	for _, fc := range u.fams {
		if fc.ctrl != nil && fc.ctrl.Probed(name) {
			n++
		}
	}
	return n
}

// selections returns each family's selected uplink ("" for a family without a controller).
func (u *uplinks) selections() (v4, v6 string) {
	if fc := u.family(uplink.IPv4); fc != nil {
		v4 = fc.ctrl.Selected()
	}
	if fc := u.family(uplink.IPv6); fc != nil {
		v6 = fc.ctrl.Selected()
	}
	return v4, v6
}

// combined returns every uplink as both families see it (failover/family.go), in
// configuration order.
func (u *uplinks) combined() []failover.Uplink {
	var per [][]failover.View
	for _, fc := range u.fams {
		if fc.ctrl != nil {
			per = append(per, fc.ctrl.Views())
		}
	}
	return failover.Combine(failover.CombineSelected(u.selections()), per...)
}

func (u *uplinks) fillStatus(s *Status) {
	if !u.started() {
		return
	}
	now := u.d.clock.Now()
	for _, fc := range u.fams {
		if fc.ctrl == nil {
			continue // being made (start)
		}
		c := fc.ctrl.Counters()
		s.Counters.Switches += c.Switches
		s.Counters.Probes += c.Probes
	}
	v4, v6 := u.selections()
	s.InUseIPv4, s.InUseIPv6 = v4, v6
	for _, cu := range u.combined() {
		us := uplinkStatus(cu, now)
		if us.InUse {
			s.InUse, s.NetworkType = us.Network, int(cu.Settings.Kind)
			// The device the hub's in-use default route goes through: that of the family
			// whose selection it is (a 464XLAT uplink's IPv4 is its clat device).
			f := uplink.IPv4
			if v4 == "" {
				f = uplink.IPv6
			}
			if v, ok := cu.Family(f); ok {
				s.InUseDevice = v.Settings.Device
			}
		}
		s.Uplinks = append(s.Uplinks, us)
	}
}

// uplinkStatus is an uplink's status: its combined state, the fields of its primary family in
// the single-family fields (address, gateway, last probe: IPv4 where it has IPv4), and each
// family's own.
func uplinkStatus(cu failover.Uplink, now time.Time) UplinkStatus {
	us := UplinkStatus{
		Network: cu.Settings.Name, Device: ownDevice(cu), Type: cu.Settings.Kind.String(),
		State: cu.State.String(), StateNum: int(cu.State), InUse: cu.InUse,
		LastProbe: "none", SinceSeconds: int64(now.Sub(cu.Since).Seconds()),
	}
	for _, v := range cu.Families {
		fs := familyStatus(v, now)
		switch v.Family {
		case uplink.IPv4:
			us.IPv4 = &fs
		case uplink.IPv6:
			us.IPv6 = &fs
		}
		us.Probes += fs.Probes
		us.ProbeFails += fs.ProbeFails
		if v.Family == cu.Primary {
			us.Address, us.Gateway, us.LastProbe, us.RTTms = fs.Address, fs.Gateway, fs.LastProbe, fs.RTTms
		}
	}
	return us
}

// familyStatus is one family's part of an uplink's status.
func familyStatus(v failover.View, now time.Time) FamilyStatus {
	fs := FamilyStatus{
		Device: v.Settings.Device, State: v.State.String(), StateNum: int(v.State), InUse: v.InUse,
		LastProbe: "none", SinceSeconds: int64(now.Sub(v.Since).Seconds()),
		Probes: v.ProbesOK + v.ProbesFailed, ProbeFails: v.ProbesFailed,
	}
	if len(v.Device.Addrs) > 0 {
		fs.Address = v.Device.Addrs[0].String()
	}
	if v.Device.Gateway.IsValid() {
		fs.Gateway = v.Device.Gateway.String()
	}
	switch {
	case v.LastProbeEnd.IsZero():
	case v.LastProbe.OK:
		fs.LastProbe = "success"
		fs.RTTms = float64(v.LastProbe.RTT.Microseconds()) / 1000
	default:
		fs.LastProbe = "failure"
	}
	return fs
}

// preferenceChanged takes attribute 65008's set (-1 automatic, 0/1/2 an
// uplink type preferred while it is proven); both families follow it.
func (u *uplinks) preferenceChanged(v int) {
	for _, fc := range u.fams {
		if fc.ctrl == nil {
			continue // not started: start reads d.preferred
		}
		if err := fc.ctrl.SetPreference(v); err != nil {
			u.d.log.Error("preferred network type", "err", err)
		}
	}
}

// failover.Env of one family's controller, on the loop goroutine.

func (f *famCtl) Now() time.Time { return f.u.d.clock.Now() }

func (f *famCtl) StartProbe(name, dev string, src netip.Addr, timeout, hedge time.Duration) {
	u := f.u
	// DNS servers: netifd's, else the network's static ones, else the
	// resolv.conf files (read by the probe goroutine).
	servers := u.netifdServers(name)
	if len(servers) == 0 {
		servers = u.static[name]
	}
	tg := probe.Target{Device: dev, Source: src}
	if up := u.d.cur.Config.Uplink(name); up != nil && f.fam == uplink.IPv4 {
		if own := u.d.uplinkDevice(*up); own != "" && own != dev {
			// A 464XLAT uplink's IPv4 runs on its clat device; its IPv6
			// resolvers are reached through the uplink's own device.
			tg.Device6 = own
		}
	}
	p, dns, net := u.prober, u.dns, u.net
	go func() {
		if len(servers) == 0 {
			// An address literal needs none; a name then fails with a
			// clear error.
			servers, _, _ = dns.Servers(name)
		}
		tg.DNS = servers
		r := net.probe(u.ctx, p, tg, timeout, hedge)
		u.d.post(probeEvent{fam: f.fam, name: name, r: r})
	}()
}

func (f *famCtl) Capture(name, dev string, prefixes []netip.Prefix) {
	u, key := f.u, captureKey{name: name, fam: f.fam}
	if stop := u.captures[key]; stop != nil {
		stop()
		delete(u.captures, key)
	}
	if len(prefixes) == 0 {
		return
	}
	// One capture per uplink and family: a 464XLAT uplink's IPv4 runs on its clat device.
	stop, err := u.net.capture(capture.Config{Device: dev, Prefixes: prefixes, Period: capturePeriod,
		OnAlive: func(a capture.Alive) {
			// A sample may be dropped when the loop is busy (or stopping
			// and closing this capture): the next one comes soon.
			select {
			case u.d.events <- aliveEvent{fam: a.Family, name: name, since: a.Since, at: a.At}:
			default:
			}
		},
		Logf: func(f string, a ...any) { u.d.log.Warn(fmt.Sprintf(f, a...)) }})
	if err != nil {
		u.d.log.Warn("passive liveness unavailable; probes only", "network", name, "family", f.fam.String(), "err", err)
		return
	}
	u.captures[key] = stop
	u.watchSent(key, dev, prefixes)
}

func (f *famCtl) WakeAt(t time.Time) {
	if f.timer != nil {
		if t.Equal(f.wake) {
			return
		}
		f.timer.Stop()
	}
	f.wake = t
	f.timer = f.u.d.after(max(t.Sub(f.u.d.clock.Now()), 0), wakeEvent{fam: f.fam, at: t})
}

func (f *famCtl) Log(msg string, args ...any) {
	f.u.d.log.Info(msg, append(args, "family", f.fam.String())...)
}

// StateChanged announces the uplink's new state: connmgr.interface on every change of a
// family's state (its state_num is the uplink's combined state, old_state_num the combined
// state before, family the family that changed), connmgr.wifi when the combined state of the
// Wi-Fi uplink changed.
func (f *famCtl) StateChanged(s failover.UplinkSettings, from, to uplink.State, _ string) {
	if f.ctrl == nil {
		// failover.New applies the configuration before it returns (a
		// disabled uplink changes state there): nothing to announce yet,
		// and status reads the state once start has set the controller.
		return
	}
	if from.Up() != to.Up() {
		// The other families' share of the uplink's probe budget changed:
		// they reschedule (a larger share may bring their next round nearer).
		for _, o := range f.u.fams {
			if o != f && o.ctrl != nil {
				o.WakeAt(f.u.d.clock.Now())
			}
		}
	}
	for _, cu := range f.u.combined() {
		if cu.Settings.Name != s.Name {
			continue
		}
		old := []uplink.State{from}
		for _, v := range cu.Families {
			if v.Family != f.fam {
				old = append(old, v.State)
			}
		}
		oldNum := int(failover.CombineStates(old...))
		st := uplinkStatus(cu, f.u.d.clock.Now())
		n := interfaceNotice(st, oldNum)
		n.Data["family"] = f.fam.String()
		f.u.d.announce(n)
		if s.Kind == uplink.WiFi && oldNum != st.StateNum {
			f.u.d.announce(wifiNotice(st))
		}
	}
}

// Switched announces connmgr.network when either family's selection changed: old and new are
// the hub's in-use uplink (failover.CombineSelected: IPv4's, else IPv6's) before and after, so
// they are equal when only the other family moved; family names the family that switched, and
// ipv4 and ipv6 each family's selection now.
func (f *famCtl) Switched(from, to failover.UplinkSettings, kind, _ string) {
	v4, v6 := f.u.selections()
	old4, old6 := v4, v6
	if f.fam == uplink.IPv4 {
		old4 = from.Name
	} else {
		old6 = from.Name
	}
	oldSel, newSel := failover.CombineSelected(old4, old6), failover.CombineSelected(v4, v6)
	typ := func(name string) int {
		for _, cu := range f.u.combined() {
			if name != "" && cu.Settings.Name == name {
				return int(cu.Settings.Kind)
			}
		}
		if name != "" && name == from.Name {
			return int(from.Kind) // removed by a reload
		}
		return NetworkNone
	}
	n := networkNotice(oldSel, newSel, typ(oldSel), typ(newSel), kind)
	n.Data["family"] = f.fam.String()
	n.Data["ipv4"], n.Data["ipv6"] = v4, v6
	f.u.d.announce(n)
}

// netifdServers are the DNS servers netifd reports for uplink name: its own, then those of its
// dynamic interfaces (a modem's modemnet_6 carries the IPv6 resolvers, modemnet_4 the IPv4
// ones), without repeats.
func (u *uplinks) netifdServers(name string) []netip.Addr {
	var networks []string
	for network := range u.netifdDNS {
		if network != name && u.d.uplinkOf(network, []string{name}) != "" {
			networks = append(networks, network)
		}
	}
	slices.Sort(networks)
	var out []netip.Addr
	for _, network := range append([]string{name}, networks...) {
		for _, a := range u.netifdDNS[network] {
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// netifdChanged takes netifd's view of an uplink: its DNS servers come
// first for the probes' name resolution, and its layer-3 device is the
// uplink's device.
func (u *uplinks) netifdChanged(network string, info *NetifdInterface) {
	if info == nil {
		delete(u.netifdDNS, network)
	} else {
		u.netifdDNS[network] = slices.Clone(info.DNS)
	}
	if u.family(uplink.IPv4) != nil {
		u.followDevices(u.d.cur.Config, false)
	}
}

// Events of the uplinks component.

type netmonEvent struct{ u netmon.Update }

// apply hands a netlink update to every family's controller: each takes its family's view of
// the same snapshots.
func (e netmonEvent) apply(d *Daemon) {
	u := d.uplinks
	if len(e.u.Devices) > 0 {
		before := u.combined()
		for _, fc := range u.fams {
			fc.ctrl.DeviceUpdate(e.u.Devices)
		}
		// netifd sends no event after a renew that changes only the gateway or the DNS
		// servers: a change the kernel shows is the cue to ask it again.
		if changed := routingChanged(before, u.combined()); len(changed) > 0 {
			d.refreshNetifd(changed...)
		}
	}
	if e.u.OwnRoutesChanged || e.u.RulesChanged {
		for _, fc := range u.fams {
			fc.ctrl.RoutesChanged()
		}
	}
}

// routingChanged names the uplinks whose addresses or gateway, in any family, differ between
// two views.
func routingChanged(before, after []failover.Uplink) []string {
	var out []string
	for _, a := range after {
		i := slices.IndexFunc(before, func(b failover.Uplink) bool { return b.Settings.Name == a.Settings.Name })
		if i < 0 || len(before[i].Families) != len(a.Families) {
			out = append(out, a.Settings.Name)
			continue
		}
		for j, v := range a.Families {
			b := before[i].Families[j]
			if b.Device.Gateway != v.Device.Gateway || !slices.Equal(b.Device.Addrs, v.Device.Addrs) {
				out = append(out, a.Settings.Name)
				break
			}
		}
	}
	return out
}

// aliveEvent is a passive liveness sample of one family (the capture's prefix's).
type aliveEvent struct {
	fam       uplink.Family
	name      string
	since, at time.Time
}

func (e aliveEvent) apply(d *Daemon) {
	if fc := d.uplinks.family(e.fam); fc != nil {
		fc.ctrl.Alive(e.name, e.since, e.at)
	}
}

type probeEvent struct {
	fam  uplink.Family
	name string
	r    uplink.ProbeResult
}

func (e probeEvent) apply(d *Daemon) {
	if fc := d.uplinks.family(e.fam); fc != nil {
		fc.ctrl.ProbeDone(e.name, e.r)
	}
}

type wakeEvent struct {
	fam uplink.Family
	at  time.Time
}

func (e wakeEvent) apply(d *Daemon) {
	fc := d.uplinks.family(e.fam)
	if fc == nil || !e.at.Equal(fc.wake) {
		return // replaced by a later WakeAt
	}
	fc.timer, fc.wake = nil, time.Time{}
	fc.ctrl.Tick()
}
