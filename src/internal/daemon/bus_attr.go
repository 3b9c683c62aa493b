package daemon

import (
	"github.com/afero/af-conn/internal/ubus"
)

// Attribute ids of the Afero attribute registry that connmgr serves (DESIGN.md §9).
const (
	AttrNetworkType   = 65008 // SINT8: in-use type; set = preferred type
	AttrCapabilities  = 65022 // bit 0 Wi-Fi, bit 1 WAN, bit 2 Ethernet
	AttrWiFiState     = 65024 // 0 down, 1 up not confirmed, 2 up and confirmed
	AttrWANState      = 65037
	AttrEthernetState = 65059
)

// attribute is one row of the attribute table: how to read it from a status snapshot and,
// for writable ones, how to set it.
type attribute struct {
	id   int64
	name string
	get  func(st *Status) int64
	// write sets the attribute (already range-checked); nil means read-only.
	write    func(d *Daemon, v int64) error
	min, max int64 // accepted values of write
}

// attributes is the table get_attribute and set_attribute serve; README's attribute table
// says the same.
var attributes = []attribute{
	{id: AttrNetworkType, name: "network_type",
		get: func(st *Status) int64 { return int64(st.NetworkType) },
		write: func(d *Daemon, v int64) error {
			return d.SetPreferredNetworkType(int(v))
		},
		min: NetworkNone, max: NetworkWAN},
	{id: AttrCapabilities, name: "network_capabilities", get: capabilities},
	{id: AttrWiFiState, name: "wifi_state", get: stateOf("wifi")},
	{id: AttrWANState, name: "wan_state", get: stateOf("cellular")},
	{id: AttrEthernetState, name: "ethernet_state", get: stateOf("ethernet")},
}

func findAttribute(id int64) (*attribute, error) {
	for i := range attributes {
		if attributes[i].id == id {
			return &attributes[i], nil
		}
	}
	return nil, errorf(ubus.StatusInvalidArgument, "unknown attribute %d", id)
}

// set checks and applies a value: read-only attributes answer PERMISSION_DENIED, values out
// of range INVALID_ARGUMENT, and in both cases nothing changes.
func (a *attribute) set(d *Daemon, v int64) error {
	if a.write == nil {
		return errorf(ubus.StatusPermissionDenied, "attribute %d (%s) is read-only", a.id, a.name)
	}
	if v < a.min || v > a.max {
		return errorf(ubus.StatusInvalidArgument, "value %d out of range %d..%d for attribute %d (%s)", v, a.min, a.max, a.id, a.name)
	}
	if err := a.write(d, v); err != nil {
		return &statusError{ubus.StatusInvalidArgument, err.Error(), err}
	}
	return nil
}

// reply is the answer of get_attribute and set_attribute.
func (a *attribute) reply(v int64) ubus.Table {
	return ubus.Table{{Name: "id", Value: int32(a.id)}, {Name: "name", Value: a.name}, {Name: "value", Value: int32(v)}}
}

// Uplink state numbers (DESIGN.md §2) the attributes are derived from.
const (
	stateDownSX = 1 // ITFDOWN_SX: device exists, not up
	stateUpSU   = 3 // ITFUP_SU
	stateUpSS   = 4 // ITFUP_SS
	stateUpSF   = 5 // ITFUP_SF
)

// interfaceState maps an uplink state number to the interface-state attributes' value:
// 2 up and confirmed (ITFUP_SS), 1 up but not confirmed (ITFUP_SU, ITFUP_SF), else 0 down.
func interfaceState(stateNum int) int64 {
	switch stateNum {
	case stateUpSS:
		return 2
	case stateUpSU, stateUpSF:
		return 1
	}
	return 0
}

// stateOf is the getter of an interface-state attribute: the best state among the uplinks of
// that type (0 when there is none).
func stateOf(typ string) func(st *Status) int64 {
	return func(st *Status) int64 {
		var best int64
		for _, u := range st.Uplinks {
			if u.Type == typ {
				best = max(best, interfaceState(u.StateNum))
			}
		}
		return best
	}
}

// capabilities is attribute 65022: a bit for each uplink type whose device is known to exist
// (an uplink of that type is in ITFDOWN_SX or one of the ITFUP states). Uplinks that are
// disabled, lack their device (ITFNOTSUPP_SX) or are not assessed yet (ITFDOWN_SU) add nothing.
func capabilities(st *Status) int64 {
	bits := map[string]int64{"wifi": 1 << 0, "cellular": 1 << 1, "ethernet": 1 << 2}
	var v int64
	for _, u := range st.Uplinks {
		switch u.StateNum {
		case stateDownSX, stateUpSU, stateUpSS, stateUpSF:
			v |= bits[u.Type]
		}
	}
	return v
}
