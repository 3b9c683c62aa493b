package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"strings"
	"time"

	"github.com/afero/af-conn/internal/config"
	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/whitelist"
)

func init() {
	subcommands["fw"] = subcommand{
		args:    "[-s SOCKET] add|del|add_forwarding|del_forwarding IP COMMENT [check_fw] | restart | init | restore",
		summary: "change the firewall whitelist or restore the rules (through the daemon; without one, directly)",
		run:     runFW,
	}
}

// fwOpen opens the firewall backend for the direct path (tests put one in a namespace).
var fwOpen = firewall.Open

// fwTimeout bounds the whole ubus exchange: the firewall include must not hang a reload.
// restoreTimeout bounds a restore, which returns once every learned address is back: 65,536
// of them took 0.4 s here on a quiet machine and 6-8 s with the 2 cores at load average 19, and
// a router's CPU is slower still.
const (
	fwTimeout      = 5 * time.Second
	restoreTimeout = 30 * time.Second
)

// errNoDaemon: no connmgr answers on the bus (no ubusd, or no connmgr object).
var errNoDaemon = errors.New("no connmgr daemon on the bus")

// fwCall calls a method of the daemon's ubus object.
func fwCall(socket, method string, args ubus.Table) error {
	timeout := fwTimeout
	if method == "firewall_restore" {
		timeout = restoreTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := daemonCall(ctx, socket, method, args)
	if u := (*unreachableError)(nil); errors.As(err, &u) {
		return fmt.Errorf("%w (%s)", errNoDaemon, u.msg)
	}
	return err
}

// runFW is `connmgr fw ...`, the seed's fwcfg.sh and init_firewall.sh as one command. It asks
// the running daemon over ubus, so that the daemon's record (what a restore puts back) stays
// right. When no daemon answers, add and del change the kernel sets directly and init/restart
// set the lock-down up from the configuration, and say so; restore then has nothing to do.
func runFW(args []string, stdout, stderr io.Writer) int {
	fl := flag.NewFlagSet("connmgr fw", flag.ContinueOnError)
	fl.SetOutput(io.Discard)
	socket := fl.String("s", defaultSocket, "ubus `socket`")
	uciDir := fl.String("c", defaultUCIDir, "UCI configuration `directory` (used without a daemon)")
	wlPath := fl.String("w", defaultWhitelist, "whitelist `file` (used without a daemon)")
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "connmgr fw: "+format+"\n", a...)
		fmt.Fprintf(stderr, "usage: connmgr fw %s\n", subcommands["fw"].args)
		return exitUsage
	}
	if err := fl.Parse(args); err != nil {
		return fail("%v", err)
	}
	args = fl.Args()
	if len(args) == 0 {
		return fail("missing action")
	}
	action, rest := args[0], args[1:]
	switch action {
	case "add", "del", "add_forwarding", "del_forwarding":
		// The seed's fourth argument check_fw asked fwcfg.sh to look for an existing rule
		// first; adding is idempotent here, so it changes nothing.
		if len(rest) < 2 || len(rest) > 3 || (len(rest) == 3 && rest[2] != "check_fw") {
			return fail("%s wants IP COMMENT [check_fw], got %q", action, strings.Join(rest, " "))
		}
		addr, err := netip.ParseAddr(rest[0])
		if err != nil || addr.Zone() != "" {
			return fail("%s: %q is not an IP address", action, rest[0])
		}
		return fwPinhole(action, addr.Unmap(), rest[1], *socket, *uciDir, stdout, stderr)
	case "restart", "init", "restore":
		if len(rest) != 0 {
			return fail("%s takes no arguments", action)
		}
		return fwRestore(action, *socket, *uciDir, *wlPath, stdout, stderr)
	}
	return fail("unknown action %q", action)
}

func fwPinhole(action string, addr netip.Addr, comment, socket, uciDir string, stdout, stderr io.Writer) int {
	forward := strings.HasSuffix(action, "_forwarding")
	add := strings.HasPrefix(action, "add")
	method, args := "disallow", ubus.Table{{Name: "address", Value: addr.String()}, {Name: "forward", Value: forward}}
	if add {
		method = "allow"
		args = ubus.Table{{Name: "address", Value: addr.String()}, {Name: "comment", Value: comment}, {Name: "forward", Value: forward}}
	}
	err := fwCall(socket, method, args)
	if err == nil {
		return 0
	}
	if !errors.Is(err, errNoDaemon) {
		fmt.Fprintf(stderr, "connmgr fw %s %s: %v\n", action, addr, err)
		return exitFailure
	}

	// No daemon: the kernel sets directly.
	b, oerr := fwOpen(backendOption(uciDir))
	if oerr != nil {
		fmt.Fprintf(stderr, "connmgr fw %s %s: %v; and the firewall cannot be reached directly: %v\n", action, addr, err, oerr)
		return exitFailure
	}
	defer b.Close()
	p := []firewall.Pinhole{{Addr: addr, Forward: forward, Comment: comment}}
	if add {
		err = b.Add(p)
	} else {
		err = b.Del(p)
	}
	switch {
	case errors.Is(err, firewall.ErrNotSetUp) && !add:
		fmt.Fprintf(stderr, "connmgr fw: %v; the firewall lock-down is not set up, nothing to remove\n", errNoDaemon)
		return 0
	case errors.Is(err, firewall.ErrNotSetUp):
		fmt.Fprintf(stderr, "connmgr fw %s %s: %v, and the firewall lock-down is not set up (connmgr fw init sets it up)\n", action, addr, errNoDaemon)
		return exitFailure
	case err != nil:
		fmt.Fprintf(stderr, "connmgr fw %s %s: %v\n", action, addr, err)
		return exitFailure
	}
	verb := "added to"
	if !add {
		verb = "removed from"
	}
	fmt.Fprintf(stderr, "connmgr fw: %v; %s %s the %s kernel set directly (a daemon started later keeps it but will not restore it after a flush)\n",
		errNoDaemon, addr, verb, b.Name())
	return 0
}

// backendOption is firewall_backend from the configuration, auto when it cannot be read.
func backendOption(uciDir string) string {
	if cfg, err := config.Load(uciDir); err == nil {
		return cfg.Main.FirewallBackend
	}
	return firewall.BackendAuto
}

func fwRestore(action, socket, uciDir, wlPath string, stdout, stderr io.Writer) int {
	err := fwCall(socket, "firewall_restore", nil)
	if err == nil {
		return 0
	}
	if !errors.Is(err, errNoDaemon) {
		fmt.Fprintf(stderr, "connmgr fw %s: %v\n", action, err)
		return exitFailure
	}
	if action == "restore" {
		// The firewall include: without a daemon there is no record to put back (procd
		// restarts the daemon, which sets everything up).
		fmt.Fprintf(stderr, "connmgr fw restore: %v; nothing to restore\n", errNoDaemon)
		return 0
	}

	// init/restart without a daemon: the lock-down from the configuration and the whitelist.
	cfg, err := config.Load(uciDir)
	if err != nil {
		fmt.Fprintf(stderr, "connmgr fw %s: %v\n", action, err)
		return exitFailure
	}
	if !cfg.Main.Firewall {
		fmt.Fprintf(stderr, "connmgr fw %s: %v; firewall mode is off in %s, nothing to set up\n", action, errNoDaemon, uciDir)
		return 0
	}
	wl, err := whitelist.Load(wlPath)
	if errors.Is(err, fs.ErrNotExist) { // as the daemon: only the services pass
		wl, err = whitelist.Parse(wlPath, strings.NewReader(""))
	}
	if err != nil {
		fmt.Fprintf(stderr, "connmgr fw %s: %v\n", action, err)
		return exitFailure
	}
	b, err := fwOpen(cfg.Main.FirewallBackend)
	if err != nil {
		fmt.Fprintf(stderr, "connmgr fw %s: %v\n", action, err)
		return exitFailure
	}
	defer b.Close()
	mode, err := b.Setup(daemon.FirewallPolicy(cfg, wl))
	if err != nil && !errors.Is(err, firewall.ErrQueueUnavailable) {
		fmt.Fprintf(stderr, "connmgr fw %s: %v\n", action, err)
		return exitFailure
	}
	fmt.Fprintf(stderr, "connmgr fw %s: %v; set up the lock-down directly (%s backend, DNS queue %s, %d whitelist entries)\n",
		action, errNoDaemon, b.Name(), mode, wl.Len())
	return 0
}
