// Command connmgr keeps an OpenWrt IoT hub connected to its cloud: it watches the uplinks,
// proves each can reach the cloud, keeps the default route on the best proven one, locks the
// firewall down to the cloud's whitelist, and reports over ubus. Run without a subcommand it is
// the daemon (foreground, logs to stderr, supervised by procd); with one, it is a small client
// of the running daemon.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/nfqueue"
)

// version is set at build time: -ldflags "-X main.version=...".
var version = "dev"

// Defaults of the fixed command line.
const (
	defaultUCIDir    = "/etc/config"
	defaultWhitelist = "/etc/af-conn/whitelist"
	defaultSocket    = "/var/run/ubus/ubus.sock"
)

// Exit codes: 1 for a failure while running (bad configuration included), 2 for a bad
// command line.
const (
	exitFailure = 1
	exitUsage   = 2
)

// subcommand is one `connmgr NAME ...` helper command.
type subcommand struct {
	args    string // argument synopsis for usage
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// subcommands are the helper commands, by name. Each lives in a file of its own.
var subcommands = map[string]subcommand{
	"version": {"", "print the version", runVersion},
	"status":  {"[--json] [-s SOCKET]", "show the running daemon's state (--json: as ubus call connmgr status)", runStatus},
	"get":     {"ID [-s SOCKET]", "print attribute ID (65008 network type, ...)", runGet},
	"set":     {"ID VALUE [-s SOCKET]", "set attribute ID (65008: preferred network type, -1 automatic)", runSet},
	"switch":  {"IFNAME [-s SOCKET]", "prefer the network type of uplink IFNAME (eth0 or ethnet)", runSwitch},
	"notify":  {"INTERFACE ACTION [-s SOCKET]", "hotplug hook: tell the daemon netifd changed INTERFACE (never waits long)", runNotify},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	daemon.Version = version
	if len(args) > 0 && args[0] == nfqueue.WatchdogArg {
		// The DNS queue's watchdog process, started by the daemon itself
		// (not a user command, so not in the usage).
		return nfqueue.RunWatchdog(args[1:], stderr)
	}
	if len(args) > 0 {
		if sc, ok := subcommands[args[0]]; ok {
			return sc.run(args[1:], stdout, stderr)
		}
	}
	return runDaemon(args, stdout, stderr)
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) != 0 {
		fmt.Fprintln(stderr, "connmgr version: takes no arguments")
		return exitUsage
	}
	fmt.Fprintln(stdout, "connmgr", version)
	return 0
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: connmgr [-d] [-c UCI_DIR] [-w WHITELIST] [-s UBUS_SOCKET]\n")
	fmt.Fprintf(w, "       connmgr COMMAND [ARGS]\n\nRuns the connection manager daemon in the foreground.\n\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fmt.Fprintf(w, "\nCommands (talk to the running daemon):\n")
	names := make([]string, 0, len(subcommands))
	for n := range subcommands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		sc := subcommands[n]
		fmt.Fprintf(w, "  %-40s %s\n", n+" "+sc.args, sc.summary)
	}
}

// gcPercent is the daemon's GOGC. Its live heap is under 1 MB, so at Go's
// default of 100 the heap goal sits at the 4 MB floor, and pages freed
// after bursts (netlink dumps, firewall batches) linger: with the default
// configuration peak RSS reached 14-15 MB of the 16 MB budget (failover
// load benchmark). At 25 the floor is 1 MB and the peak about 12 MB; the
// collector runs about five times as often, which costs well under 0.1 %
// of a core since the daemon allocates little. Unlike a fixed memory
// limit, a GOGC scales with the live heap, so the collector cannot spin if
// the heap ever grows (many learned addresses).
const gcPercent = 25

// tuneGC applies gcPercent unless GOGC in the environment says otherwise.
func tuneGC() {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}

// usageLedger is $CONNMGR_USAGE_LEDGER when set (test worlds keep theirs inside the world),
// else daemon.UsageLedgerPath().
func usageLedger() string {
	if p := os.Getenv("CONNMGR_USAGE_LEDGER"); p != "" {
		return p
	}
	return daemon.UsageLedgerPath()
}

func runDaemon(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("connmgr", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	noFirewall := fs.Bool("d", false, "disable firewall mode: no whitelist, no DNS extraction, no firewall changes")
	uciDir := fs.String("c", defaultUCIDir, "UCI configuration `directory`")
	wlPath := fs.String("w", defaultWhitelist, "whitelist `file`")
	socket := fs.String("s", defaultSocket, "ubus `socket`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs)
			return 0
		}
		fmt.Fprintf(stderr, "connmgr: %v\n", err)
		usage(stderr, fs)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "connmgr: unknown command or argument %q\n", fs.Arg(0))
		usage(stderr, fs)
		return exitUsage
	}

	tuneGC()
	level := new(logline.LevelVar)
	log := logline.New(stderr, level)
	d, err := daemon.New(daemon.Options{
		UCIDir:        *uciDir,
		WhitelistPath: *wlPath,
		UbusSocket:    *socket,
		NoFirewall:    *noFirewall,
		UsageLedger:   usageLedger(),
		Logger:        log,
		Level:         level,
	})
	if err != nil {
		fmt.Fprintf(stderr, "connmgr: %v\n", err)
		return exitFailure
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			log.Info("SIGHUP: reloading configuration")
			d.Reload()
		}
	}()
	if err := d.Run(ctx); err != nil {
		log.Error("connmgr failed", "err", err)
		return exitFailure
	}
	return 0
}
