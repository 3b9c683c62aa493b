package daemon

import "fmt"

// Notice is something the outside is told about: it becomes a ubus event of that name and a
// notification to the subscribers of the connmgr object. Data holds only strings, bools,
// integers and nested map[string]any, so any bus can carry it.
type Notice struct {
	Name string // connmgr.network, connmgr.interface, connmgr.wifi
	Data map[string]any
}

// noticeSink is a component that passes notices on (the bus).
type noticeSink interface {
	notice(n Notice)
}

// announce hands a notice to every component that passes notices on. It runs on the loop.
func (d *Daemon) announce(n Notice) {
	d.log.Debug("notice", "name", n.Name, "data", n.Data)
	for _, c := range d.components {
		if s, ok := c.(noticeSink); ok {
			s.notice(n)
		}
	}
}

// preferenceSink is a component that acts on the preferred network type (the selector).
type preferenceSink interface {
	preferenceChanged(networkType int)
}

// Network types of attribute 65008.
const (
	NetworkNone     = -1
	NetworkEthernet = 0
	NetworkWLAN     = 1
	NetworkWAN      = 2
)

// SetPreferredNetworkType sets (0 Ethernet, 1 WLAN, 2 WAN) or clears (-1, automatic) the
// preferred network type: the selector uses that type whenever it is proven. Out-of-range
// values change nothing. It runs on the loop (use Do from elsewhere).
func (d *Daemon) SetPreferredNetworkType(v int) error {
	if v < NetworkNone || v > NetworkWAN {
		return fmt.Errorf("network type %d out of range -1..2", v)
	}
	if v == d.preferred {
		return nil
	}
	d.log.Info("preferred network type changed", "from", d.preferred, "to", v)
	d.preferred = v
	for _, c := range d.components {
		if s, ok := c.(preferenceSink); ok {
			s.preferenceChanged(v)
		}
	}
	return nil
}

// PreferredNetworkType is the current preference, -1 for automatic.
func (d *Daemon) PreferredNetworkType() int { return d.preferred }
