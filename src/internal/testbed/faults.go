package testbed

import (
	"fmt"
	"strings"
)

// Fault is what a router does to the traffic it forwards between the device and the cloud.
// The zero Fault forwards everything.
type Fault struct {
	// Blackhole drops everything forwarded, both ways, while the link and the gateway
	// stay up: a silently dead upstream.
	Blackhole bool
	// LossPercent drops this share of forwarded packets at random, each way (the kernel
	// here has no netem; nft's numgen does the dice).
	LossPercent int
}

// faultTable is the nft table a router's faults live in.
const faultTable = "testbed_fault"

// SetFault replaces the fault on the router behind uplink dev.
func (w *World) SetFault(dev string, f Fault) error {
	u := w.Uplink(dev)
	if u == nil {
		return fmt.Errorf("testbed: no uplink %s", dev)
	}
	if f.LossPercent < 0 || f.LossPercent > 100 {
		return fmt.Errorf("testbed: loss %d%% out of range", f.LossPercent)
	}
	var b strings.Builder
	// Declaring then deleting makes the script work whether or not the table exists.
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", faultTable, faultTable)
	var rule string
	switch {
	case f.Blackhole || f.LossPercent == 100:
		rule = "drop"
	case f.LossPercent > 0:
		rule = fmt.Sprintf("numgen random mod 100 < %d drop", f.LossPercent)
	}
	if rule != "" {
		fmt.Fprintf(&b, "table inet %s {\n\tchain forward {\n\t\ttype filter hook forward priority -10; policy accept;\n\t\t%s\n\t}\n}\n", faultTable, rule)
	}
	return u.Router.Nft(b.String())
}

// SetCarrier takes the router's end of uplink dev down or up: the device sees its
// interface lose or regain carrier, as when a cable is pulled.
func (w *World) SetCarrier(dev string, up bool) error {
	u := w.Uplink(dev)
	if u == nil {
		return fmt.Errorf("testbed: no uplink %s", dev)
	}
	state := "down"
	if up {
		state = "up"
	}
	return u.Router.IP("link set todev " + state)
}
