package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/dnsgate"
	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/probe"
)

// dnsCheckEvery is how often the DNS component re-checks its mode against the firewall (a
// set-up that failed and then succeeded, a queue hook that appeared) and the interfaces' indexes
// (a safety net under the link watcher, which can lose events when its socket overflows).
const dnsCheckEvery = 5 * time.Second

// DNS modes as the status shows them (Firewall.DNSMode).
const (
	dnsModeHold    = string(dnsgate.ModeHold)
	dnsModeCapture = string(dnsgate.ModeCapture)
	dnsModeOff     = "off"
)

// dnsPlan decides how DNS extraction runs: off with the firewall mode (nothing is locked down,
// nothing to open) or while the lock-down is not in force (there is no set to open in); hold
// when dns_hold is on and the firewall queues DNS replies; capture otherwise, with the reason.
func dnsPlan(firewallOn, firewallUp, hold bool, queue firewall.QueueMode) (mode, why string) {
	switch {
	case !firewallOn:
		return dnsModeOff, "firewall mode is off"
	case !firewallUp:
		return dnsModeOff, "the firewall lock-down is not in force"
	case !hold:
		return dnsModeCapture, "dns_hold is '0'"
	case queue == firewall.QueueNative || queue == firewall.QueueXT:
		return dnsModeHold, ""
	case queue == firewall.QueueUnavailable:
		return dnsModeCapture, "the kernel cannot queue DNS replies (neither nft queue nor xt NFQUEUE)"
	}
	return dnsModeCapture, fmt.Sprintf("the firewall has no DNS queue hook (%s)", queue)
}

// echoMatcher is the whitelist plus the echo host's name: the probe's own target is never
// firewalled away from it, whatever the whitelist file says.
type echoMatcher struct {
	wl   dnsx.Matcher
	echo string // lower case, no trailing dot; "" when echo_host is an address
}

func (m echoMatcher) Match(name string) bool {
	return (m.echo != "" && name == m.echo) || m.wl.Match(name)
}

// echoName is echo_host as DNS names are matched, or "" when it is an address literal.
func echoName(host string) string {
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

// dnsGate is what the component needs of a running dnsgate.Gate (tests use a fake).
type dnsGate interface {
	Mode() dnsgate.Mode
	SetInterfaces(uplinks, lans []int) error
	SetMatcher(m dnsx.Matcher)
	SetPolicy(p dnsx.Policy)
	SetLimits(l dnsx.Limits)
	Status() dnsgate.Status
	Close() error
}

// dnsHost is what the component reads of the host: interface indexes and local addresses.
type dnsHost interface {
	// Ifindex returns the index of the named interface, false when it does not exist.
	Ifindex(name string) (int, bool)
	// LocalAddrs are the host's own addresses.
	LocalAddrs() []netip.Addr
	// LANInterfaces are the interfaces forwarded clients' queries may arrive on, by name:
	// every one but loopback and bridge (or bond) ports, whose frames their bridge sees too.
	LANInterfaces() map[string]int
	// Watch calls changed whenever links or addresses may have changed, until ctx ends.
	Watch(ctx context.Context, changed func()) error
}

// dnsTotals are counters that outlive one gate (a gate is restarted when the mode changes).
type dnsTotals struct {
	replies, opened, forged uint64
	rejected, bounds        map[string]uint64
	releasedLate            uint64 // held replies released at the hold bound, before judged
}

func (t *dnsTotals) add(st dnsgate.Status) {
	t.replies += st.Stats.Replies
	t.opened += st.Opened
	t.releasedLate += st.Hold.ReleasedLate
	t.forged += addCounts(&t.rejected, st.Rejected)
	addCounts(&t.bounds, st.Bounds)
}

// addCounts adds from into *to (made when needed) and returns the sum of from.
func addCounts(to *map[string]uint64, from map[string]uint64) (sum uint64) {
	for k, n := range from {
		if *to == nil {
			*to = map[string]uint64{}
		}
		(*to)[k] += n
		sum += n
	}
	return sum
}

// dnsComponent runs DNS extraction while the firewall mode is on: the gate (package dnsgate)
// watches the queries leaving the uplinks (and arriving from the AP networks it forwards for),
// judges each DNS reply against them and opens the whitelisted answers in the firewall. It
// starts after the firewall component, whose queue hook decides between hold and capture.
type dnsComponent struct {
	d        *Daemon
	openGate func(dnsgate.Config) (dnsGate, error)
	host     dnsHost

	gate     dnsGate
	mode     string // dnsModeHold, dnsModeCapture or dnsModeOff: what was asked of the gate
	why      string // why not hold mode
	loggedWh string // the reason last logged, so it is logged once
	queueNum uint16
	uplinks  []int
	lans     []int
	echo     string // the echo host last logged about
	local    atomic.Pointer[map[netip.Addr]bool]
	// trusted are the uplinks' resolvers (read by the gate's goroutines); trustedList the same,
	// sorted, for the log and the status.
	trusted     atomic.Pointer[map[netip.Addr]bool]
	trustedList []netip.Addr
	// resolvConfs are the files whose name servers the hub's own resolver forwards to.
	resolvConfs []string
	resync      atomic.Bool // a resync event is queued
	timer       Timer
	totals      dnsTotals
}

func newDNSComponent(d *Daemon) *dnsComponent {
	return &dnsComponent{
		d:           d,
		openGate:    func(c dnsgate.Config) (dnsGate, error) { return dnsgate.Start(c) },
		host:        osHost{},
		resolvConfs: []string{probe.AutoResolvConf, probe.EtcResolvConf},
	}
}

func (c *dnsComponent) start(ctx context.Context) error {
	c.refreshLocal()
	go func() {
		err := c.host.Watch(ctx, c.changed)
		if err != nil && ctx.Err() == nil {
			c.d.log.Warn("DNS extraction: watching links failed; interfaces are re-read every few seconds", "err", err)
		}
	}()
	c.apply(c.d.cur)
	c.schedule()
	return nil
}

func (c *dnsComponent) schedule() {
	c.timer = c.d.after(dnsCheckEvery, funcEvent{f: c.tick, done: make(chan struct{})})
}

func (c *dnsComponent) tick() {
	defer c.schedule()
	c.refreshLocal()
	c.apply(c.d.cur)
}

// changed runs on the watcher's goroutine: one resync event at a time is queued.
func (c *dnsComponent) changed() {
	if c.resync.Swap(true) {
		return
	}
	c.d.post(funcEvent{f: func() {
		c.resync.Store(false)
		c.refreshLocal()
		c.apply(c.d.cur)
	}, done: make(chan struct{})})
}

func (c *dnsComponent) reload(old, cur *Loaded) { c.apply(cur) }

// netifdChanged follows the uplinks' DNS servers (the trusted resolvers) and their layer-3
// devices (see devices.go; apply).
func (c *dnsComponent) netifdChanged(string, *NetifdInterface) {
	c.refreshTrusted(c.d.cur)
	c.apply(c.d.cur)
}

// refreshTrusted recomputes the resolvers whose replies may open the firewall: netifd's DNS
// servers of each enabled uplink, the uplink's `list dns`, the name servers of resolv.conf.auto
// and resolv.conf (what the hub's own dnsmasq forwards to; loopback is the hub itself and never
// seen on an uplink), and `list trusted_resolver`. It runs on the loop.
func (c *dnsComponent) refreshTrusted(l *Loaded) {
	m := map[netip.Addr]bool{}
	// A link-local resolver is trusted on its own link only: keyed with the ifindex of the
	// uplink's device as zone (the gate zones link-local sources so), or of the zone it was
	// written with (resolv.conf's fe80::1%wwan0); written without one, on every uplink.
	all := c.d.lockdownDevices(l.Config)
	add := func(devs []string, as ...netip.Addr) {
		for _, a := range as {
			zone := a.Zone()
			a = a.Unmap().WithZone("")
			if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
				continue
			}
			if !a.Is6() || !a.IsLinkLocalUnicast() {
				m[a] = true
				continue
			}
			on := devs
			if zone != "" {
				on = []string{zone}
			}
			for _, dev := range on {
				if i, ok := c.host.Ifindex(dev); ok {
					m[a.WithZone(strconv.Itoa(i))] = true
				} else if _, err := strconv.Atoi(dev); err == nil {
					m[a.WithZone(dev)] = true
				}
			}
		}
	}
	for _, u := range l.Config.Uplinks {
		if !u.Enabled {
			continue
		}
		devs := []string{u.Device}
		if n, ok := c.d.netifdInfo(u.Name); ok {
			devs = append(devs, n.Device, n.L3Device)
			add(devs, n.DNS...)
		}
		add(devs, u.DNS...)
	}
	for _, path := range c.resolvConfs {
		if b, err := os.ReadFile(path); err == nil {
			add(all, probe.ParseResolvConf(b, "")...)
		}
	}
	add(all, l.Config.Main.TrustedResolvers...)
	list := make([]netip.Addr, 0, len(m))
	for a := range m {
		list = append(list, a)
	}
	slices.SortFunc(list, netip.Addr.Compare)
	if slices.Equal(list, c.trustedList) && c.trusted.Load() != nil {
		return
	}
	c.trusted.Store(&m)
	c.trustedList = list
	if len(list) == 0 {
		c.d.log.Warn("DNS extraction: no trusted resolver known (no uplink DNS server from netifd, list dns, resolv.conf, trusted_resolver): no DNS reply opens anything")
		return
	}
	c.d.log.Info("DNS extraction trusts these resolvers", "resolvers", fmt.Sprint(list))
}

// isTrusted runs on the gate's goroutines.
func (c *dnsComponent) isTrusted(a netip.Addr) bool {
	m := c.trusted.Load()
	return m != nil && (*m)[a]
}

func (c *dnsComponent) stop() {
	if c.timer != nil {
		c.timer.Stop()
	}
	c.closeGate("connmgr exits")
}

// apply brings the gate to what l and the firewall ask for. It runs on the loop.
func (c *dnsComponent) apply(l *Loaded) {
	fw := c.d.firewall()
	up := fw != nil && fw.fw.Load() != nil
	mode, why := dnsPlan(l.FirewallOn, up, l.Config.Main.DNSHold, c.d.FirewallQueueMode())
	c.logEcho(l)
	if mode != dnsModeOff {
		c.refreshTrusted(l)
	}
	if mode == dnsModeOff {
		c.closeGate(why)
		c.mode, c.why = mode, why
		return
	}
	if why != c.loggedWh && why != "" {
		c.d.log.Warn("DNS extraction in capture mode: the first packet to a freshly resolved address may be dropped", "why", why)
	}
	c.loggedWh = why
	queue := l.Config.Main.QueueNum
	if c.gate != nil && (mode != c.mode || queue != c.queueNum) {
		c.closeGate(fmt.Sprintf("mode %s -> %s, queue %d -> %d", c.mode, mode, c.queueNum, queue))
	}
	c.mode, c.why = mode, why
	uplinks, lans := c.ifindexes(l.Config)
	if c.gate == nil {
		g, err := c.openGate(dnsgate.Config{
			Mode:      dnsgate.Mode(mode),
			QueueNum:  queue,
			Uplinks:   uplinks,
			LANs:      lans,
			IsLocal:   c.isLocal,
			Extractor: dnsx.Config{Policy: dnsPolicy(l.Config), Matcher: dnsMatcher(l), Trusted: c.isTrusted, Limits: dnsLimits(l.Config)},
			Opener:    c.d.FirewallOpener(),
			HubMark:   firewall.HubDNSMark,
			Log:       c.d.log,
			OnReply:   c.logReply,
			// The watchdog releases held replies while this process is
			// stopped or hung (nfqueue.Watchdog); "" (no /proc) goes without.
			WatchdogExe: watchdogExe(),
		})
		if err != nil {
			// The next tick tries again.
			c.d.log.Error("DNS extraction could not start", "err", err)
			return
		}
		c.gate, c.queueNum, c.uplinks, c.lans = g, queue, uplinks, lans
		return
	}
	c.gate.SetMatcher(dnsMatcher(l))
	c.gate.SetPolicy(dnsPolicy(l.Config))
	c.gate.SetLimits(dnsLimits(l.Config))
	if !slices.Equal(uplinks, c.uplinks) || !slices.Equal(lans, c.lans) {
		if err := c.gate.SetInterfaces(uplinks, lans); err != nil {
			c.d.log.Error("DNS extraction: changing interfaces", "err", err)
			return
		}
		c.d.log.Info("DNS extraction interfaces changed", "uplinks", uplinks, "lans", lans)
		c.uplinks, c.lans = uplinks, lans
	}
}

// closeGate stops the running gate (held replies are released) and keeps its counters.
func (c *dnsComponent) closeGate(why string) {
	if c.gate == nil {
		return
	}
	st := c.gate.Status()
	if err := c.gate.Close(); err != nil {
		c.d.log.Error("DNS extraction close", "err", err)
	}
	c.totals.add(st)
	c.gate, c.uplinks, c.lans = nil, nil, nil
	c.d.log.Info("DNS extraction stopped", "why", why, "replies", c.totals.replies,
		"opened", c.totals.opened, "forged", c.totals.forged, "rejected", fmt.Sprint(c.totals.rejected),
		"set_latency_p50", st.LatencyP50, "set_latency_p99", st.LatencyP99, "allow_errors", st.AllowErrors,
		"released_late", c.totals.releasedLate, "hold_p99", st.Hold.HoldP99, "hold_max", st.Hold.HoldMax)
}

// logEcho says, once per echo host, how the probe's target is kept reachable.
func (c *dnsComponent) logEcho(l *Loaded) {
	host := l.Config.Main.EchoHost
	if !l.FirewallOn || host == c.echo {
		return
	}
	c.echo = host
	switch name := echoName(host); {
	case name == "":
		c.d.log.Info("echo host is an address: whitelisted statically", "echo_host", host)
	case l.Whitelist.Match(name):
	default:
		c.d.log.Info("echo host is not on the whitelist: its DNS answers are opened all the same", "echo_host", host)
	}
}

func dnsMatcher(l *Loaded) dnsx.Matcher {
	return echoMatcher{wl: l.Whitelist, echo: echoName(l.Config.Main.EchoHost)}
}

// dnsPolicy: TTL + grace, at most one day (dnsx.DefaultMaxTimeout), whatever TTL an answer
// claims.
func dnsPolicy(c *config.Config) dnsx.Policy {
	return dnsx.Policy{Grace: c.Main.DNSGrace, MinTTL: c.Main.DNSMinTTL, MaxTimeout: dnsx.DefaultMaxTimeout}
}

func dnsLimits(c *config.Config) dnsx.Limits {
	return dnsx.Limits{PerReply: c.Main.DNSReplyMaxAddrs, PerName: c.Main.DNSNameMaxAddrs, Capacity: c.Main.SetMaxElem}
}

// ifindexes resolves the enabled uplinks' devices (configured and netifd's) and the AP networks' interfaces (the bridge
// where there is one: bridged clients' queries arrive there once) that exist now.
func (c *dnsComponent) ifindexes(cfg *config.Config) (uplinks, lans []int) {
	add := func(to []int, name string) []int {
		if i, ok := c.host.Ifindex(name); ok && !slices.Contains(to, i) {
			return append(to, i)
		}
		return to
	}
	for _, dev := range c.d.lockdownDevices(cfg) {
		uplinks = add(uplinks, dev)
	}
	for _, ap := range cfg.AP {
		for _, n := range ap.Interfaces() {
			lans = add(lans, n)
		}
	}
	// Not only the AP networks: a client on a wired LAN port, a VLAN or a guest network is a
	// LAN client too. Its queries, seen only leaving an uplink after NAT, would be taken for
	// the hub's own and push them out of the hub's table.
	for _, i := range c.host.LANInterfaces() {
		if !slices.Contains(uplinks, i) && !slices.Contains(lans, i) {
			lans = append(lans, i)
		}
	}
	slices.Sort(uplinks)
	slices.Sort(lans)
	return uplinks, lans
}

func (c *dnsComponent) refreshLocal() {
	m := map[netip.Addr]bool{}
	for _, a := range c.host.LocalAddrs() {
		m[a.Unmap().WithZone("")] = true
	}
	c.local.Store(&m)
}

// isLocal runs on the gate's goroutines: queries from the LAN to this host's own resolver are
// not forwarded, so they are not tracked.
func (c *dnsComponent) isLocal(a netip.Addr) bool {
	m := c.local.Load()
	return m != nil && (*m)[a.Unmap().WithZone("")]
}

// logReply runs on the gate's goroutines, at debug level only: what each trusted reply did.
// Untrusted ones are logged by the gate with their reason.
func (c *dnsComponent) logReply(ev dnsgate.ReplyEvent) {
	if ev.Result.Reason != dnsx.Trusted || !c.d.log.Enabled(logline.LevelDebug) {
		return
	}
	addrs := make([]string, 0, len(ev.Result.Pinholes))
	for _, p := range ev.Result.Pinholes {
		addrs = append(addrs, p.Addr.String()+"/"+p.Timeout.String())
	}
	c.d.log.Debug("DNS reply", "name", ev.Result.Exchange.Question.Name, "matched", ev.Result.Chain.Matched,
		"opened", strings.Join(addrs, ","), "latency", ev.Latency, "err", ev.Err, "forward_only", ev.Forward)
}

func (c *dnsComponent) fillStatus(s *Status) {
	s.Firewall.DNSMode = c.mode
	if c.mode == "" {
		s.Firewall.DNSMode = dnsModeOff
	}
	s.Firewall.DNSFallback = c.why
	t := c.totals
	t.rejected, t.bounds = nil, nil
	addCounts(&t.rejected, c.totals.rejected)
	addCounts(&t.bounds, c.totals.bounds)
	if c.gate != nil {
		st := c.gate.Status()
		t.add(st)
		if st.Fallback != "" { // the gate could not bind the queue
			s.Firewall.DNSMode, s.Firewall.DNSFallback = string(st.Mode), st.Fallback
		}
		s.Firewall.DNSLatencyP50us = st.LatencyP50.Microseconds()
		s.Firewall.DNSLatencyP99us = st.LatencyP99.Microseconds()
		s.Firewall.DNSHoldP99us = st.Hold.HoldP99.Microseconds()
		s.Firewall.DNSHoldMaxus = st.Hold.HoldMax.Microseconds()
		s.Firewall.DNSQueueOverruns = st.Queue.Overruns
	}
	s.Firewall.DNSReleasedLate = t.releasedLate
	s.Firewall.DNSRejected = t.rejected
	s.Firewall.DNSBounds = t.bounds
	for _, a := range c.trustedList {
		s.Firewall.DNSTrustedResolvers = append(s.Firewall.DNSTrustedResolvers, a.String())
	}
	s.Counters.DNSReplies += t.replies
	s.Counters.PinholesAdded += t.opened
	s.Counters.ForgedReplies += t.forged
}

// watchdogExe is this binary, which runs the DNS queue's watchdog when asked
// (cmd/connmgr). Test binaries that run the daemon in-process do not: none.
func watchdogExe() string {
	exe, err := os.Executable()
	if err != nil || strings.HasSuffix(exe, ".test") {
		return ""
	}
	return exe
}

// osHost reads the real host.
type osHost struct{}

func (osHost) Ifindex(name string) (int, bool) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return 0, false
	}
	return ifc.Index, true
}

func (osHost) LANInterfaces() map[string]int {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	out := make(map[string]int, len(ifs))
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		if _, err := os.Stat("/sys/class/net/" + ifc.Name + "/master"); err == nil {
			continue // a bridge's port: its bridge is watched
		}
		out[ifc.Name] = ifc.Index
	}
	return out
}

func (osHost) LocalAddrs() []netip.Addr {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	out := make([]netip.Addr, 0, len(as))
	for _, a := range as {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out
}

// Watch listens to the kernel's link and address notifications. It does not parse them: any
// notification means "read again" (the reads are cheap and there are few interfaces), and a
// lost one (socket overflow) is caught by the periodic check.
func (osHost) Watch(ctx context.Context, changed func()) error {
	conn, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{
		Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_IFADDR | unix.RTMGRP_IPV6_IFADDR})
	if err != nil {
		return fmt.Errorf("netlink route notifications: %w", err)
	}
	go func() {
		<-ctx.Done()
		conn.Close()
	}()
	for {
		_, err := conn.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, unix.ENOBUFS) {
			return fmt.Errorf("netlink route notifications: %w", err)
		}
		changed()
	}
}
