package failover

// How the controllers of the two families combine into one view per uplink (issue 11). Each
// family is judged, selected and routed on its own; what the outside sees as one number per
// uplink, and one in-use uplink, is derived here:
//   - an uplink's state is the best of its families' states (ITFUP_SS > ITFUP_SU > ITFUP_SF >
//     ITFDOWN_SX > ITFDOWN_SU > ITFNOTSUPP_SX): an uplink that carries the cloud's traffic in
//     either family is up and proven, an IPv6-only one included;
//   - the in-use uplink (attribute 65008, status in_use, connmgr.network's old/new) is the
//     IPv4 selection when there is one, else the IPv6 selection: IPv4 is what the hub's cloud
//     connection uses first when both work, and an IPv6-only hub still reports its uplink;
//   - an uplink's single-family fields (address, gateway, last probe, RTT) are those of its
//     primary family: IPv4 when it has an IPv4 address, else IPv6 when it has an IPv6 one,
//     else IPv4 (so they keep their meaning on an IPv4 or dual-stack uplink).

import (
	"time"

	"github.com/afero/af-conn/internal/uplink"
)

// stateRank orders states from worst to best for CombineStates.
var stateRank = map[uplink.State]int{
	uplink.ItfNotSuppSX: 0,
	uplink.ItfDownSU:    1,
	uplink.ItfDownSX:    2,
	uplink.ItfUpSF:      3,
	uplink.ItfUpSU:      4,
	uplink.ItfUpSS:      5,
}

// CombineStates returns an uplink's one state from its families' states: the best of them.
// With no states it is ITFDOWN_SU (nothing known).
func CombineStates(states ...uplink.State) uplink.State {
	best, ok := uplink.ItfDownSU, false
	for _, s := range states {
		if !ok || stateRank[s] > stateRank[best] {
			best, ok = s, true
		}
	}
	return best
}

// CombineSelected returns the in-use uplink of the whole hub from the families' selections:
// IPv4's when it has one, else IPv6's ("" when neither).
func CombineSelected(v4, v6 string) string {
	if v4 != "" {
		return v4
	}
	return v6
}

// Uplink is one uplink as both families see it.
type Uplink struct {
	// Settings are those of the first list's controller (IPv4's: its device may be the clat
	// device of a 464XLAT uplink); Families[i].Settings has each family's.
	Settings UplinkSettings
	// State is CombineStates of the families' states; Since when it began, as far as the
	// families tell: the longest time a family has been in that state.
	State uplink.State
	Since time.Time
	// InUse says this uplink is the hub's in-use one (CombineSelected).
	InUse bool
	// Primary is the family whose address, gateway and probe stand for the uplink.
	Primary uplink.Family
	// Families are the per-family views, IPv4 first; a family without a controller is absent.
	Families []View
}

// Family returns the view of family f, ok false when there is none.
func (u Uplink) Family(f uplink.Family) (View, bool) {
	for _, v := range u.Families {
		if v.Family == f {
			return v, true
		}
	}
	return View{}, false
}

// PrimaryFamily says whose single-family fields stand for an uplink (see the file comment).
func PrimaryFamily(views ...View) uplink.Family {
	for _, f := range []uplink.Family{uplink.IPv4, uplink.IPv6} {
		for _, v := range views {
			if v.Family == f && len(v.Device.Addrs) > 0 {
				return f
			}
		}
	}
	return uplink.IPv4
}

// Combine joins the views of the families' controllers (each in configuration order, as
// Views returns them) into one view per uplink, in the order of the first list. selected is
// CombineSelected of the controllers' selections.
func Combine(selected string, perFamily ...[]View) []Uplink {
	if len(perFamily) == 0 {
		return nil
	}
	out := make([]Uplink, 0, len(perFamily[0]))
	for _, first := range perFamily[0] {
		u := Uplink{Settings: first.Settings, InUse: first.Settings.Name == selected && selected != ""}
		var states []uplink.State
		for _, views := range perFamily {
			for _, v := range views {
				if v.Settings.Name == first.Settings.Name {
					u.Families = append(u.Families, v)
					states = append(states, v.State)
				}
			}
		}
		u.State = CombineStates(states...)
		for _, v := range u.Families {
			if v.State == u.State && (u.Since.IsZero() || v.Since.Before(u.Since)) {
				u.Since = v.Since
			}
		}
		u.Primary = PrimaryFamily(u.Families...)
		out = append(out, u)
	}
	return out
}
