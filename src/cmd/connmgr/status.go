package main

// The subcommands that talk to the running daemon over ubus: status, get, set, switch. Each
// is one call of a method of the daemon's `connmgr` object; what they print comes from the
// daemon's answer. Exit codes: 0 done, 1 the daemon could not be reached or refused (the
// message says why and names the socket), 2 a bad command line.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/ubus"
)

// clientTimeout bounds a whole subcommand: connecting, looking up and calling.
const clientTimeout = 15 * time.Second

// clientArgs is a client subcommand's command line.
type clientArgs struct {
	socket string
	json   bool
	pos    []string
}

// parseClientArgs reads -s SOCKET (and --json when allowJSON) anywhere among the arguments,
// so `connmgr get 65008 -s SOCK` works as well as `connmgr get -s SOCK 65008`. A number is
// always an argument, never a flag: `connmgr set 65008 -1`. It returns an exit code >= 0 when
// the command is done (help printed, or a usage error reported).
func parseClientArgs(name, synopsis string, want int, allowJSON bool, args []string, stdout, stderr io.Writer) (clientArgs, int) {
	ca := clientArgs{socket: defaultSocket}
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: connmgr %s %s\n", name, synopsis)
	}
	bad := func(format string, a ...any) (clientArgs, int) {
		fmt.Fprintf(stderr, "connmgr %s: %s\n", name, fmt.Sprintf(format, a...))
		usage(stderr)
		return ca, exitUsage
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			ca.pos = append(ca.pos, args[i+1:]...)
			i = len(args)
		case a == "-s" || a == "--s":
			if i+1 >= len(args) {
				return bad("flag needs an argument: -s")
			}
			i++
			ca.socket = args[i]
		case strings.HasPrefix(a, "-s=") || strings.HasPrefix(a, "--s="):
			ca.socket = a[strings.IndexByte(a, '=')+1:]
		case allowJSON && (a == "--json" || a == "-json"):
			ca.json = true
		case a == "-h" || a == "--help" || a == "-help":
			usage(stdout)
			return ca, 0
		case isNumber(a) || !strings.HasPrefix(a, "-") || a == "-":
			ca.pos = append(ca.pos, a)
		default:
			return bad("flag provided but not defined: %s", a)
		}
	}
	if len(ca.pos) != want {
		return bad("want %d argument(s), got %d", want, len(ca.pos))
	}
	if ca.socket == "" {
		return bad("empty socket path")
	}
	return ca, -1
}

func isNumber(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// unreachableError says the daemon is not on the bus: no ubusd, or no connmgr object.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string { return e.msg }

// daemonCall calls a method of the daemon's object. A refusal's error carries the daemon's
// own explanation ({"error": ...}) and the status.
func daemonCall(ctx context.Context, socket, method string, args ubus.Table) (ubus.Table, error) {
	conn, err := ubus.Dial(ctx, socket)
	if err != nil {
		return nil, &unreachableError{fmt.Sprintf("cannot reach ubus at %s (is ubusd running?): %v", socket, err)}
	}
	defer conn.Close()
	id, err := conn.LookupID(ctx, daemon.ObjectName)
	if errors.Is(err, ubus.StatusNotFound) {
		return nil, &unreachableError{fmt.Sprintf("the connmgr daemon is not running (no %q object on ubus at %s)", daemon.ObjectName, socket)}
	}
	if err != nil {
		return nil, fmt.Errorf("ubus at %s: %w", socket, err)
	}
	out, err := conn.Invoke(ctx, id, method, args)
	if err != nil {
		if msg, ok := out.String("error"); ok {
			return nil, fmt.Errorf("%s (%w)", msg, ubus.StatusOf(err))
		}
		return nil, err
	}
	return out, nil
}

// callDaemon is daemonCall for a subcommand: on failure it prints why and returns exit code 1.
func callDaemon(name, socket, method string, args ubus.Table, stderr io.Writer) (ubus.Table, int) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	out, err := daemonCall(ctx, socket, method, args)
	if err != nil {
		fmt.Fprintf(stderr, "connmgr %s: %v\n", name, err)
		return nil, exitFailure
	}
	return out, 0
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	ca, code := parseClientArgs("status", "[--json] [-s SOCKET]", 0, true, args, stdout, stderr)
	if code >= 0 {
		return code
	}
	out, code := callDaemon("status", ca.socket, "status", nil, stderr)
	if code != 0 {
		return code
	}
	if ca.json {
		// Byte for byte what `ubus call connmgr status` prints.
		j, err := ubus.FormatJSON(out, true)
		if err != nil {
			fmt.Fprintf(stderr, "connmgr status: %v\n", err)
			return exitFailure
		}
		fmt.Fprintf(stdout, "%s\n", j)
		return 0
	}
	st, err := statusFromTable(out)
	if err != nil {
		fmt.Fprintf(stderr, "connmgr status: the daemon's answer does not read as a status: %v\n", err)
		return exitFailure
	}
	writeStatus(stdout, st)
	return 0
}

// statusFromTable reads the status method's answer back into daemon.Status.
func statusFromTable(t ubus.Table) (daemon.Status, error) {
	var st daemon.Status
	err := ubus.Unmarshal(t, &st)
	return st, err
}

var networkTypeNames = map[int]string{-1: "none", 0: "Ethernet", 1: "WLAN", 2: "WAN"}

func networkTypeName(v int) string {
	if n, ok := networkTypeNames[v]; ok {
		return fmt.Sprintf("%d (%s)", v, n)
	}
	return strconv.Itoa(v)
}

// writeStatus renders a status for people: the daemon's summary, then one line per uplink.
func writeStatus(w io.Writer, st daemon.Status) {
	tw := newTabTable(w)
	fmt.Fprintf(tw, "connmgr %s, up %s\n", st.Version, time.Duration(st.UptimeSeconds)*time.Second)
	inUse := "none"
	if st.InUse != "" {
		inUse = fmt.Sprintf("%s (%s)", st.InUse, st.InUseDevice)
	}
	if st.InUseIPv4 != "" || st.InUseIPv6 != "" {
		// The families are selected one by one; in use is IPv4's, else IPv6's.
		inUse += fmt.Sprintf(" (IPv4 %s, IPv6 %s)", noneIfEmpty(st.InUseIPv4), noneIfEmpty(st.InUseIPv6))
	}
	fmt.Fprintf(tw, "network type:\t%s, in use: %s\n", networkTypeName(st.NetworkType), inUse)
	pref := "automatic"
	if st.PreferredNetworkType != daemon.NetworkNone {
		pref = networkTypeName(st.PreferredNetworkType)
	}
	fmt.Fprintf(tw, "preferred type:\t%s\n", pref)
	fw := st.Firewall.Mode
	for _, s := range []string{st.Firewall.Backend, st.Firewall.DNSMode} {
		if s != "" {
			fw += ", " + s
		}
	}
	if st.Firewall.DNSQueue != "" {
		fw += ", DNS queue " + st.Firewall.DNSQueue
	}
	if st.Firewall.Mode == "enabled" {
		fw += fmt.Sprintf("; %d whitelist entries, %d pinholes, restored %d times", st.Firewall.WhitelistEntries,
			st.Firewall.Pinholes, st.Firewall.Restores)
	}
	fmt.Fprintf(tw, "firewall:\t%s\n", fw)
	if len(st.Firewall.DNSTrustedResolvers) > 0 {
		fmt.Fprintf(tw, "DNS trusted:\t%s\n", strings.Join(st.Firewall.DNSTrustedResolvers, " "))
	}
	if s := nonZero(st.Firewall.DNSRejected); s != "" {
		fmt.Fprintf(tw, "DNS rejected:\t%s\n", s)
	}
	if s := nonZero(st.Firewall.DNSBounds); s != "" {
		fmt.Fprintf(tw, "DNS bounds:\t%s\n", s)
	}
	if st.Firewall.Error != "" {
		fmt.Fprintf(tw, "firewall error:\t%s\n", st.Firewall.Error)
	}
	if u := st.Ubus; u != nil {
		fmt.Fprintf(tw, "ubus:\t%s, %d reconnects\n", u.Socket, u.Reconnects)
	}
	c := st.Counters
	fmt.Fprintf(tw, "counters:\tswitches %d, probes %d, pinholes added %d, DNS replies %d, forged DNS replies %d, reloads %d\n",
		c.Switches, c.Probes, c.PinholesAdded, c.DNSReplies, c.ForgedReplies, c.Reloads)
	tw.Flush()
	if len(st.Uplinks) == 0 {
		fmt.Fprintln(w, "\nno uplinks reported")
		return
	}
	fmt.Fprintln(w)
	tw = newTabTable(w)
	fmt.Fprintln(tw, "  NETWORK\tDEVICE\tTYPE\tSTATE\tADDRESS\tGATEWAY\tPROBE\tRTT\tSINCE\tPROBES")
	for _, u := range st.Uplinks {
		fmt.Fprintf(tw, "%s %s\t%s\t%s\t%s (%d)\t%s\t%s\t%s\t%s\t%s\t%d (%d failed)\n", inUseMark(u.InUse), u.Network, u.Device, u.Type,
			u.State, u.StateNum, dash(u.Address), dash(u.Gateway), dash(u.LastProbe), rttText(u.RTTms),
			time.Duration(u.SinceSeconds)*time.Second, u.Probes, u.ProbeFails)
		writeFamily(tw, "ipv4", u.IPv4)
		writeFamily(tw, "ipv6", u.IPv6)
	}
	tw.Flush()
	writeUsage(w, st)
}

// writeUsage is the usage table: bytes per uplink, this month's, and what the probes cost.
func writeUsage(w io.Writer, st daemon.Status) {
	fmt.Fprintln(w)
	tw := newTabTable(w)
	fmt.Fprintf(tw, "  NETWORK\tIN\tOUT\tMONTH %s\tLIMIT\tPROBES\tPROBE BUDGET\n", dash(st.UsageMonth))
	for _, u := range st.Uplinks {
		limit := "-"
		if u.MonthlyLimit > 0 {
			limit = fmt.Sprintf("%d", u.MonthlyLimit)
			if u.LimitReached {
				limit += " (reached)"
			}
		}
		budget := "-"
		if u.ProbeBudget > 0 || u.ProbeBudgetStandby > 0 {
			budget = fmt.Sprintf("%d/h in use, %d/h standby", u.ProbeBudget, u.ProbeBudgetStandby)
			if u.BudgetIntervalS > 0 {
				budget += fmt.Sprintf(" (every %v)", time.Duration(u.BudgetIntervalS)*time.Second)
			}
		}
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\t%s\t%d rounds, %d bytes\t%s\n", u.Network, u.RxBytes, u.TxBytes,
			u.MonthRxBytes+u.MonthTxBytes, limit, u.ProbeRounds, u.ProbeBytes, budget)
	}
	tw.Flush()
}

// writeFamily writes one address family of an uplink under the uplink's line, in the same
// columns; * marks the family whose default route goes through the uplink. A family the
// daemon does not report (an older daemon, or no IPv6 routing) is left out.
func writeFamily(tw io.Writer, name string, f *daemon.FamilyStatus) {
	if f == nil {
		return
	}
	fmt.Fprintf(tw, "   %s %s\t%s\t\t%s (%d)\t%s\t%s\t%s\t%s\t%s\t%d (%d failed)\n", inUseMark(f.InUse), name, f.Device,
		f.State, f.StateNum, dash(f.Address), dash(f.Gateway), dash(f.LastProbe), rttText(f.RTTms),
		time.Duration(f.SinceSeconds)*time.Second, f.Probes, f.ProbeFails)
}

func inUseMark(inUse bool) string {
	if inUse {
		return "*"
	}
	return " "
}

func rttText(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
}

func noneIfEmpty(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// nonZero lists the counters that are not zero, by name: "unsolicited 2, untrusted_resolver 5".
func nonZero(m map[string]uint64) string {
	var parts []string
	for k, n := range m {
		if n != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, n))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runGet(args []string, stdout, stderr io.Writer) int {
	ca, code := parseClientArgs("get", "ID [-s SOCKET]", 1, false, args, stdout, stderr)
	if code >= 0 {
		return code
	}
	id, code := attributeID("get", ca.pos[0], stderr)
	if code >= 0 {
		return code
	}
	out, code := callDaemon("get", ca.socket, "get_attribute", ubus.Table{{Name: "id", Value: id}}, stderr)
	if code != 0 {
		return code
	}
	v, ok := out.Int("value")
	if !ok {
		fmt.Fprintf(stderr, "connmgr get: the daemon's answer has no value\n")
		return exitFailure
	}
	fmt.Fprintln(stdout, v)
	return 0
}

func runSet(args []string, stdout, stderr io.Writer) int {
	ca, code := parseClientArgs("set", "ID VALUE [-s SOCKET]", 2, false, args, stdout, stderr)
	if code >= 0 {
		return code
	}
	id, code := attributeID("set", ca.pos[0], stderr)
	if code >= 0 {
		return code
	}
	v, err := strconv.ParseInt(ca.pos[1], 10, 64)
	if err != nil {
		fmt.Fprintf(stderr, "connmgr set: value %q is not an integer\n", ca.pos[1])
		return exitUsage
	}
	var value any = v // INT64 only when it does not fit the signature's INT32
	if v == int64(int32(v)) {
		value = int32(v)
	}
	_, code = callDaemon("set", ca.socket, "set_attribute", ubus.Table{{Name: "id", Value: id}, {Name: "value", Value: value}}, stderr)
	return code
}

// attributeID reads an attribute id argument; ids are 16-bit numbers in the registry.
func attributeID(name, s string, stderr io.Writer) (int32, int) {
	id, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		fmt.Fprintf(stderr, "connmgr %s: attribute id %q is not a number from 0 to 65535\n", name, s)
		return 0, exitUsage
	}
	return int32(id), -1
}

func runSwitch(args []string, stdout, stderr io.Writer) int {
	ca, code := parseClientArgs("switch", "IFNAME [-s SOCKET]", 1, false, args, stdout, stderr)
	if code >= 0 {
		return code
	}
	out, code := callDaemon("switch", ca.socket, "switch", ubus.Table{{Name: "interface", Value: ca.pos[0]}}, stderr)
	if code != 0 {
		return code
	}
	network, _ := out.String("network")
	device, _ := out.String("device")
	t, _ := out.Int("preferred_network_type")
	fmt.Fprintf(stdout, "preferring %s (%s): network type %s\n", network, device, networkTypeName(int(t)))
	return 0
}

// notifyTimeout bounds `connmgr notify`: the hotplug hook must never hold netifd up.
const notifyTimeout = 2 * time.Second

// runNotify is the hotplug hook's hint (ubus method notify). A daemon that is not running, or
// that does not answer within notifyTimeout, is not an error: it reads netifd's state when it
// starts, and follows netifd's own ubus events besides.
func runNotify(args []string, stdout, stderr io.Writer) int {
	ca, code := parseClientArgs("notify", "INTERFACE ACTION [-s SOCKET]", 2, false, args, stdout, stderr)
	if code >= 0 {
		return code
	}
	ctx, cancel := context.WithTimeout(context.Background(), notifyTimeout)
	defer cancel()
	_, err := daemonCall(ctx, ca.socket, "notify", ubus.Table{{Name: "interface", Value: ca.pos[0]}, {Name: "action", Value: ca.pos[1]}})
	var unreachable *unreachableError
	switch {
	case errors.As(err, &unreachable):
		fmt.Fprintf(stderr, "connmgr notify: %v; nothing to tell\n", err)
		return 0
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ubus.StatusTimeout), errors.Is(err, ubus.ErrClosed):
		fmt.Fprintf(stderr, "connmgr notify: no answer from the daemon: %v\n", err)
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "connmgr notify: %v\n", err)
		return exitFailure
	}
	return 0
}
