package daemon

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/afero/af-conn/internal/capture"
	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/failover"
	"github.com/afero/af-conn/internal/netmon"
	"github.com/afero/af-conn/internal/probe"
	"github.com/afero/af-conn/internal/route"
	"github.com/afero/af-conn/internal/uplink"
)

// uplinks is the component that keeps the hub on its best uplink. Its
// pumps (the netlink monitor, one capture per up uplink, one goroutine per
// probe round) post events; on the loop, failover.Controller decides and
// route.Manager carries the decisions out.
type uplinks struct {
	d        *Daemon
	net      netBackend
	ctx      context.Context
	ctrl     *failover.Controller
	router   routeManager
	prober   *probe.Prober
	probeCfg probe.Config
	dns      probe.DNSSource
	static   map[string][]netip.Addr // uplinks' static DNS servers (network's list dns)
	// netifdDNS are the DNS servers netifd reports per uplink network.
	netifdDNS map[string][]netip.Addr
	captures  map[string]func() // stop functions of running captures
	// devices are the devices the netlink monitor reports (see devices.go); devChanges
	// tells it new ones.
	devices    []string
	devChanges chan []string
	timer      Timer
	wake       time.Time
	keep       bool
}

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
	return &uplinks{d: d, net: kernelNet{}, captures: map[string]func(){}, netifdDNS: map[string][]netip.Addr{},
		devChanges: make(chan []string, 1)}
}

// netBackend is the kernel side of the component: the real one, or a
// test fake that never touches a network.
type netBackend interface {
	routes() (routeManager, error)
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

func (kernelNet) routes() (routeManager, error) { return route.New(route.Config{}) }
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

// failoverSettings turns the configuration into the controller's settings.
func failoverSettings(c *config.Config) failover.Settings {
	m := c.Main
	s := failover.Settings{
		Params: uplink.Params{FailCount: m.FailCount, RecoverCount: m.RecoverCount},
		Intervals: uplink.Intervals{InUse: m.ProbeInterval, Standby: m.ProbeIntervalStandby,
			Failing: m.ProbeIntervalFailing, Cellular: m.CellularProbeInterval},
		ProbeTimeout:    m.ProbeTimeout,
		ProbeTimeoutMax: max(m.ProbeTimeout, 5*time.Second),
		RouteGrace:      failover.DefaultRouteGrace,
	}
	for _, u := range c.Uplinks {
		s.Uplinks = append(s.Uplinks, failover.UplinkSettings{Name: u.Name, Device: u.Device,
			Kind: uplink.Kind(u.Kind), Priority: u.Priority, ProbeInterval: u.ProbeInterval, Enabled: u.Enabled})
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
	if u.router, err = u.net.routes(); err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	l3 := u.d.withL3Devices(cfg)
	u.ctrl = failover.New(u, u.router, failoverSettings(l3))
	if err := u.ctrl.SetPreference(u.d.preferred); err != nil {
		return err
	}
	u.devices = monitoredDevices(l3)
	opts := netmon.Options{
		Devices:       u.devices,
		DeviceChanges: u.devChanges,
		OwnProto:      u.router.Proto(),
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

// monitoredDevices are the uplinks' devices the netlink monitor reports.
func monitoredDevices(c *config.Config) []string {
	var devs []string
	for _, up := range c.Uplinks {
		if up.Device != "" && !slices.Contains(devs, up.Device) {
			devs = append(devs, up.Device)
		}
	}
	return devs
}

// followDevices brings the controller and the netlink monitor to the uplinks' devices as
// netifd reports them now; with configure, the controller is reconfigured even when no device
// changed (a reload).
func (u *uplinks) followDevices(cfg *config.Config, configure bool) {
	l3 := u.d.withL3Devices(cfg)
	devs := monitoredDevices(l3)
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
		u.ctrl.Configure(failoverSettings(l3))
	}
}

func (u *uplinks) stop() {
	if u.timer != nil {
		u.timer.Stop()
	}
	for name, stop := range u.captures {
		stop()
		delete(u.captures, name)
	}
	if u.router == nil {
		return
	}
	if err := u.router.Cleanup(u.keep); err != nil {
		u.d.log.Error("route cleanup", "err", err)
	}
	u.router.Close()
}

func (u *uplinks) fillStatus(s *Status) {
	if u.ctrl == nil {
		return
	}
	now := u.d.clock.Now()
	s.NetworkType = u.ctrl.NetworkType()
	c := u.ctrl.Counters()
	s.Counters.Switches = c.Switches
	s.Counters.Probes = c.Probes
	for _, v := range u.ctrl.Views() {
		if v.InUse {
			s.InUse, s.InUseDevice = v.Settings.Name, v.Settings.Device
		}
		s.Uplinks = append(s.Uplinks, uplinkStatus(v, now))
	}
}

func uplinkStatus(v failover.View, now time.Time) UplinkStatus {
	us := UplinkStatus{
		Network: v.Settings.Name, Device: v.Settings.Device, Type: v.Settings.Kind.String(),
		State: v.State.String(), StateNum: int(v.State), InUse: v.InUse,
		LastProbe: "none", SinceSeconds: int64(now.Sub(v.Since).Seconds()),
		Probes: v.ProbesOK + v.ProbesFailed, ProbeFails: v.ProbesFailed,
	}
	if p, ok := v.Device.IPv4(); ok {
		us.Address = p.String()
	}
	if v.Device.Gateway.IsValid() {
		us.Gateway = v.Device.Gateway.String()
	}
	switch {
	case v.LastProbeEnd.IsZero():
	case v.LastProbe.OK:
		us.LastProbe = "success"
		us.RTTms = float64(v.LastProbe.RTT.Microseconds()) / 1000
	default:
		us.LastProbe = "failure"
	}
	return us
}

// preferenceChanged takes attribute 65008's set (-1 automatic, 0/1/2 an
// uplink type preferred while it is proven).
func (u *uplinks) preferenceChanged(v int) {
	if u.ctrl == nil {
		return // not started: start reads d.preferred
	}
	if err := u.ctrl.SetPreference(v); err != nil {
		u.d.log.Error("preferred network type", "err", err)
	}
}

// failover.Env, on the loop goroutine.

func (u *uplinks) Now() time.Time { return u.d.clock.Now() }

func (u *uplinks) StartProbe(name, dev string, src netip.Addr, timeout, hedge time.Duration) {
	// DNS servers: netifd's, else the network's static ones, else the
	// resolv.conf files (read by the probe goroutine).
	servers := u.netifdDNS[name]
	if len(servers) == 0 {
		servers = u.static[name]
	}
	p, dns, net := u.prober, u.dns, u.net
	go func() {
		if len(servers) == 0 {
			// An address literal needs none; a name then fails with a
			// clear error.
			servers, _, _ = dns.Servers(name)
		}
		r := net.probe(u.ctx, p, probe.Target{Device: dev, Source: src, DNS: servers}, timeout, hedge)
		u.d.post(probeEvent{name: name, r: r})
	}()
}

func (u *uplinks) Capture(name, dev string, prefix netip.Prefix) {
	if stop := u.captures[name]; stop != nil {
		stop()
		delete(u.captures, name)
	}
	if !prefix.IsValid() {
		return
	}
	stop, err := u.net.capture(capture.Config{Device: dev, Prefixes: []netip.Prefix{prefix}, Period: capturePeriod,
		OnAlive: func(a capture.Alive) {
			// A sample may be dropped when the loop is busy (or stopping
			// and closing this capture): the next one comes soon.
			select {
			case u.d.events <- aliveEvent{name: name, since: a.Since, at: a.At}:
			default:
			}
		},
		Logf: func(f string, a ...any) { u.d.log.Warn(fmt.Sprintf(f, a...)) }})
	if err != nil {
		u.d.log.Warn("passive liveness unavailable; probes only", "network", name, "err", err)
		return
	}
	u.captures[name] = stop
}

func (u *uplinks) WakeAt(t time.Time) {
	if u.timer != nil {
		if t.Equal(u.wake) {
			return
		}
		u.timer.Stop()
	}
	u.wake = t
	u.timer = u.d.after(max(t.Sub(u.d.clock.Now()), 0), wakeEvent{at: t})
}

func (u *uplinks) Log(msg string, args ...any) { u.d.log.Info(msg, args...) }

func (u *uplinks) StateChanged(s failover.UplinkSettings, from, _ uplink.State, _ string) {
	if u.ctrl == nil {
		// failover.New applies the configuration before it returns (a
		// disabled uplink changes state there): nothing to announce yet,
		// and status reads the state once start has set u.ctrl.
		return
	}
	for _, v := range u.ctrl.Views() {
		if v.Settings.Name != s.Name {
			continue
		}
		st := uplinkStatus(v, u.d.clock.Now())
		u.d.announce(interfaceNotice(st, int(from)))
		if s.Kind == uplink.WiFi {
			u.d.announce(wifiNotice(st))
		}
	}
}

func (u *uplinks) Switched(from, to failover.UplinkSettings, kind, _ string) {
	typ := func(s failover.UplinkSettings) int {
		if s.Name == "" {
			return NetworkNone
		}
		return int(s.Kind)
	}
	u.d.announce(networkNotice(from.Name, to.Name, typ(from), typ(to), kind))
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
	if u.ctrl != nil {
		u.followDevices(u.d.cur.Config, false)
	}
}

// Events of the uplinks component.

type netmonEvent struct{ u netmon.Update }

func (e netmonEvent) apply(d *Daemon) {
	u := d.uplinks
	if len(e.u.Devices) > 0 {
		before := u.ctrl.Views()
		u.ctrl.DeviceUpdate(e.u.Devices)
		// netifd sends no event after a renew that changes only the gateway or the DNS
		// servers: a change the kernel shows is the cue to ask it again.
		if changed := routingChanged(before, u.ctrl.Views()); len(changed) > 0 {
			d.refreshNetifd(changed...)
		}
	}
	if e.u.OwnRoutesChanged || e.u.RulesChanged {
		u.ctrl.RoutesChanged()
	}
}

// routingChanged names the uplinks whose addresses or gateway differ between two views.
func routingChanged(before, after []failover.View) []string {
	var out []string
	for _, a := range after {
		i := slices.IndexFunc(before, func(b failover.View) bool { return b.Settings.Name == a.Settings.Name })
		if i < 0 || before[i].Device.Gateway != a.Device.Gateway || !slices.Equal(before[i].Device.Addrs, a.Device.Addrs) {
			out = append(out, a.Settings.Name)
		}
	}
	return out
}

type aliveEvent struct {
	name      string
	since, at time.Time
}

func (e aliveEvent) apply(d *Daemon) { d.uplinks.ctrl.Alive(e.name, e.since, e.at) }

type probeEvent struct {
	name string
	r    uplink.ProbeResult
}

func (e probeEvent) apply(d *Daemon) { d.uplinks.ctrl.ProbeDone(e.name, e.r) }

type wakeEvent struct{ at time.Time }

func (e wakeEvent) apply(d *Daemon) {
	u := d.uplinks
	if !e.at.Equal(u.wake) {
		return // replaced by a later WakeAt
	}
	u.timer, u.wake = nil, time.Time{}
	u.ctrl.Tick()
}
