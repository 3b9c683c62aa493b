// Package selector owns the choice of the in-use uplink (DESIGN.md §4): a
// proven uplink (ITFUP_SS) beats one that is not, then priority decides
// (Ethernet > Wi-Fi > cellular by default); failing back to a preferred
// uplink waits for consecutive successes so a lossy link does not flap; a
// manual preference (attribute 65008) wins while its uplink is proven.
// Pure: inputs in, a decision with its reason out.
package selector

import (
	"fmt"
	"slices"

	"github.com/afero/af-conn/internal/uplink"
)

// Candidate is one uplink as the selector sees it.
type Candidate struct {
	Name     string
	Kind     uplink.Kind
	Priority int // lower is preferred
	State    uplink.State
	// Successes is the count of consecutive successes (probes or
	// received traffic); a fail-back needs RecoverCount of them.
	Successes int
	// Fresh says the uplink is ITFUP_SU with no verdict yet (its first
	// probe round is out): the in-use uplink is then given that round
	// before a worse proven one takes over, so start-up does not bounce.
	Fresh bool
	// Held says a fail-back to the uplink waits: its default route has
	// been coming and going (failover's route flap hold). It is still
	// used when nothing better is up.
	Held bool
}

// Automatic is the preference value meaning "no manual preference".
const Automatic = -1

// Input is everything one decision depends on.
type Input struct {
	Candidates   []Candidate
	Current      string // name of the in-use uplink, "" if none
	Preference   int    // Automatic, or an uplink.Kind preferred while proven
	RecoverCount int
}

// Decision is the selector's answer.
type Decision struct {
	Selected string // "" when no uplink can carry traffic
	Reason   string
}

// Switch reports whether the decision changes the in-use uplink.
func (d Decision) Switch(current string) bool { return d.Selected != current }

// tier orders states: proven, unknown, failing; others cannot be used.
func tier(s uplink.State) int {
	switch s {
	case uplink.ItfUpSS:
		return 0
	case uplink.ItfUpSU:
		return 1
	case uplink.ItfUpSF:
		return 2
	}
	return -1
}

// better orders candidates by tier, then priority, then kind, then name
// (the last two only make the order total).
func better(a, b Candidate) int {
	if c := tier(a.State) - tier(b.State); c != 0 {
		return c
	}
	if c := a.Priority - b.Priority; c != 0 {
		return c
	}
	if c := int(a.Kind) - int(b.Kind); c != 0 {
		return c
	}
	switch {
	case a.Name < b.Name:
		return -1
	case a.Name > b.Name:
		return 1
	}
	return 0
}

// ValidPreference reports whether v is a value attribute 65008 accepts.
func ValidPreference(v int) bool {
	return v == Automatic || v == int(uplink.Ethernet) || v == int(uplink.WiFi) || v == int(uplink.Cellular)
}

// Select decides which uplink carries the default route.
func Select(in Input) Decision {
	usable := make([]Candidate, 0, len(in.Candidates))
	var cur *Candidate
	for _, c := range in.Candidates {
		if tier(c.State) < 0 {
			continue
		}
		usable = append(usable, c)
	}
	slices.SortFunc(usable, better)
	for i := range usable {
		if usable[i].Name == in.Current {
			cur = &usable[i]
		}
	}
	if len(usable) == 0 {
		if in.Current == "" {
			return Decision{Reason: "no uplink is up"}
		}
		return Decision{Reason: fmt.Sprintf("no uplink is up (%s lost)", in.Current)}
	}
	if in.Preference != Automatic {
		for _, c := range usable {
			if int(c.Kind) == in.Preference && c.State == uplink.ItfUpSS {
				return Decision{Selected: c.Name, Reason: fmt.Sprintf("manual preference for %v, and %s is proven", c.Kind, c.Name)}
			}
		}
	}
	best := usable[0]
	if cur == nil {
		if in.Current == "" {
			return Decision{Selected: best.Name, Reason: fmt.Sprintf("%s is the best uplink (%v)", best.Name, best.State)}
		}
		return Decision{Selected: best.Name, Reason: fmt.Sprintf("%s is down; %s is the best uplink (%v)", in.Current, best.Name, best.State)}
	}
	if best.Name == cur.Name {
		return Decision{Selected: cur.Name, Reason: fmt.Sprintf("%s is still the best uplink (%v)", cur.Name, cur.State)}
	}
	if cur.Fresh && best.Priority > cur.Priority {
		return Decision{Selected: cur.Name, Reason: fmt.Sprintf("keep %s: its first probe is out", cur.Name)}
	}
	if tier(best.State) < tier(cur.State) {
		return Decision{Selected: best.Name, Reason: fmt.Sprintf("%s is %v, %s is %v", best.Name, best.State, cur.Name, cur.State)}
	}
	// Same tier, best has the better priority: a fail-back, to the best
	// one not held.
	switch best.State {
	case uplink.ItfUpSS:
		for _, c := range usable {
			if c.Name == cur.Name || c.State != uplink.ItfUpSS {
				break
			}
			if c.Held {
				continue
			}
			if c.Successes >= in.RecoverCount {
				return Decision{Selected: c.Name, Reason: fmt.Sprintf("fail back to preferred %s after %d consecutive successes", c.Name, c.Successes)}
			}
			return Decision{Selected: cur.Name, Reason: fmt.Sprintf("keep %s: preferred %s has %d of %d successes", cur.Name, c.Name, c.Successes, in.RecoverCount)}
		}
		return Decision{Selected: cur.Name, Reason: fmt.Sprintf("keep %s: preferred %s's default route keeps going (fail-back held)", cur.Name, best.Name)}
	case uplink.ItfUpSU:
		return Decision{Selected: best.Name, Reason: fmt.Sprintf("nothing proven yet; %s has the better priority", best.Name)}
	}
	// All failing: moving between dead uplinks helps nothing.
	return Decision{Selected: cur.Name, Reason: fmt.Sprintf("keep %s: every uplink is failing", cur.Name)}
}

// DefaultPriority is the priority of a kind when configuration sets none:
// Ethernet before Wi-Fi before cellular.
func DefaultPriority(k uplink.Kind) int {
	return 10 * (int(k) + 1)
}
