// Package failover owns the decisions that keep the hub on its best
// uplink: it drives one uplink state machine per configured uplink from
// netlink snapshots, passive liveness and probe results, schedules the
// probe rounds, asks the selector which uplink carries the default route,
// and turns that into routing state and conntrack flushes. It runs on the
// daemon's loop goroutine and touches the world only through Env, so its
// whole timeline is tested with a fake clock and fakes.
//
// A Controller serves one address family (Settings.Family): its machines
// see each device as that family does (uplink.Device.OfFamily), its probes,
// captures, routes and flushes use that family's addresses, and its Router
// is that family's. The daemon runs one per family on the same netlink
// snapshots; family.go says how their views combine into one per uplink.
package failover

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/afero/af-conn/internal/route"
	"github.com/afero/af-conn/internal/selector"
	"github.com/afero/af-conn/internal/uplink"
)

// UplinkSettings is one configured uplink.
type UplinkSettings struct {
	Name     string // UCI network section: ethnet, stanet, modemnet
	Device   string // eth0, wlan0, wwan0
	Kind     uplink.Kind
	Priority int // lower is preferred
	// ProbeInterval, if set, replaces Intervals.InUse for this uplink.
	ProbeInterval time.Duration
	Enabled       bool
	// ProbeBudget and ProbeBudgetStandby are the bytes per hour the
	// uplink's routine probe rounds may spend while in use and while not
	// (0: no limit besides the intervals); ProbeCost is what one round
	// costs on the wire, in bytes (the budgets' unit).
	ProbeBudget, ProbeBudgetStandby float64
	ProbeCost                       int
	// LimitOff says what reaching the monthly limit does (SetLimited):
	// true, the uplink is not used at all; false, it is kept as a last
	// resort (no routine rounds while another uplink is in use).
	LimitOff bool
}

// Settings is the configuration the controller runs with.
type Settings struct {
	// Family is the address family the controller serves; zero is IPv4.
	Family    uplink.Family
	Uplinks   []UplinkSettings
	Params    uplink.Params
	Intervals uplink.Intervals
	// ProbeTimeout is a round's time limit on a fast link; a slow link's
	// rounds get four smoothed RTTs, up to ProbeTimeoutMax.
	ProbeTimeout    time.Duration
	ProbeTimeoutMax time.Duration
	// RouteGrace is how long an up uplink's default route may be missing, with carrier and
	// an address still there, before the uplink counts as down (0: at once). netifd deletes
	// the old default route and adds the new one when a DHCP renew changes the gateway.
	RouteGrace time.Duration
	// Sharers, if set, says how many families' controllers now spend the
	// uplink's probe budget (those in which it is up, this one among
	// them): the budget is the uplink's, so each gets its share of it
	// (nil, or less than 1: all of it).
	Sharers func(name string) int
}

// DefaultRouteGrace is the daemon's RouteGrace: netifd's gap is a few hundred microseconds,
// a loaded 580 MHz router may take a few hundred milliseconds; a default route that stays
// away longer than this is a fault.
const DefaultRouteGrace = 1500 * time.Millisecond

// Router is the routing state the controller changes (route.Manager).
type Router interface {
	Apply(route.Desired) error
	FlushConntrack(addrs ...netip.Addr) (uint, error)
}

// Env is what the controller needs from the daemon.
type Env interface {
	Now() time.Time
	// StartProbe starts a probe round on the uplink in the background;
	// its result comes back through Controller.ProbeDone.
	StartProbe(name, device string, src netip.Addr, timeout, hedge time.Duration)
	// Capture starts (prefixes given: the uplink's own addresses of the
	// family, at most MaxCapturePrefixes) or stops (none) passive
	// liveness and the unanswered-traffic watch on the uplink's device;
	// samples come back through Controller.Alive and Unanswered.
	Capture(name, device string, prefixes []netip.Prefix)
	// WakeAt asks for Controller.Tick at (or soon after) t; a later call
	// replaces an earlier one.
	WakeAt(t time.Time)
	// Log records a decision and its reason.
	Log(msg string, args ...any)
	// StateChanged and Switched tell the outside (ubus events).
	StateChanged(u UplinkSettings, from, to uplink.State, reason string)
	// Switched's kind is "start", "failover", "failback", "preference"
	// or "lost" (no uplink left).
	Switched(from, to UplinkSettings, kind, reason string)
}

type link struct {
	set       UplinkSettings
	slot      int
	m         *uplink.Machine
	probing   bool      // a round is out
	lastStart time.Time // start of the last round
	capture   []netip.Prefix
	// held is a snapshot without the default route kept from the machine until heldUntil
	// (RouteGrace), nil when none is held.
	held      *uplink.Device
	heldUntil time.Time
	// unanswered is when traffic sent through the uplink went unanswered
	// (zero: none pending); lastEnd is when the last round ended.
	unanswered time.Time
	lastEnd    time.Time
	// byUnanswered says the round out was started by unanswered traffic;
	// falseAlarms counts such rounds in a row that found the uplink fine,
	// and unansweredHold is when the next such round may start (see
	// unansweredHoldFor).
	byUnanswered   bool
	falseAlarms    int
	unansweredHold time.Time
	rounds         uint64    // probe rounds started
	suspect        time.Time // when the current streak of failed rounds began (zero: none)
	limited        bool      // over its monthly limit (SetLimited)
	// router is the gateway routed through, of those the link offers;
	// failedRouters are the offered ones the family failed through, and
	// when; provenRouters those a round succeeded through (routers.go).
	router        netip.Addr
	failedRouters map[netip.Addr]time.Time
	provenRouters []netip.Addr
	// routeLosses are the last times the uplink went down for lack of its
	// default route (flap.go).
	routeLosses []time.Time
}

// Counters count decisions.
type Counters struct {
	Switches     uint64
	Probes       uint64
	RouteErrors  uint64
	FlushedFlows uint64
}

// Controller is the failover logic; not safe for concurrent use.
type Controller struct {
	env      Env
	router   Router
	set      Settings
	links    []*link
	selected string
	pref     int
	counters Counters
	routeErr bool           // the last Apply failed: retry on the next tick
	applied  *route.Desired // what the kernel was last made to match
	flushes  []flushReq     // conntrack flushes due once the routes are right
	devices  map[string]uplink.Device
	// flapWake is when the first fail-back hold of a link ends (flap.go);
	// zero when none is held.
	flapWake time.Time
}

// New returns a controller with settings s.
func New(env Env, router Router, s Settings) *Controller {
	c := &Controller{env: env, router: router, pref: selector.Automatic, devices: map[string]uplink.Device{}}
	c.Configure(s)
	return c
}

// Configure applies new settings (start and reload). Uplinks keep their
// state across a reload unless their device changed.
func (c *Controller) Configure(s Settings) {
	now := c.env.Now()
	old := map[string]*link{}
	for _, l := range c.links {
		old[l.set.Name] = l
	}
	if s.Family == 0 {
		s.Family = uplink.IPv4
	}
	c.set = s
	c.links = nil
	for i, us := range s.Uplinks {
		l := old[us.Name]
		if l == nil || l.set.Device != us.Device {
			if l != nil {
				c.stopCapture(l)
			}
			l = &link{m: uplink.New(now, s.Params)}
			if d, ok := c.devices[us.Device]; ok {
				l.m.Handle(now, uplink.DeviceEvent{Device: l.view(d, s.Family, now)})
			}
		}
		delete(old, us.Name)
		l.set, l.slot = us, i
		l.m.SetParams(s.Params)
		c.links = append(c.links, l)
		c.apply(l, now, c.support(l))
	}
	for _, l := range old {
		c.stopCapture(l)
		if l.set.Name == c.selected {
			c.selected = ""
		}
	}
	c.decide(now, "configuration")
}

func (c *Controller) link(name string) *link {
	for _, l := range c.links {
		if l.set.Name == name {
			return l
		}
	}
	return nil
}

// DeviceUpdate takes netlink snapshots (both families), keyed by device name.
func (c *Controller) DeviceUpdate(devs map[string]uplink.Device) {
	now := c.env.Now()
	for dev, d := range devs {
		c.devices[dev] = d
		for _, l := range c.links {
			if l.set.Device == dev {
				c.device(l, now, l.view(d, c.set.Family, now))
			}
		}
	}
	c.decide(now, "netlink")
}

// device feeds a snapshot to the uplink's machine, unless it only lacks the default route of
// an up uplink: that one is held for RouteGrace, and a snapshot with a default route (the
// renew's new one) or with a real fault (no carrier, no address) replaces it before it counts.
func (c *Controller) device(l *link, now time.Time, d uplink.Device) {
	if c.set.RouteGrace > 0 && holdRouteLoss(l.m.State(), d) {
		if l.held == nil {
			l.heldUntil = now.Add(c.set.RouteGrace)
			c.env.Log("default route gone; waiting before it counts", "network", l.set.Name,
				"device", l.set.Device, "grace", c.set.RouteGrace.String())
		}
		l.held = &d
		return
	}
	l.held = nil
	c.apply(l, now, uplink.DeviceEvent{Device: d})
}

// holdRouteLoss tells whether snapshot d of an uplink in state st waits for RouteGrace: the
// uplink is up, and its device still has carrier and an address, but no default route.
func holdRouteLoss(st uplink.State, d uplink.Device) bool {
	return st.Up() && d.Present && d.AdminUp && d.Carrier && len(d.Addrs) > 0 && !d.HasDefault
}

// releaseHeld feeds the snapshots whose grace is over; it reports whether there were any.
func (c *Controller) releaseHeld(now time.Time) bool {
	released := false
	for _, l := range c.links {
		if l.held != nil && !now.Before(l.heldUntil) {
			d := *l.held
			l.held = nil
			c.apply(l, now, uplink.DeviceEvent{Device: d})
			released = true
		}
	}
	return released
}

// RoutesChanged says routes or rules of ours may have been changed by
// someone else: the desired state is applied again.
func (c *Controller) RoutesChanged() {
	c.applied = nil
	c.applyRoutes("routes or rules changed")
}

// Alive records passive evidence on an uplink: replies that arrived
// after since and by at (see uplink.AliveEvent).
func (c *Controller) Alive(name string, since, at time.Time) {
	if l := c.link(name); l != nil {
		c.apply(l, at, uplink.AliveEvent{Since: since})
		c.decide(c.env.Now(), "traffic")
	}
}

// Unanswered records that a TCP segment the hub sent through the uplink at
// sent got no answer within its bound: unless a round or replies since
// cover it, a round starts at once, or once the hold after earlier false
// alarms ends (unansweredHoldFor). The probe rounds' own segments are no
// evidence (a dead uplink's round would start the next one, and so on).
func (c *Controller) Unanswered(name string, sent time.Time) {
	l := c.link(name)
	if l == nil || !l.m.State().Up() {
		return
	}
	if !l.lastStart.IsZero() && !sent.Before(l.lastStart) && (l.probing || !sent.After(l.lastEnd.Add(ownSegmentsSlack))) {
		return // sent during a round: possibly its own segment, and the round judges
	}
	now := c.env.Now()
	if l.falseAlarms > 0 && now.Sub(l.unansweredHold) > c.unansweredHoldMax(l) {
		l.falseAlarms = 0 // no unanswered traffic for a long hold: take it at once again
	}
	if sent.Before(l.unansweredHold) {
		sent = l.unansweredHold
	}
	if sent.After(l.unanswered) {
		l.unanswered = sent
	}
	c.schedule(now)
}

// Unanswered traffic that a round then finds no fault behind (an
// application retrying a server that is down, a LAN client sending to dead
// hosts on purpose) must not buy a round per segment: each such round in a
// row doubles the hold before the next, from unansweredHoldMin up to the
// uplink's routine interval (its probe_interval in use, or longer by its
// budget), so rounds started by unanswered traffic cost at most about as
// much as the routine ones. A failed round, or no unanswered traffic for a
// whole hold, ends the streak: a silent death is still caught at the next
// send, later by at most the hold while false alarms go on.
func (c *Controller) unansweredHoldFor(l *link) time.Duration {
	return min(unansweredHoldMin<<min(l.falseAlarms-1, 20), c.unansweredHoldMax(l))
}

func (c *Controller) unansweredHoldMax(l *link) time.Duration {
	every := c.set.Intervals.InUse
	if l.set.ProbeInterval > 0 {
		every = l.set.ProbeInterval
	}
	return max(every, c.floor(l), unansweredHoldMin)
}

// unansweredHoldMin is the hold after one false alarm.
const unansweredHoldMin = 2 * time.Second

// ownSegmentsSlack is how long after a round's end its connection's last
// segments (the FIN of a closed echo connection) may still be sent.
const ownSegmentsSlack = 100 * time.Millisecond

// ProbeDone records a probe round's result.
func (c *Controller) ProbeDone(name string, r uplink.ProbeResult) {
	l := c.link(name)
	if l == nil {
		return
	}
	l.probing = false
	now := c.env.Now()
	l.lastEnd = now
	// A false alarm is a round started by unanswered traffic on an uplink
	// that was proven and had no failure, and that found it fine.
	before := l.m.Snapshot()
	switch {
	case !r.OK || before.State != uplink.ItfUpSS || before.Fails > 0:
		l.falseAlarms, l.unansweredHold = 0, time.Time{}
	case l.byUnanswered:
		l.falseAlarms++
		l.unansweredHold = now.Add(c.unansweredHoldFor(l))
	}
	l.byUnanswered = false
	c.apply(l, now, uplink.ProbeEvent{Result: r})
	if r.OK {
		l.routerProven()
	} else if l.m.State() == uplink.ItfUpSF {
		c.nextRouter(l, now)
	}
	c.decide(now, "probe")
}

// Tick starts the probe rounds that are due and asks for the next wake.
func (c *Controller) Tick() {
	now := c.env.Now()
	if c.releaseHeld(now) {
		c.decide(now, "default route still gone")
	}
	if !c.flapWake.IsZero() && !now.Before(c.flapWake) {
		c.decide(now, "route flap hold over")
	}
	if c.routeErr {
		c.applied = nil
		c.applyRoutes("retry after error")
	}
	c.schedule(now)
}

// SetPreference sets attribute 65008's manual preference: selector.Automatic
// or an uplink kind preferred while it is proven.
func (c *Controller) SetPreference(v int) error {
	if !selector.ValidPreference(v) {
		return fmt.Errorf("network type preference %d: want -1 (automatic), 0 (Ethernet), 1 (WLAN) or 2 (WAN)", v)
	}
	c.pref = v
	c.decide(c.env.Now(), "preference")
	return nil
}

// Preference returns the manual preference.
func (c *Controller) Preference() int { return c.pref }

// apply feeds one event to an uplink's machine and acts on what changed.
func (c *Controller) apply(l *link, now time.Time, ev uplink.Event) {
	snapBefore := l.m.Snapshot()
	tr := l.m.Handle(now, ev)
	if de, ok := ev.(uplink.DeviceEvent); ok {
		l.noteRouteLoss(now, tr, de.Device)
	}
	if tr.Changed() {
		c.env.Log("uplink state", "network", l.set.Name, "device", l.set.Device,
			"from", tr.From.String(), "to", tr.To.String(), "reason", tr.Reason)
		c.env.StateChanged(l.set, tr.From, tr.To, tr.Reason)
		if tr.To != uplink.ItfUpSS && (tr.From == uplink.ItfUpSS || tr.From == uplink.ItfUpSU) {
			// Flows through an uplink that died are dead: clear them so
			// masqueraded ones are translated afresh over the new route.
			c.flush(l, "uplink "+tr.To.String(), snapBefore.Device.Addrs)
		}
	} else if tr.GatewayChanged || tr.AddrsChanged {
		c.env.Log("uplink changed", "network", l.set.Name, "device", l.set.Device, "reason", tr.Reason)
	}
	if tr.AddrsChanged && l.m.State().Up() {
		// Flows of an address the uplink lost cannot come back.
		var gone []netip.Prefix
		// A deprecated address is not lost: its connections go on.
		cur := l.m.Snapshot().Device
		for _, p := range snapBefore.Device.Addrs {
			if !slices.Contains(cur.Addrs, p) && !slices.Contains(cur.Deprecated, p) {
				gone = append(gone, p)
			}
		}
		c.flush(l, "address removed", gone)
	}
	c.syncCapture(l)
}

type flushReq struct {
	network, why string
	addrs        []netip.Addr
}

// flush queues a conntrack flush of the family's addresses; it runs after
// the routes are switched (a dump of the conntrack table takes milliseconds
// the failover should not wait for).
func (c *Controller) flush(l *link, why string, addrs []netip.Prefix) {
	var as []netip.Addr
	for _, p := range addrs {
		if uplink.FamilyOf(p.Addr()) == c.set.Family {
			as = append(as, p.Addr())
		}
	}
	if len(as) > 0 {
		c.flushes = append(c.flushes, flushReq{network: l.set.Name, why: why, addrs: as})
	}
}

func (c *Controller) runFlushes() {
	for _, f := range c.flushes {
		n, err := c.router.FlushConntrack(f.addrs...)
		c.counters.FlushedFlows += uint64(n)
		if err != nil {
			c.env.Log("conntrack flush failed", "network", f.network, "err", err.Error())
			continue
		}
		if n > 0 {
			c.env.Log("conntrack flushed", "network", f.network, "flows", n, "reason", f.why)
		}
	}
	c.flushes = c.flushes[:0]
}

// syncCapture runs passive liveness while the uplink is up, on all its
// current subnets of the family (an IPv6 uplink often has several: a
// delegated and an RA prefix, a ULA): traffic from or to any of them is
// the uplink's neighbourhood, not the upstream.
func (c *Controller) syncCapture(l *link) {
	var want []netip.Prefix
	if l.m.State().Up() {
		want = capturePrefixes(l.m.Snapshot().Device)
	}
	if slices.Equal(want, l.capture) {
		return
	}
	l.capture = want
	c.env.Capture(l.set.Name, l.set.Device, want)
}

// MaxCapturePrefixes is how many prefixes of a family the capture takes
// (capture.Config.Prefixes).
const MaxCapturePrefixes = 8

// capturePrefixes are the family view's addresses, the first
// MaxCapturePrefixes of them (lowest first, as the machine sorts them),
// without repeats of one subnet.
func capturePrefixes(d uplink.Device) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range d.Addrs {
		if len(out) == MaxCapturePrefixes {
			break
		}
		if !slices.ContainsFunc(out, func(o netip.Prefix) bool { return o.Masked() == p.Masked() }) {
			out = append(out, p)
		}
	}
	return out
}

func (c *Controller) stopCapture(l *link) {
	if len(l.capture) > 0 {
		l.capture = nil
		c.env.Capture(l.set.Name, l.set.Device, nil)
	}
}

func (c *Controller) candidates(now time.Time) []selector.Candidate {
	out := make([]selector.Candidate, 0, len(c.links))
	c.flapWake = time.Time{}
	for _, l := range c.links {
		s := l.m.Snapshot()
		until := l.flapHeldUntil(now)
		if !until.IsZero() && (c.flapWake.IsZero() || until.Before(c.flapWake)) {
			c.flapWake = until
		}
		out = append(out, selector.Candidate{Name: l.set.Name, Kind: l.set.Kind, Priority: c.priority(l),
			State: s.State, Successes: s.Successes, Fresh: s.State == uplink.ItfUpSU && s.Fails == 0, Held: !until.IsZero()})
	}
	return out
}

// decide runs the selector and applies its decision, then reschedules.
func (c *Controller) decide(now time.Time, trigger string) {
	d := selector.Select(selector.Input{Candidates: c.candidates(now), Current: c.selected,
		Preference: c.pref, RecoverCount: c.set.Params.RecoverCount})
	changed := d.Switch(c.selected)
	var from, to UplinkSettings
	if changed {
		c.env.Log("switch uplink", "from", c.selected, "to", d.Selected, "reason", d.Reason, "trigger", trigger)
		if l := c.link(c.selected); l != nil {
			from = l.set
		}
		if l := c.link(d.Selected); l != nil {
			to = l.set
		}
		c.selected = d.Selected
		c.counters.Switches++
	}
	c.applyRoutes(d.Reason)
	if changed {
		c.env.Switched(from, to, switchKind(from, to, trigger), d.Reason)
	}
	c.runFlushes()
	c.schedule(now)
}

func switchKind(from, to UplinkSettings, trigger string) string {
	switch {
	case trigger == "preference":
		return "preference"
	case from.Name == "":
		return "start"
	case to.Name == "":
		return "lost"
	case to.Priority < from.Priority:
		return "failback"
	}
	return "failover"
}

// desired is the routing state for the current uplinks.
func (c *Controller) desired() route.Desired {
	var d route.Desired
	for _, l := range c.links {
		s := l.m.Snapshot()
		p, ok := firstAddr(s.Device)
		if !s.State.Up() || !ok {
			continue
		}
		d.Uplinks = append(d.Uplinks, route.Uplink{Name: l.set.Name, Slot: l.slot, Device: l.set.Device,
			Addr: p, OtherAddrs: append(slices.Clone(s.Device.Addrs[1:]), s.Device.Deprecated...), Gateway: s.Device.Gateway})
	}
	if slices.ContainsFunc(d.Uplinks, func(u route.Uplink) bool { return u.Name == c.selected }) {
		d.Selected = c.selected
	}
	return d
}

// applyRoutes makes the kernel match the desired state when it changed
// (every probe result and traffic sample ends here: most change nothing),
// or after a change by someone else or an error.
func (c *Controller) applyRoutes(why string) {
	want := c.desired()
	if c.applied != nil && sameDesired(*c.applied, want) {
		return
	}
	if err := c.router.Apply(want); err != nil {
		c.counters.RouteErrors++
		c.routeErr, c.applied = true, nil
		c.env.Log("route update failed; will retry", "err", err.Error(), "reason", why)
		c.env.WakeAt(c.env.Now().Add(time.Second))
		return
	}
	c.routeErr, c.applied = false, &want
}

func sameDesired(a, b route.Desired) bool {
	return a.Equal(b)
}

// schedule starts due rounds and asks to be woken for the next one.
func (c *Controller) schedule(now time.Time) {
	var next time.Time
	cur := c.link(c.selected)
	// Once the in-use uplink is suspect (a failed round), the standbys are
	// proven afresh, once, so a failover goes to one known to work now,
	// however rarely they are probed while idle.
	var recheck time.Time
	if cur != nil {
		if s := cur.m.Snapshot(); s.Fails == 0 || s.State == uplink.ItfUpSF {
			cur.suspect = time.Time{}
		} else if cur.suspect.IsZero() {
			cur.suspect = s.LastProbeEnd // the streak's first failure
		}
		recheck = cur.suspect
	}
	for _, l := range c.links {
		iv := c.set.Intervals
		if l.set.ProbeInterval > 0 {
			iv.InUse = l.set.ProbeInterval
		}
		role := uplink.Role{Kind: l.set.Kind, InUse: l == cur,
			WantsBack:  cur != nil && l != cur && c.priority(l) < c.priority(cur),
			Floor:      c.floor(l),
			Unanswered: l.unanswered}
		if l != cur {
			role.Recheck = recheck
		}
		if l.probing {
			continue // the round's result reschedules
		}
		at, ok := l.m.NextProbe(l.lastStart, role, iv)
		if !ok {
			continue
		}
		if !at.After(now) {
			c.startProbe(l, now)
			continue
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	for _, l := range c.links {
		if l.held != nil && (next.IsZero() || l.heldUntil.Before(next)) {
			next = l.heldUntil
		}
	}
	if !c.flapWake.IsZero() && (next.IsZero() || c.flapWake.Before(next)) {
		next = c.flapWake
	}
	if !next.IsZero() {
		c.env.WakeAt(next)
	}
}

// floor is the least interval between the uplink's routine rounds that
// keeps them within this family's share of its budget of its current role.
func (c *Controller) floor(l *link) time.Duration {
	budget := l.set.ProbeBudgetStandby
	if l.set.Name == c.selected {
		budget = l.set.ProbeBudget
	} else if l.limited {
		return lastResortFloor
	}
	n := 1
	if c.set.Sharers != nil {
		n = max(c.set.Sharers(l.set.Name), 1)
	}
	return uplink.BudgetFloor(l.set.ProbeCost, budget/float64(n))
}

// Probed says whether the uplink is up in the controller's family: its
// routine rounds then spend (a share of) the uplink's probe budget.
func (c *Controller) Probed(name string) bool {
	l := c.link(name)
	return l != nil && l.m.State().Up()
}

// priority is the uplink's priority for the selector: an uplink over its monthly limit
// (limit_action last_resort) comes after every other, so it carries the traffic only
// while nothing else of its tier (proven, unknown, failing) is up.
func (c *Controller) priority(l *link) int {
	if l.limited {
		return l.set.Priority + lastResortPriority
	}
	return l.set.Priority
}

// lastResortPriority is above every configurable priority (1-99).
const lastResortPriority = 1000

// lastResortFloor keeps an uplink over its monthly limit from routine
// rounds while it is not in use: it keeps the state its last rounds gave
// it, and is proven afresh only when the in-use uplink fails a round.
const lastResortFloor = 100 * 365 * 24 * time.Hour // about never

// SetLimited says whether the uplink is over its monthly limit: it is then
// used only as a last resort, or not at all (UplinkSettings.LimitOff).
func (c *Controller) SetLimited(name string, on bool) {
	l := c.link(name)
	if l == nil || l.limited == on {
		return
	}
	l.limited = on
	now := c.env.Now()
	c.apply(l, now, c.support(l))
	c.decide(now, "monthly limit")
}

// support is the uplink's SupportEvent, saying why when its monthly limit
// switched it off (the log's reason: not the configuration).
func (c *Controller) support(l *link) uplink.SupportEvent {
	e := uplink.SupportEvent{Supported: c.supported(l)}
	if l.set.Enabled && !e.Supported {
		e.Why = "over its monthly limit (limit_action off)"
	}
	return e
}

// supported: enabled in the configuration, and not switched off by its
// monthly limit.
func (c *Controller) supported(l *link) bool {
	return l.set.Enabled && !(l.limited && l.set.LimitOff)
}

func (c *Controller) startProbe(l *link, now time.Time) {
	s := l.m.Snapshot()
	p, _ := firstAddr(s.Device)
	timeout := l.m.ProbeTimeout(c.set.ProbeTimeout, c.set.ProbeTimeoutMax)
	if !l.unanswered.IsZero() {
		c.env.Log("traffic sent went unanswered: probing now", "network", l.set.Name, "device", l.set.Device,
			"sent_ago", now.Sub(l.unanswered).Round(time.Millisecond).String())
		l.unanswered = time.Time{} // this round judges it
		l.byUnanswered = true
	}
	l.probing, l.lastStart = true, now
	l.rounds++
	c.counters.Probes++
	c.env.StartProbe(l.set.Name, l.set.Device, p.Addr(), timeout, l.m.ProbeHedge(timeout))
}

// firstAddr is the address an uplink's probes, capture and source rule use:
// the lowest of the family's view (the machine sees only its family's).
func firstAddr(d uplink.Device) (netip.Prefix, bool) {
	if len(d.Addrs) == 0 {
		return netip.Prefix{}, false
	}
	return d.Addrs[0], true
}

// Family returns the address family the controller serves.
func (c *Controller) Family() uplink.Family { return c.set.Family }

// Selected returns the in-use uplink's name, "" if none.
func (c *Controller) Selected() string { return c.selected }

// View is one uplink for status.
type View struct {
	Settings UplinkSettings
	Family   uplink.Family // the controller's
	uplink.Snapshot
	InUse bool
	// ProbeRounds counts the rounds started; ProbeBytes is what they cost
	// (rounds x Settings.ProbeCost); ProbeFloor is the least interval
	// between routine rounds its budget allows now.
	ProbeRounds uint64
	ProbeBytes  uint64
	ProbeFloor  time.Duration
	Limited     bool // over its monthly limit
}

// Views returns every configured uplink's state, in configuration order.
func (c *Controller) Views() []View {
	out := make([]View, 0, len(c.links))
	for _, l := range c.links {
		out = append(out, View{Settings: l.set, Family: c.set.Family, Snapshot: l.m.Snapshot(), InUse: l.set.Name == c.selected, ProbeRounds: l.rounds,
			ProbeBytes: l.rounds * uint64(max(l.set.ProbeCost, 0)), ProbeFloor: c.floor(l), Limited: l.limited})
	}
	return out
}

// Counters returns the decision counters.
func (c *Controller) Counters() Counters { return c.counters }

// NetworkType is attribute 65008's value: the in-use uplink's kind, or -1.
func (c *Controller) NetworkType() int {
	if l := c.link(c.selected); l != nil {
		return int(l.set.Kind)
	}
	return -1
}
