package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/probe"
	"github.com/afero/af-conn/internal/uci"
)

// row is one option: its name, default (as UCI text, parsed by the same
// setter as a file's value, so a default is always valid), what it
// accepts, what it does, and the setter that parses, checks and stores.
type row[T any] struct {
	name    string
	def     string // "" when the default is not a fixed value (see defDoc)
	defDoc  string // default as documented, when def is ""
	accepts string // the Expected of an error, and the docs' "values"
	desc    string
	set     func(t *T, v string) bool // false: v is not acceptable
	// why, if set, says what is wrong with a value set refused, when
	// that says more than "invalid value".
	why func(v string) string
	// list: a UCI list (`list NAME 'v'`, one value per line; set is called
	// for each). A single `option NAME 'v'` is taken as a list of one.
	list bool
}

// probeURLAccepts: the http probe speaks plain HTTP only (probe.ParseURL).
const probeURLAccepts = "an http:// URL: http://HOST[:PORT][/PATH] (not https)"

// mainRows are the options of `config connmgr 'main'`.
var mainRows = []row[Main]{
	boolRow("firewall", "1", "Firewall-Enabled mode: the uplinks pass only the services (DNS, DHCP, NTP, ICMP echo) and the whitelisted cloud servers. '0' (or connmgr -d) changes no firewall at all.",
		func(m *Main) *bool { return &m.Firewall }),
	enumRow("firewall_backend", "auto", []string{"auto", "nftables", "iptables"}, "firewall backend: native nftables, or iptables with ip sets (fw3 systems); auto takes nftables where fw4 runs.",
		func(m *Main) *string { return &m.FirewallBackend }),
	{name: "echo_host", def: "echo.afero.io", accepts: "a host name or an IP address",
		desc: "the Afero echo server the default probe connects to: its A record for an uplink's IPv4, its AAAA for IPv6 (an address serves its own family only).",
		set: func(m *Main, v string) bool {
			if !validHost(v) {
				return false
			}
			m.EchoHost = v
			return true
		}},
	u16Row("echo_port", "80", 1, "a port number 1-65535", "TCP port of the echo server.",
		func(m *Main) *uint16 { return &m.EchoPort }),
	enumRow("probe", "echo", []string{"echo", "icmp", "http"}, "active probe: echo (TCP connect, send one byte, read one byte back), icmp (ping echo_host), http (GET probe_url, expect 204).",
		func(m *Main) *string { return &m.Probe }),
	{name: "probe_url", defDoc: "(none)", accepts: probeURLAccepts,
		desc: "URL of the http probe, which must answer 204; required with probe 'http'. An IPv6 HOST is written in brackets (http://[2001:db8::1]/generate_204) and serves IPv6 only, an IPv4 one IPv4 only, a name both. Plain HTTP only: a 204 check needs no TLS, and TLS would make connmgr too big for 16 MB routers.",
		set: func(m *Main, v string) bool {
			if _, err := probe.ParseURL(v); err != nil {
				return false
			}
			m.ProbeURL = v
			return true
		},
		why: func(v string) string {
			_, err := probe.ParseURL(v)
			return "invalid value " + quote(v) + ": " + err.Error()
		}},
	durRow("probe_timeout", "500ms", 50*time.Millisecond, time.Minute, "how long a probe round waits for its answer (longer on a link whose RTT needs it); no answer is a failure.",
		func(m *Main) *time.Duration { return &m.ProbeTimeout }),
	durRow("probe_interval", "15s", 100*time.Millisecond, 24*time.Hour, "probe interval of the uplink in use while it is idle (an uplink's own probe_interval overrides it; its probe_budget may make it longer). Traffic the hub sends that goes unanswered starts a round at once, whatever the interval (held back a while when such rounds keep finding nothing wrong).",
		func(m *Main) *time.Duration { return &m.ProbeInterval }),
	durRow("probe_interval_standby", "10m", 100*time.Millisecond, 24*time.Hour, "probe interval of a working uplink that is not in use (cellular: cellular_probe_interval); a standby is also probed once as soon as the uplink in use fails a round.",
		func(m *Main) *time.Duration { return &m.ProbeIntervalStandby }),
	durRow("probe_interval_failing", "250ms", 100*time.Millisecond, 24*time.Hour, "probe interval of an uplink that is new, suspect (a failed probe), recovering, or wanted back, until fail_count or recover_count decides.",
		func(m *Main) *time.Duration { return &m.ProbeIntervalFailing }),
	durRow("cellular_probe_interval", "5m", time.Second, 24*time.Hour, "probe interval of the cellular uplink while it is not in use (probes cost money; its probe_budget_standby may make it longer).",
		func(m *Main) *time.Duration { return &m.CellularProbeInterval }),
	intRow("fail_count", "3", 1, 100, "consecutive failed probes that mark an uplink unreachable (fail-over).",
		func(m *Main) *int { return &m.FailCount }),
	intRow("recover_count", "3", 1, 100, "consecutive successful probes that mark an uplink reachable again (fail-back).",
		func(m *Main) *int { return &m.RecoverCount }),
	boolRow("dns_hold", "1", "hold DNS replies (netfilter queue) until the whitelisted addresses are in the firewall; '0' captures them instead, which may drop a first packet.",
		func(m *Main) *bool { return &m.DNSHold }),
	durRow("dns_grace", "30s", 0, time.Hour, "added to a DNS record's TTL for how long its addresses stay open.",
		func(m *Main) *time.Duration { return &m.DNSGrace }),
	durRow("dns_min_ttl", "60s", 0, 24*time.Hour, "TTLs below this count as this.",
		func(m *Main) *time.Duration { return &m.DNSMinTTL }),
	intRow("set_maxelem", "65536", 1024, 1<<24, "capacity of the kernel sets of opened addresses. When they are full, addresses learned from LAN clients' queries give way to the hub's own, then the hub's that expire soonest.",
		func(m *Main) *int { return &m.SetMaxElem }),
	intRow("dns_reply_max_addrs", "32", 1, 1024, "at most this many addresses of one DNS reply are opened; the rest are dropped.",
		func(m *Main) *int { return &m.DNSReplyMaxAddrs }),
	intRow("dns_name_max_addrs", "50", 1, 4096, "at most this many addresses are open per name (Cilium keeps 50); a newer one closes the one of that name that expires soonest.",
		func(m *Main) *int { return &m.DNSNameMaxAddrs }),
	{name: "trusted_resolver", defDoc: "(none)", accepts: "an IP address (list: one per line)", list: true,
		desc: "DNS servers trusted besides the uplinks' own (netifd's DNS servers of each uplink, its list dns, resolv.conf.auto and resolv.conf): only replies to queries sent to a trusted server open anything.",
		set: func(m *Main, v string) bool {
			a, err := netip.ParseAddr(v)
			if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
				return false
			}
			m.TrustedResolvers = append(m.TrustedResolvers, a.Unmap())
			return true
		}},
	u16Row("queue_num", "27", 0, "a queue number 0-65535", "netfilter queue number for held DNS replies.",
		func(m *Main) *uint16 { return &m.QueueNum }),
	boolRow("keep_route", "0", "on exit, leave the default route connmgr installed (else it is removed and netifd's routes remain).",
		func(m *Main) *bool { return &m.KeepRoute }),
	{name: "log_level", def: "info", accepts: "debug, info, warn or error", desc: "least important log messages written.",
		set: func(m *Main, v string) bool {
			l, ok := map[string]logline.Level{"debug": logline.LevelDebug, "info": logline.LevelInfo,
				"warn": logline.LevelWarn, "warning": logline.LevelWarn, "error": logline.LevelError}[strings.ToLower(v)]
			m.LogLevel = l
			return ok
		}},
}

// uplinkRows are the options of `config uplink 'NETWORK'`. Their defaults
// depend on the uplink's type and are filled in by loadUplink.
var uplinkRows = []row[Uplink]{
	{name: "type", defDoc: "ethnet: ethernet, stanet: wifi, modemnet: cellular", accepts: "ethernet, wifi or cellular",
		desc: "the uplink's medium (required for other network names).",
		set: func(u *Uplink, v string) bool {
			for k, n := range kindNames {
				if strings.EqualFold(v, n) {
					u.Kind = Kind(k)
					return true
				}
			}
			return false
		}},
	intRow("priority", "", 1, 99, "preference among uplinks confirmed reachable; lower wins.",
		func(u *Uplink) *int { return &u.Priority }),
	durRow("probe_interval", "", 100*time.Millisecond, 24*time.Hour, "probe interval of this uplink while in use.",
		func(u *Uplink) *time.Duration { return &u.ProbeInterval }),
	boolRow("enabled", "1", "'0' ignores this uplink.",
		func(u *Uplink) *bool { return &u.Enabled }),
	budgetRow("probe_budget", "bytes the uplink's routine probe rounds may spend while it is in use and idle (one round's measured bytes, in the family it probes, divided by the budget is the least interval: 50K/h with echo, 1,038 bytes an IPv4 round with the name's resolution and both ends' ARP, is a round every 75 s; an IPv6 round is 1,456 bytes); the uplink's, both families together (a dual-stack uplink's families get half each); 0: no budget, probe_interval alone.",
		func(u *Uplink) *float64 { return &u.ProbeBudget }),
	budgetRow("probe_budget_standby", "the same while the uplink is not in use.",
		func(u *Uplink) *float64 { return &u.ProbeBudgetStandby }),
	{name: "monthly_limit", defDoc: "(none)", accepts: "bytes: a number with an optional K, M or G (1000s), e.g. 500M; 0: none",
		desc: "bytes in and out per calendar month (UTC) on this uplink's device, from the kernel's counters, kept across connmgr restarts until the next boot; when reached, connmgr says so in status and sends the ubus event connmgr.usage, and does what limit_action says until the month ends.",
		set: func(u *Uplink, v string) bool {
			n, ok := parseBytes(v)
			u.MonthlyLimit = n
			return ok
		}},
	enumRow("limit_action", "last_resort", []string{"last_resort", "off"}, "what an uplink over its monthly_limit is used for: last_resort (only while no other uplink is up: it is not probed while another uplink is in use) or off (not at all until the month ends).",
		func(u *Uplink) *string { return &u.LimitAction }),
	{name: "device", defDoc: "from network/wireless (PROTO-NETWORK for PPP protocols, none for a `/dev` modem node), else eth0, wlan0, wwan0", accepts: deviceAccepts,
		desc: "the uplink's network device, overriding what network and wireless say; netifd's `l3_device` is followed on top of it.",
		set: func(u *Uplink, v string) bool {
			u.Device = v
			return validDevice(v)
		}},
}

func init() {
	uplinkRows[1].defDoc = "by type: ethernet 1, wifi 2, cellular 3"
	uplinkRows[2].defDoc = "probe_interval of main"
	uplinkRows[4].defDoc = "by type: cellular 50K/h, others 0"
	uplinkRows[5].defDoc = "by type: cellular 1M/month, others 0"
}

// Default probe budgets of a cellular uplink (issue 13): in use and idle
// at most 50 KB an hour, standby at most 1 MB a month.
const (
	CellularProbeBudget        = "50K/h"
	CellularProbeBudgetStandby = "1M/month"
)

// budgetAccepts is what a probe budget may be.
const budgetAccepts = "bytes per hour, day or month: a number with an optional K, M or G (1000s) and /h, /day or /month (30 days), e.g. 50K/h, 1M/month; 0: none"

// budgetRow is a probe budget, stored as bytes per hour; the default
// depends on the uplink's type (set by loadConnmgr when not given).
func budgetRow(name, desc string, field func(*Uplink) *float64) row[Uplink] {
	return row[Uplink]{name: name, accepts: budgetAccepts, desc: desc,
		set: func(u *Uplink, v string) bool {
			b, ok := ParseBudget(v)
			*field(u) = b
			return ok
		}}
}

// ParseBudget reads a probe budget ("50K/h", "1M/month", "0") as bytes per
// hour.
func ParseBudget(v string) (float64, bool) {
	if n, ok := parseBytes(v); ok && n == 0 {
		return 0, true
	}
	amount, per, ok := strings.Cut(v, "/")
	if !ok {
		return 0, false
	}
	hours, ok := map[string]float64{"h": 1, "hour": 1, "d": 24, "day": 24, "month": 720}[strings.ToLower(strings.TrimSpace(per))]
	n, nok := parseBytes(strings.TrimSpace(amount))
	if !ok || !nok || n == 0 {
		return 0, false
	}
	return float64(n) / hours, true
}

// parseBytes reads a byte count: digits with an optional K, M or G
// (powers of 1000) and an optional B.
func parseBytes(v string) (uint64, bool) {
	v = strings.TrimSuffix(strings.TrimSuffix(v, "B"), "b")
	mult := uint64(1)
	if i := len(v) - 1; i >= 0 {
		switch v[i] {
		case 'k', 'K':
			mult, v = 1e3, v[:i]
		case 'm', 'M':
			mult, v = 1e6, v[:i]
		case 'g', 'G':
			mult, v = 1e9, v[:i]
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > 1<<50/mult {
		return 0, false
	}
	return n * mult, true
}

// defaultUplinks are the uplinks when connmgr has no uplink section.
var defaultUplinks = []struct {
	name   string
	kind   Kind
	device string
}{{"ethnet", KindEthernet, "eth0"}, {"stanet", KindWiFi, "wlan0"}, {"modemnet", KindCellular, "wwan0"}}

// OptionDoc documents one option for README's configuration table.
type OptionDoc struct {
	Section     string // "main" (config connmgr 'main') or "uplink" (config uplink 'NETWORK')
	Name        string
	Default     string
	Values      string // what the option accepts
	Description string
}

// Options lists every connmgr option with its default, in table order.
func Options() []OptionDoc {
	return append(docs("main", mainRows), docs("uplink", uplinkRows)...)
}

func docs[T any](section string, rows []row[T]) []OptionDoc {
	var out []OptionDoc
	for _, r := range rows {
		d := r.def
		if d == "" {
			d = r.defDoc
		}
		out = append(out, OptionDoc{Section: section, Name: r.name, Default: d, Values: r.accepts, Description: r.desc})
	}
	return out
}

func findRow[T any](rows []row[T], name string) *row[T] {
	for i := range rows {
		if rows[i].name == name {
			return &rows[i]
		}
	}
	return nil
}

// apply sets t from the defaults of rows, then from section s, and returns
// the options s set. Unknown options become warnings.
func apply[T any](f file, s *uci.Section, rows []row[T], t *T, c *Config) (map[string]*uci.Option, error) {
	for _, r := range rows {
		if r.def != "" && !r.set(t, r.def) {
			panic("config: invalid default for " + r.name) // TestDefaults proves this never happens
		}
	}
	set := map[string]*uci.Option{}
	for _, o := range s.Options {
		r := findRow(rows, o.Name)
		if r == nil {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: section '%s': unknown option '%s' ignored",
				f.path, o.Line, f.pkg.SectionRef(s), o.Name))
			continue
		}
		if o.IsList && !r.list {
			e := f.valueErr(s, o, "", "a single value ('option "+o.Name+"', not 'list')")
			e.Problem = "a list"
			return nil, e
		}
		for _, v := range o.Values {
			if !r.set(t, v) {
				e := f.valueErr(s, o, v, r.accepts)
				if r.why != nil {
					e.Problem = r.why(v)
				}
				return nil, e
			}
		}
		set[o.Name] = o
	}
	return set, nil
}

// draft is an uplink as connmgr configures it, before network and
// wireless give its device.
type draft struct {
	u       Uplink
	section *uci.Section // nil for a default uplink
	device  bool         // device set in connmgr
}

// loadConnmgr reads connmgr's own file into c.Main and the uplink drafts.
func (c *Config) loadConnmgr(f file) ([]draft, error) {
	var main *uci.Section
	if s := f.pkg.Section("main"); s != nil && s.Type == "connmgr" {
		main = s
	}
	var drafts []draft
	for _, s := range f.pkg.Sections {
		switch {
		case s.Type == "connmgr" && main == nil:
			main = s
		case s.Type == "connmgr" && s != main:
			c.warn(f, s, "second connmgr section ignored (the one named 'main' is used)")
		case s.Type == "uplink":
			d, err := c.loadUplink(f, s)
			if err != nil {
				return nil, err
			}
			drafts = append(drafts, d)
		case s.Type != "connmgr":
			c.warn(f, s, "unknown section type '"+s.Type+"' ignored")
		}
	}
	if main == nil {
		main = &uci.Section{Type: "connmgr", Name: "main"}
	}
	set, err := apply(f, main, mainRows, &c.Main, c)
	if err != nil {
		return nil, err
	}
	if c.Main.Probe == "http" && c.Main.ProbeURL == "" {
		e := f.valueErr(main, set["probe"], "", probeURLAccepts+" in option probe_url")
		e.Option, e.Problem = "probe_url", "missing with probe 'http'"
		return nil, e
	}
	if len(drafts) == 0 {
		for _, d := range defaultUplinks {
			drafts = append(drafts, draft{u: Uplink{Name: d.name, Kind: d.kind, Enabled: true, ProbeBudget: -1, ProbeBudgetStandby: -1, LimitAction: "last_resort"}})
		}
	}
	for i := range drafts {
		u := &drafts[i].u
		if u.Priority == 0 {
			u.Priority = int(u.Kind) + 1
		}
		if u.ProbeInterval == 0 {
			u.ProbeInterval = c.Main.ProbeInterval
		}
		if u.ProbeBudget < 0 {
			u.ProbeBudget = 0
			if u.Kind == KindCellular {
				u.ProbeBudget, _ = ParseBudget(CellularProbeBudget)
			}
		}
		if u.ProbeBudgetStandby < 0 {
			u.ProbeBudgetStandby = 0
			if u.Kind == KindCellular {
				u.ProbeBudgetStandby, _ = ParseBudget(CellularProbeBudgetStandby)
			}
		}
	}
	return drafts, checkUplinks(f, drafts)
}

func (c *Config) warn(f file, s *uci.Section, msg string) {
	c.Warnings = append(c.Warnings, fmt.Sprintf("%s:%d: section '%s': %s", f.path, s.Line, f.pkg.SectionRef(s), msg))
}

// loadUplink reads one `config uplink 'NETWORK'` section.
func (c *Config) loadUplink(f file, s *uci.Section) (draft, error) {
	if s.Anonymous {
		e := f.valueErr(s, nil, "", "config uplink 'NETWORK', named after the UCI network it uses (e.g. 'ethnet')")
		e.Problem = "uplink section without a name"
		return draft{}, e
	}
	d := draft{u: Uplink{Name: s.Name, Kind: -1, ProbeBudget: -1, ProbeBudgetStandby: -1}, section: s}
	set, err := apply(f, s, uplinkRows, &d.u, c)
	if err != nil {
		return draft{}, err
	}
	d.device = set["device"] != nil
	if d.u.Kind < 0 {
		for _, def := range defaultUplinks {
			if def.name == s.Name {
				d.u.Kind = def.kind
			}
		}
	}
	if d.u.Kind < 0 {
		e := f.valueErr(s, nil, "", uplinkRows[0].accepts)
		e.Option, e.Problem = "type", "missing (the network name does not imply it)"
		return draft{}, e
	}
	return d, nil
}

// checkUplinks: at most one enabled uplink of each kind (the attributes
// report one state per kind).
func checkUplinks(f file, drafts []draft) error {
	byKind := map[Kind]string{}
	for _, d := range drafts {
		if !d.u.Enabled {
			continue
		}
		if other, dup := byKind[d.u.Kind]; dup {
			e := f.valueErr(d.section, d.section.Get("type"), d.u.Kind.String(), "one enabled uplink of each type")
			e.Option, e.Problem = "type", fmt.Sprintf("second %s uplink (uplink '%s' is one)", d.u.Kind, other)
			return e
		}
		byKind[d.u.Kind] = d.u.Name
	}
	return nil
}

func boolRow[T any](name, def, desc string, field func(*T) *bool) row[T] {
	return row[T]{name: name, def: def, desc: desc,
		accepts: "a boolean: 1/0, yes/no, on/off, true/false, enabled/disabled",
		set: func(t *T, v string) bool {
			b, ok := parseBool(v)
			*field(t) = b
			return ok
		}}
}

// parseBool accepts what OpenWrt's config_get_bool accepts.
func parseBool(v string) (bool, bool) {
	switch strings.ToLower(v) {
	case "1", "yes", "on", "true", "enabled":
		return true, true
	case "0", "no", "off", "false", "disabled":
		return false, true
	}
	return false, false
}

func enumRow[T any](name, def string, values []string, desc string, field func(*T) *string) row[T] {
	accepts := strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
	return row[T]{name: name, def: def, desc: desc, accepts: accepts,
		set: func(t *T, v string) bool {
			for _, ok := range values {
				if strings.EqualFold(v, ok) {
					*field(t) = ok
					return true
				}
			}
			return false
		}}
}

func intRow[T any](name, def string, lo, hi int, desc string, field func(*T) *int) row[T] {
	return row[T]{name: name, def: def, desc: desc, accepts: fmt.Sprintf("an integer %d-%d", lo, hi),
		set: func(t *T, v string) bool {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				return false
			}
			*field(t) = n
			return true
		}}
}

func u16Row[T any](name, def string, lo int, accepts, desc string, field func(*T) *uint16) row[T] {
	return row[T]{name: name, def: def, desc: desc, accepts: accepts,
		set: func(t *T, v string) bool {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > 65535 {
				return false
			}
			*field(t) = uint16(n)
			return true
		}}
}

func durRow[T any](name, def string, lo, hi time.Duration, desc string, field func(*T) *time.Duration) row[T] {
	accepts := fmt.Sprintf("a duration from %s to %s (e.g. 250ms, 2s, 1m; a bare number is seconds)", fmtDur(lo), fmtDur(hi))
	return row[T]{name: name, def: def, desc: desc, accepts: accepts,
		set: func(t *T, v string) bool {
			d, ok := parseDuration(v)
			if !ok || d < lo || d > hi {
				return false
			}
			*field(t) = d
			return true
		}}
}

// parseDuration reads Go durations ("250ms", "1m30s") and bare numbers of
// seconds ("5", "0.5"), the OpenWrt habit.
func parseDuration(v string) (time.Duration, bool) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || f > float64(100*24*time.Hour/time.Second) || strings.ContainsAny(v, "eEnNxX") {
			return 0, false // also refuses "1e3", "NaN", "Inf", hex floats
		}
		return time.Duration(f * float64(time.Second)), true
	}
	d, err := time.ParseDuration(v)
	return d, err == nil && d >= 0
}

// fmtDur writes a bound the way a user would: 50ms, 60s, 5m, 24h.
func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	case d%time.Second == 0:
		return fmt.Sprintf("%ds", d/time.Second)
	}
	return fmt.Sprintf("%dms", d/time.Millisecond)
}

// validHost accepts an IP address literal or a DNS host name.
func validHost(v string) bool {
	if _, err := netip.ParseAddr(v); err == nil {
		return true
	}
	v = strings.TrimSuffix(v, ".")
	if v == "" || len(v) > 253 {
		return false
	}
	for _, label := range strings.Split(v, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

const deviceAccepts = "a network device name (1-15 characters, none of '/', ':' or white space)"

// validDevice is the kernel's dev_valid_name.
func validDevice(v string) bool {
	if v == "" || len(v) > 15 || v == "." || v == ".." {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '/' || c == ':' || c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}
