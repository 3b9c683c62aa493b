// Package uplink owns the per-uplink state machine: it turns what is known
// about one uplink (its device as netlink reports it, passive liveness:
// replies to its connections that conntrack accepted, results of active
// probes) into one of the seed's states (ITFDOWN_SU ... ITFUP_SF), with
// hysteresis on probe results. Passive evidence can delay a probe and
// clear a failed one only if it came after that failure; it never
// outvotes a failure by itself nor brings an uplink back from ITFUP_SF.
// It is pure: every input carries its time, nothing here reads a clock or
// touches the OS.
package uplink

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// State is an uplink's state, numbered as in the seed document; the numbers
// are part of the API (status, attributes).
type State int

// The states of DESIGN.md §2.
const (
	ItfDownSU    State = 0 // init: nothing known yet
	ItfDownSX    State = 1 // device exists, but no carrier, address or default route
	ItfNotSuppSX State = 2 // not supported: no such device, or disabled in configuration
	ItfUpSU      State = 3 // up, service unknown (not yet proven)
	ItfUpSS      State = 4 // up, cloud reachable (proven)
	ItfUpSF      State = 5 // up, cloud unreachable (failing)
)

var stateNames = [...]string{"ITFDOWN_SU", "ITFDOWN_SX", "ITFNOTSUPP_SX", "ITFUP_SU", "ITFUP_SS", "ITFUP_SF"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Up reports whether the uplink can carry traffic (one of the ITFUP states).
func (s State) Up() bool { return s == ItfUpSU || s == ItfUpSS || s == ItfUpSF }

// Kind is the type of an uplink; the values are those of attribute 65008.
type Kind int

// Uplink kinds (attribute 65008 values).
const (
	Ethernet Kind = 0
	WiFi     Kind = 1
	Cellular Kind = 2
)

func (k Kind) String() string {
	switch k {
	case Ethernet:
		return "ethernet"
	case WiFi:
		return "wifi"
	case Cellular:
		return "cellular"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Params are the hysteresis settings.
type Params struct {
	// FailCount is how many consecutive failed probes (none cleared by
	// passive evidence that came after it) turn a proven or unknown
	// uplink into ITFUP_SF.
	FailCount int
	// RecoverCount is how many consecutive successes turn ITFUP_SF back
	// into ITFUP_SS (and, for the selector, make a fail-back allowed).
	RecoverCount int
}

func (p Params) normalized() Params {
	if p.FailCount < 1 {
		p.FailCount = 1
	}
	if p.RecoverCount < 1 {
		p.RecoverCount = 1
	}
	return p
}

// Family is an address family an uplink may carry. Each family of an uplink
// has its own state machine, probes and route (DESIGN.md §5): the machine
// sees Device.OfFamily(f).
type Family int

// The two families; the numbers are the IP versions.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return fmt.Sprintf("Family(%d)", int(f))
}

// FamilyOf returns a's family.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return IPv4
	}
	return IPv6
}

// Device is a full snapshot of what the kernel says about the uplink's
// device. Netlink monitoring delivers whole snapshots, so a resync after a
// lost event is no different from an ordinary change.
type Device struct {
	Present bool // the device exists
	AdminUp bool // IFF_UP
	Carrier bool // lower layer up
	// Addrs are the device's usable global unicast addresses with their
	// prefixes, both families, sorted (IPv4 first). IPv6 ones exclude
	// tentative, deprecated and DAD-failed addresses.
	Addrs []netip.Prefix
	// Deprecated are the device's global IPv6 addresses whose preferred
	// lifetime is over but which are still valid, sorted: they make no
	// uplink up and source no probe, but the connections already using
	// them keep their source rules (and their conntrack entries).
	Deprecated []netip.Prefix
	// HasDefault says an IPv4 default route through the device exists in
	// the main table (installed by netifd with the uplink's metric).
	HasDefault bool
	// Gateway is that route's next hop; invalid for a point-to-point
	// link whose default route has no gateway.
	Gateway netip.Addr
	// HasDefault6 and Gateway6 are the same for IPv6: a default route from
	// an RA (proto ra) or netifd (DHCPv6, static); the gateway is usually
	// link-local (without zone: it is always on this device).
	HasDefault6 bool
	Gateway6    netip.Addr
	// Routers and Routers6 are the gateways of all the family's default
	// routes through the device, best first (Gateway and Gateway6 are the
	// first): a link may have several routers (two CPEs, a rogue one
	// advertising itself), and a family's controller routes through the one
	// its probes prove (failover's router choice), not blindly the best.
	Routers, Routers6 []netip.Addr
}

// OfFamily returns the device as one family sees it: only that family's
// addresses, and that family's default route in HasDefault and Gateway
// (HasDefault6 and Gateway6 cleared). The state machine of a family runs
// on this view.
func (d Device) OfFamily(f Family) Device {
	v := Device{Present: d.Present, AdminUp: d.AdminUp, Carrier: d.Carrier}
	for _, p := range d.Addrs {
		if FamilyOf(p.Addr()) == f {
			v.Addrs = append(v.Addrs, p)
		}
	}
	for _, p := range d.Deprecated {
		if FamilyOf(p.Addr()) == f {
			v.Deprecated = append(v.Deprecated, p)
		}
	}
	if f == IPv6 {
		v.HasDefault, v.Gateway, v.Routers = d.HasDefault6, d.Gateway6, d.Routers6
	} else {
		v.HasDefault, v.Gateway, v.Routers = d.HasDefault, d.Gateway, d.Routers
	}
	return v
}

// IPv4 returns the device's first IPv4 address, if any.
func (d Device) IPv4() (netip.Prefix, bool) {
	for _, p := range d.Addrs {
		if p.Addr().Is4() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

// missing names what keeps the device from carrying traffic, "" if nothing.
func (d Device) missing() string {
	switch {
	case !d.Present:
		return "device absent"
	case !d.AdminUp:
		return "administratively down"
	case !d.Carrier:
		return "no carrier"
	case len(d.Addrs) == 0:
		return "no address"
	case !d.HasDefault:
		return "no default route"
	}
	return ""
}

func (d Device) equalAddrs(o Device) bool {
	return slices.Equal(d.Addrs, o.Addrs) && slices.Equal(d.Deprecated, o.Deprecated)
}

// Event is an input of the state machine.
type Event interface{ isEvent() }

// DeviceEvent is a new snapshot of the device.
type DeviceEvent struct{ Device Device }

// AliveEvent is passive evidence: conntrack accepted, in the reply
// direction of a TCP connection this host (or its LAN) opened through the
// uplink, traffic from beyond the uplink's subnet (see package capture for
// exactly what counts). The evidence arrived at some time after Since (and
// before the event is handled): Since is what is compared with a failed
// probe, so a reply that may have arrived before the probe failed never
// outvotes it.
type AliveEvent struct{ Since time.Time }

// ProbeEvent is the result of an active probe round.
type ProbeEvent struct{ Result ProbeResult }

// SupportEvent enables or disables the uplink (configuration).
type SupportEvent struct {
	Supported bool
	// Why says what took support away (default: "disabled by configuration").
	Why string
}

func (DeviceEvent) isEvent()  {}
func (AliveEvent) isEvent()   {}
func (ProbeEvent) isEvent()   {}
func (SupportEvent) isEvent() {}

// ProbeResult is what one probe round found.
type ProbeResult struct {
	Started time.Time     // when the round began
	OK      bool          // the echo came back (or ICMP reply, or HTTP 204)
	RTT     time.Duration // round-trip time of the successful attempt
	Err     string        // why it failed
	// Intercepted says the failed probe's connection was accepted in
	// the probe host's name but the right answer never came: whatever
	// accepted it (a captive portal, a transparent proxy) may answer
	// every connection through the uplink in the cloud's name, so
	// passive evidence cannot clear this failure.
	Intercepted bool
}

// Transition is the outcome of one event.
type Transition struct {
	From, To State
	Reason   string
	// GatewayChanged / AddrsChanged say the routing facts of an up uplink
	// changed even though the state did not (DHCP renewals, roaming).
	GatewayChanged bool
	AddrsChanged   bool
	// Counted says the event was a probe result or liveness that counted
	// (was not stale or discounted).
	Counted bool
}

// Changed reports whether the state changed.
func (t Transition) Changed() bool { return t.From != t.To }

// Machine is the state machine of one uplink. The zero value is not
// usable; use New.
type Machine struct {
	params    Params
	supported bool
	state     State
	since     time.Time
	upSince   time.Time // start of the current up period; older probes are stale
	dev       Device
	fails     int // consecutive counted failures
	oks       int // consecutive successes (probe or liveness)
	lastAlive time.Time
	lastFail  time.Time // when the last failed probe was recorded
	// intercepted: one of the current failures was an intercepted probe
	// (ProbeResult.Intercepted); replies clear none of them until a probe
	// succeeds.
	intercepted bool
	lastProbe   ProbeResult
	lastEnd     time.Time // when lastProbe was recorded
	srtt        time.Duration

	probesOK, probesFailed, transitions uint64
}

// New returns a machine in ITFDOWN_SU.
func New(now time.Time, p Params) *Machine {
	return &Machine{params: p.normalized(), supported: true, state: ItfDownSU, since: now}
}

// SetParams changes the hysteresis settings (configuration reload).
func (m *Machine) SetParams(p Params) { m.params = p.normalized() }

// State returns the current state.
func (m *Machine) State() State { return m.state }

// Handle applies one event at time now.
func (m *Machine) Handle(now time.Time, ev Event) Transition {
	t := Transition{From: m.state, To: m.state}
	switch e := ev.(type) {
	case DeviceEvent:
		m.device(now, e.Device, &t)
	case SupportEvent:
		m.support(now, e.Supported, e.Why, &t)
	case AliveEvent:
		m.alive(now, e.Since, &t)
	case ProbeEvent:
		m.probe(now, e.Result, &t)
	default:
		t.Reason = fmt.Sprintf("ignored unknown event %T", ev)
	}
	t.To = m.state
	return t
}

func (m *Machine) set(now time.Time, s State, t *Transition, reason string) {
	t.Reason = reason
	if s == m.state {
		return
	}
	m.state = s
	m.since = now
	m.transitions++
}

func (m *Machine) support(now time.Time, on bool, why string, t *Transition) {
	if on == m.supported {
		t.Reason = "support unchanged"
		return
	}
	m.supported = on
	if !on {
		m.resetCounts()
		if why == "" {
			why = "disabled by configuration"
		}
		m.set(now, ItfNotSuppSX, t, why)
		return
	}
	// Re-enabled: judge the device afresh.
	m.state = ItfDownSU
	m.device(now, m.dev, t)
	if t.Reason != "" {
		t.Reason = "enabled by configuration: " + t.Reason
	}
}

func (m *Machine) resetCounts() {
	m.fails, m.oks, m.intercepted = 0, 0, false
}

func (m *Machine) device(now time.Time, d Device, t *Transition) {
	old := m.dev
	d.Addrs = slices.Clone(d.Addrs)
	slices.SortFunc(d.Addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	d.Deprecated = slices.Clone(d.Deprecated)
	slices.SortFunc(d.Deprecated, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	m.dev = d
	if !m.supported {
		t.Reason = "disabled by configuration"
		return
	}
	why := d.missing()
	switch {
	case !d.Present:
		if m.state != ItfNotSuppSX {
			m.resetCounts()
			m.set(now, ItfNotSuppSX, t, "device absent")
		}
	case why != "":
		if m.state != ItfDownSX {
			m.resetCounts()
			m.set(now, ItfDownSX, t, why)
		}
	case !m.state.Up():
		m.resetCounts()
		m.upSince = now
		m.set(now, ItfUpSU, t, "carrier, address and default route present")
	default:
		// Still up: the routing facts may have changed (DHCP gave a new
		// gateway or address). The state stays: the probes that follow
		// judge the new path, and the daemon re-applies routes.
		if old.Gateway != d.Gateway {
			t.GatewayChanged = true
			t.Reason = fmt.Sprintf("gateway changed from %v to %v", old.Gateway, d.Gateway)
		}
		if !old.equalAddrs(d) {
			t.AddrsChanged = true
			t.Reason = strings.TrimPrefix(t.Reason+"; addresses changed", "; ")
		}
	}
	if m.state.Up() != t.From.Up() {
		// Entering or leaving the up states changes every routing fact.
		t.GatewayChanged, t.AddrsChanged = true, true
	}
}

// alive takes passive evidence. It never outvotes a failed probe unless
// it arrived after that probe's failure was recorded: a reply that may
// have been in flight while the probe failed proves nothing about the
// failure. It proves a new uplink (ITFUP_SU) and clears a suspect one's
// failures, but never recovers an uplink from ITFUP_SF: only the probes
// that judged it dead judge it alive again (its rounds come quickly).
// In every state it defers the routine probes, within a bound (NextProbe).
func (m *Machine) alive(now, since time.Time, t *Transition) {
	if !m.state.Up() {
		t.Reason = "traffic while not up ignored"
		return
	}
	if since.After(now) {
		since = now
	}
	if m.lastAlive.Before(now) {
		m.lastAlive = now
	}
	switch {
	case m.state == ItfUpSF:
		t.Reason = "replies received; recovery is for the probes to prove"
	case since.Before(m.upSince):
		t.Reason = "replies received that may predate the uplink coming up ignored"
	case m.fails > 0 && m.intercepted:
		t.Reason = "replies received while a probe was intercepted (a portal may answer in the cloud's name): they do not outvote it"
	case m.fails > 0 && !since.After(m.lastFail):
		t.Reason = "replies received that may predate the last failed probe: they do not outvote it"
	default:
		m.success(now, t, "received replies")
	}
}

func (m *Machine) success(now time.Time, t *Transition, what string) {
	t.Counted = true
	m.fails, m.intercepted = 0, false
	m.oks++
	switch m.state {
	case ItfUpSU:
		m.set(now, ItfUpSS, t, what+": proven")
	case ItfUpSF:
		if m.oks >= m.params.RecoverCount {
			m.set(now, ItfUpSS, t, fmt.Sprintf("%s: %d consecutive successes", what, m.oks))
		} else {
			t.Reason = fmt.Sprintf("%s: %d of %d successes to recover", what, m.oks, m.params.RecoverCount)
		}
	default:
		t.Reason = what
	}
}

func (m *Machine) probe(now time.Time, r ProbeResult, t *Transition) {
	if !m.state.Up() || r.Started.Before(m.upSince) {
		t.Reason = "stale probe result ignored"
		return
	}
	m.lastProbe, m.lastEnd = r, now
	if r.OK {
		m.probesOK++
		m.observeRTT(r.RTT)
		m.success(now, t, "probe succeeded")
		return
	}
	m.probesFailed++
	// A failed probe always counts, whatever traffic came meanwhile:
	// only replies that arrive after it can clear it (alive).
	m.lastFail = now
	t.Counted = true
	m.oks = 0
	m.fails++
	m.intercepted = m.intercepted || r.Intercepted
	reason := fmt.Sprintf("probe failed (%s): %d of %d failures", r.Err, m.fails, m.params.FailCount)
	if m.state != ItfUpSF && m.fails >= m.params.FailCount {
		m.set(now, ItfUpSF, t, reason)
		return
	}
	t.Reason = reason
}

// observeRTT keeps a smoothed RTT (as TCP does, gain 1/8) so the probe
// timeout can follow slow links.
func (m *Machine) observeRTT(rtt time.Duration) {
	if rtt <= 0 {
		return
	}
	if m.srtt == 0 {
		m.srtt = rtt
		return
	}
	m.srtt += (rtt - m.srtt) / 8
}

// ProbeTimeout returns the time a probe round may take: base, or four
// smoothed RTTs on a slow link, capped at max.
func (m *Machine) ProbeTimeout(base, max time.Duration) time.Duration {
	t := base
	if 4*m.srtt > t {
		t = 4 * m.srtt
	}
	if max > 0 && t > max {
		t = max
	}
	return t
}

// Snapshot is a read-only view of the machine for selection and status.
type Snapshot struct {
	State        State
	Since        time.Time // when the current state began
	Device       Device
	Fails        int // consecutive counted failures
	Successes    int // consecutive successes
	LastProbe    ProbeResult
	LastProbeEnd time.Time
	LastAlive    time.Time
	SRTT         time.Duration
	ProbesOK     uint64
	ProbesFailed uint64
	Transitions  uint64
}

// Snapshot returns the machine's current view.
func (m *Machine) Snapshot() Snapshot {
	d := m.dev
	d.Addrs = slices.Clone(d.Addrs)
	d.Deprecated = slices.Clone(d.Deprecated)
	return Snapshot{
		State: m.state, Since: m.since, Device: d, Fails: m.fails, Successes: m.oks,
		LastProbe: m.lastProbe, LastProbeEnd: m.lastEnd, LastAlive: m.lastAlive, SRTT: m.srtt,
		ProbesOK: m.probesOK, ProbesFailed: m.probesFailed, Transitions: m.transitions,
	}
}
