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
	// WalledGarden forwards DNS (port 53) only and drops everything else, as an uplink
	// whose operator answers names but lets nothing else through.
	WalledGarden bool
	// BlockTCPPort, if set, drops forwarded TCP to and from this port only (a dead service
	// on a live upstream).
	BlockTCPPort int
	// Family, 4 or 6, limits the fault to that family's traffic (IPv6 dead upstream while
	// IPv4 works); 0 is both.
	Family int
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
	switch {
	case f.WalledGarden && rule == "":
		rule = "meta l4proto { udp, tcp } th dport 53 accept\n\t\tmeta l4proto { udp, tcp } th sport 53 accept\n\t\tdrop"
	case f.BlockTCPPort > 0 && rule == "":
		rule = fmt.Sprintf("tcp dport %d drop\n\t\ttcp sport %d drop", f.BlockTCPPort, f.BlockTCPPort)
	case f.WalledGarden || f.BlockTCPPort > 0:
		return fmt.Errorf("testbed: fault %+v: combine WalledGarden or BlockTCPPort with nothing else", f)
	}
	switch f.Family {
	case 0:
	case 4, 6:
		if rule != "" {
			fam := map[int]string{4: "ipv4", 6: "ipv6"}[f.Family]
			rule = "meta nfproto " + fam + " " + strings.ReplaceAll(rule, "\n\t\t", "\n\t\tmeta nfproto "+fam+" ")
		}
	default:
		return fmt.Errorf("testbed: fault family %d: want 0, 4 or 6", f.Family)
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
	cmds := []string{"link set todev " + state}
	if up && u.Gateway6.IsValid() {
		// The kernel drops link-local addresses when a link goes down, whatever
		// keep_addr_on_down says; the router's fe80::1 comes back with the cable.
		cmds = append(cmds, "addr replace "+u.Gateway6.String()+"/64 dev todev")
	}
	return u.Router.IP(cmds...)
}

// TrackConnections gives the device the connection tracking a stock OpenWrt firewall
// always has (fw4's rules match on ct state), without filtering anything: in a namespace
// without rules that need it the kernel tracks no connections at all, and connmgr -d adds
// none.
func (w *World) TrackConnections() error {
	return w.Device.Nft("table inet stockfw {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tct state established accept\n\t}\n}\n")
}
