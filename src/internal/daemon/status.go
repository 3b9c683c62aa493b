package daemon

import "github.com/afero/af-conn/internal/firewall"

// Status is the daemon's state as `ubus call connmgr status` and `connmgr status` show it.
// Field names are an outside contract: add fields, never rename them.
type Status struct {
	Version string `json:"version"`
	// NetworkType is attribute 65008: -1 none, 0 Ethernet, 1 WLAN, 2 WAN.
	NetworkType int `json:"network_type"`
	// InUse is the network (UCI section) of the uplink carrying the default route, or "":
	// the IPv4 default route's when there is one, else the IPv6 default route's (NetworkType
	// is that uplink's type). InUseDevice is the device that default route goes through.
	InUse       string `json:"in_use"`
	InUseDevice string `json:"in_use_device"`
	// InUseIPv4 and InUseIPv6 are each family's in-use uplink ("" for none): the families are
	// selected one by one, and may be on different uplinks.
	InUseIPv4 string `json:"in_use_ipv4"`
	InUseIPv6 string `json:"in_use_ipv6"`
	// PreferredNetworkType is what set_attribute 65008 asked for; -1 is automatic.
	PreferredNetworkType int            `json:"preferred_network_type"`
	Firewall             FirewallStatus `json:"firewall"`
	Uplinks              []UplinkStatus `json:"uplinks"`
	Counters             Counters       `json:"counters"`
	UptimeSeconds        int64          `json:"uptime"`
	// UsageMonth is the month (UTC, YYYY-MM) of the uplinks' month_rx_bytes and month_tx_bytes.
	UsageMonth string      `json:"usage_month,omitempty"`
	Ubus       *UbusStatus `json:"ubus,omitempty"`
}

// FirewallStatus is the firewall part of Status.
type FirewallStatus struct {
	// Mode is "enabled" or "disabled" (-d or option firewall '0').
	Mode    string `json:"mode"`
	Backend string `json:"backend,omitempty"` // nftables or iptables
	// DNSMode is how learned addresses keep pace with DNS: "hold" (replies held until the
	// pinhole exists), "capture" (replies observed only), or "off".
	DNSMode string `json:"dns_mode,omitempty"`
	// DNSFallback says why DNS extraction is not in hold mode ("" in hold mode).
	DNSFallback string `json:"dns_fallback,omitempty"`
	// DNSRejected counts the DNS replies not trusted, by reason: untrusted_resolver (not a
	// resolver of an uplink), unsolicited, wrong_source, wrong_port, wrong_id, wrong_question,
	// wrong_sequence (TCP), bad_checksum (capture mode; their sum is Counters.ForgedReplies).
	DNSRejected map[string]uint64 `json:"dns_rejected,omitempty"`
	// DNSTrustedResolvers are the resolvers whose replies may open the firewall.
	DNSTrustedResolvers []string `json:"dns_trusted_resolvers,omitempty"`
	// DNSBounds counts what the bounds of DNS extraction did (dnsgate.BoundCounters): queries
	// not tracked or dropped, addresses not opened or closed early, and who gave way.
	DNSBounds map[string]uint64 `json:"dns_bounds,omitempty"`
	// DNSLatencyP50us and DNSLatencyP99us: from a reply seen to its addresses in the kernel
	// set, over the last 1024 replies that opened something, in microseconds.
	DNSLatencyP50us int64 `json:"dns_set_latency_p50_us,omitempty"`
	DNSLatencyP99us int64 `json:"dns_set_latency_p99_us,omitempty"`
	// DNSHoldP99us and DNSHoldMaxus: how long held DNS replies waited for their verdict (last
	// 1024; longest), in microseconds. DNSReleasedLate counts the replies released at the hold
	// bound (150 ms) before they were judged (they are judged and opened afterwards).
	DNSHoldP99us    int64  `json:"dns_hold_p99_us,omitempty"`
	DNSHoldMaxus    int64  `json:"dns_hold_max_us,omitempty"`
	DNSReleasedLate uint64 `json:"dns_released_late"`
	// DNSQueueOverruns counts the times the queue's socket buffer overflowed (replies passed
	// unheld and unjudged), since the extraction last started.
	DNSQueueOverruns uint64 `json:"dns_queue_overruns"`
	WhitelistEntries int    `json:"whitelist_entries"`
	Pinholes         int    `json:"pinholes"`
	// DNSQueue is how the firewall hands DNS replies to the extractor: nft-queue, xt-nfqueue,
	// unavailable (capture only) or off.
	DNSQueue string `json:"dns_queue,omitempty"`
	// Restores counts how often the rules were found removed (flush, firewall restart) and
	// put back; SetFullErrors how often a pinhole was refused because set_maxelem was reached.
	Restores      int `json:"restores"`
	SetFullErrors int `json:"set_full_errors"`
	// LastRestore says how the last putting back of the learned addresses went (after a
	// flush, a reload, `connmgr fw restore`): how many were recorded, put back, refused.
	LastRestore *firewall.RestoreResult `json:"last_restore,omitempty"`
	// Watch is how removals are noticed: "nf_tables events" (repaired on the event, the
	// periodic check as a backstop) or "periodic check" (iptables-legacy and ip sets tell
	// nobody).
	Watch string `json:"watch,omitempty"`
	Error string `json:"error,omitempty"` // why the lock-down is not (fully) in force
}

// UplinkStatus is one uplink's part of Status. Each address family of the uplink is judged,
// selected and routed on its own (IPv4 and IPv6); the uplink's own fields combine them.
type UplinkStatus struct {
	Network string `json:"network"` // UCI section: ethnet, stanet, modemnet
	Device  string `json:"device"`
	Type    string `json:"type"` // ethernet, wifi, cellular
	// State and StateNum use the seed's names and numbers (ITFUP_SS = 4, ...): the best state
	// of the uplink's families (ITFUP_SS > ITFUP_SU > ITFUP_SF > ITFDOWN_SX > ITFDOWN_SU >
	// ITFNOTSUPP_SX), so an IPv6-only uplink is up.
	State    string `json:"state"`
	StateNum int    `json:"state_num"`
	// Address, Gateway, LastProbe and RTTms are those of IPv4 when the uplink has an IPv4
	// address, else of IPv6.
	Address   string  `json:"address,omitempty"`
	Gateway   string  `json:"gateway,omitempty"`
	InUse     bool    `json:"in_use"`     // the uplink is Status.InUse
	LastProbe string  `json:"last_probe"` // "success", "failure", "none"
	RTTms     float64 `json:"rtt_ms,omitempty"`
	// SinceSeconds is the time spent in the current state (the longest a family has been in it).
	SinceSeconds int64 `json:"since"`
	// Probes and ProbeFails count both families' probe rounds.
	Probes     uint64 `json:"probes"`
	ProbeFails uint64 `json:"probe_failures"`
	// IPv4 and IPv6 are each family's own view.
	IPv4 *FamilyStatus `json:"ipv4,omitempty"`
	IPv6 *FamilyStatus `json:"ipv6,omitempty"`
	// Usage (issue 13): the device's kernel counters (since the device was created), this
	// month's bytes (Status.UsageMonth, kept across restarts within a boot), the probe rounds
	// started since connmgr started and what they cost (rounds x the method's bytes on the
	// wire), the probe budgets in bytes per hour, the least interval between routine rounds
	// they allow now (0: none), the monthly limit (0: none) and whether it is reached.
	RxBytes            uint64 `json:"rx_bytes"`
	TxBytes            uint64 `json:"tx_bytes"`
	MonthRxBytes       uint64 `json:"month_rx_bytes"`
	MonthTxBytes       uint64 `json:"month_tx_bytes"`
	ProbeRounds        uint64 `json:"probe_rounds"`
	ProbeBytes         uint64 `json:"probe_bytes"`
	ProbeBudget        uint64 `json:"probe_budget_per_hour,omitempty"`
	ProbeBudgetStandby uint64 `json:"probe_budget_standby_per_hour,omitempty"`
	BudgetIntervalS    int64  `json:"budget_interval,omitempty"`
	MonthlyLimit       uint64 `json:"monthly_limit,omitempty"`
	LimitReached       bool   `json:"limit_reached,omitempty"`
}

// FamilyStatus is one address family of an uplink.
type FamilyStatus struct {
	// Device is the device the family runs on: the uplink's, or for IPv4 the clat device of a
	// 464XLAT uplink.
	Device   string `json:"device"`
	State    string `json:"state"`
	StateNum int    `json:"state_num"`
	// Address is the one the family's probes, capture and source rule use (the lowest).
	Address string `json:"address,omitempty"`
	// Gateway is the next hop of the family's default route on the uplink (for IPv6 usually
	// link-local); empty on a point-to-point device.
	Gateway      string  `json:"gateway,omitempty"`
	InUse        bool    `json:"in_use"` // the family's default route goes through this uplink
	LastProbe    string  `json:"last_probe"`
	RTTms        float64 `json:"rtt_ms,omitempty"`
	SinceSeconds int64   `json:"since"`
	Probes       uint64  `json:"probes"`
	ProbeFails   uint64  `json:"probe_failures"`
}

// Counters count what the daemon did since it started.
type Counters struct {
	Switches      uint64 `json:"switches"`
	Probes        uint64 `json:"probes"`
	PinholesAdded uint64 `json:"pinholes_added"`
	DNSReplies    uint64 `json:"dns_replies"`
	ForgedReplies uint64 `json:"forged_dns_replies"`
	Reloads       uint64 `json:"reloads"`
}

// UbusStatus says whether the daemon is on the bus.
type UbusStatus struct {
	Connected  bool   `json:"connected"`
	Socket     string `json:"socket"`
	Reconnects uint64 `json:"reconnects"`
	// Netifd is netifd's view of the uplinks it knows (see NetifdInterface).
	Netifd []NetifdInterface `json:"netifd,omitempty"`
}

// Status assembles a snapshot. It runs on the loop goroutine (use Do from elsewhere).
func (d *Daemon) Status() Status {
	s := Status{
		Version:              Version,
		NetworkType:          -1,
		PreferredNetworkType: d.preferred,
		Counters:             d.counters,
		UptimeSeconds:        int64(d.clock.Now().Sub(d.started).Seconds()),
		Firewall: FirewallStatus{
			Mode:             "disabled",
			WhitelistEntries: d.cur.Whitelist.Len(),
		},
	}
	if d.cur.FirewallOn {
		s.Firewall.Mode = "enabled"
	}
	for _, c := range d.components {
		c.fillStatus(&s)
	}
	return s
}
