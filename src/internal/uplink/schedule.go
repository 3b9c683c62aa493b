package uplink

import (
	"math"
	"time"
)

// Intervals configure how often uplinks are probed.
type Intervals struct {
	InUse    time.Duration // probe_interval: the uplink carrying the default route, while idle
	Standby  time.Duration // probe_interval_standby: kept proven for a failover
	Failing  time.Duration // probe_interval_failing: suspect, failing or recovering
	Cellular time.Duration // cellular_probe_interval: a cellular standby (costs money)
}

// Role is what the uplink does for the probe schedule, and the evidence
// about it that the controller holds.
type Role struct {
	Kind  Kind
	InUse bool
	// WantsBack says the selector would fail back to this uplink once it
	// has enough consecutive successes, so they are gathered quickly.
	WantsBack bool
	// Floor is the least time between two routine rounds, set by what
	// the uplink's bytes cost (its probe budget; 0: no floor). Rounds
	// that confirm something are not bound by it.
	Floor time.Duration
	// Unanswered is when traffic the hub sent through the uplink went
	// out that got no reply within its bound (zero: none pending): a
	// round that started before it is no evidence about it, so one
	// starts at once unless replies came after it.
	Unanswered time.Time
	// Recheck asks for a round if the last one started before it (zero:
	// none): a standby is proven afresh when the in-use uplink becomes
	// suspect, so a failover goes to an uplink known to work now.
	Recheck time.Time
}

// NextProbe says when the next probe round should start, given when the
// last one started (zero if never); ok is false when the uplink is not up
// and must not be probed.
//
// Probing follows evidence. Traffic the hub sent that went unanswered
// (Role.Unanswered) starts a round at once. Passive evidence (replies
// received) defers a routine round, but by at most maxDefer intervals: a
// busy link is probed rarely, never not at all, so evidence can delay a
// probe but never replace it. An idle uplink gets routine rounds at its
// interval, or rarer when its budget says so (Role.Floor). Rounds that
// confirm something (a new, suspect, failing or recovering uplink) are
// never deferred.
func (m *Machine) NextProbe(last time.Time, r Role, iv Intervals) (at time.Time, ok bool) {
	if !m.state.Up() {
		return time.Time{}, false
	}
	if !last.IsZero() && !last.Before(m.upSince) {
		for _, ev := range []time.Time{r.Unanswered, r.Recheck} {
			// Evidence newer than the last round, not answered by replies
			// since: that round says nothing about it.
			if !ev.IsZero() && last.Before(ev) && !m.lastAlive.After(ev) {
				return ev, true
			}
		}
	}
	var every time.Duration
	fast := true // fast rounds confirm something: traffic does not defer them
	switch {
	case m.state == ItfUpSU:
		every = iv.Failing // prove a new uplink quickly
	case m.fails > 0 && m.state != ItfUpSF:
		every = iv.Failing // suspect: confirm or clear quickly
	case m.state == ItfUpSF && m.oks > 0:
		every = iv.Failing // recovering: confirm quickly
	case m.state == ItfUpSS && r.WantsBack && m.oks < m.params.RecoverCount:
		every = iv.Failing
	case r.Kind == Cellular && !r.InUse:
		every, fast = max(iv.Cellular, r.Floor), false
	case r.InUse:
		every, fast = max(iv.InUse, r.Floor), false
	case m.state == ItfUpSF:
		// A dead standby: often enough that its return is seen within
		// about a second, without hammering it (or its budget).
		every = max(min(iv.InUse, iv.Standby, time.Second), r.Floor)
	default:
		every, fast = max(iv.Standby, r.Floor), false
	}
	ref := last
	if !fast && m.lastAlive.After(ref) && !last.IsZero() {
		ref = m.lastAlive
		// Unbounded when maxDefer intervals overflow a Duration (a floor of
		// a century): the bound would fall in the past, a round at once.
		if every <= math.MaxInt64/maxDefer {
			if bound := last.Add(maxDefer * every); ref.After(bound) {
				ref = bound
			}
		}
	}
	if ref.IsZero() || ref.Before(m.upSince) {
		return m.upSince, true
	}
	return ref.Add(every), true
}

// maxDefer bounds how many intervals passive evidence may defer a routine
// probe round: on a busy link the in-use uplink is still probed every
// (maxDefer+1) intervals, which costs little and catches what replies
// cannot tell (a portal answering in the cloud's name).
const maxDefer = 3

// BudgetFloor is the least interval between routine rounds that keeps
// rounds of cost bytes within budget bytes per hour (0: no budget).
func BudgetFloor(cost int, perHour float64) time.Duration {
	if perHour <= 0 || cost <= 0 {
		return 0
	}
	f := float64(cost) / perHour * float64(time.Hour)
	if f > float64(maxFloor) {
		return maxFloor // a budget of a few bytes a month: about never
	}
	// Up to the second (to the millisecond below one: a generous budget must
	// not hold rounds to one a second whatever probe_interval says): rounding
	// down would spend a little over the budget.
	unit := time.Second
	if f < float64(time.Second) {
		unit = time.Millisecond
	}
	return time.Duration(math.Ceil(f/float64(unit))) * unit
}

// maxFloor bounds BudgetFloor (a Duration holds about 292 years).
const maxFloor = 100 * 365 * 24 * time.Hour

// ProbeHedge is the delay between attempts of a round of the given
// timeout: a sixth of it, or one and a half smoothed RTTs on a slow link,
// so a link with a long RTT is not sent needless extra attempts.
func (m *Machine) ProbeHedge(timeout time.Duration) time.Duration {
	return max(timeout/6, 3*m.srtt/2)
}
