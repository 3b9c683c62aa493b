package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/afero/af-conn/internal/ubus"
)

// notifyTimeout bounds `connmgr notify` from start to end: the netifd hotplug hook runs it for
// every interface event, and it must never hold anything up. The daemon also follows
// netifd's own ubus events, so a notification that does not make it in time loses nothing.
const notifyTimeout = 2 * time.Second

func init() {
	subcommands["notify"] = subcommand{"[-s SOCKET] INTERFACE ACTION",
		"tell the daemon about a netifd interface event (the hotplug hook); never blocks", notifyCommand}
}

func notifyCommand(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("connmgr notify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("s", defaultSocket, "ubus `socket`")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "connmgr notify: %v\nusage: connmgr notify [-s SOCKET] INTERFACE ACTION\n", err)
		return exitUsage
	}
	return runNotify(fs.Args(), *socket, stderr, notifyTimeout)
}

// runNotify is `connmgr notify INTERFACE ACTION`: it passes one netifd interface event to the
// daemon through its ubus method notify {"interface","action"}. No ubusd, no connmgr on the
// bus, or no answer in time all exit 0 (with a note on stderr): there is nobody to tell. An
// answer that refuses the event exits 1; bad usage exits 2.
func runNotify(args []string, socket string, stderr io.Writer, timeout time.Duration) int {
	if len(args) != 2 || args[0] == "" || args[1] == "" {
		fmt.Fprintln(stderr, "usage: connmgr notify [-s SOCKET] INTERFACE ACTION")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	conn, err := ubus.Dial(ctx, socket)
	if err != nil {
		fmt.Fprintf(stderr, "connmgr notify: no ubus at %s, nobody to tell: %v\n", socket, err)
		return 0
	}
	defer conn.Close()
	_, err = conn.Call(ctx, "connmgr", "notify", ubus.Table{
		{Name: "interface", Value: args[0]},
		{Name: "action", Value: args[1]},
	})
	var status ubus.Status
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ubus.StatusNotFound):
		fmt.Fprintln(stderr, "connmgr notify: connmgr is not running, nobody to tell")
		return 0
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ubus.StatusTimeout), errors.Is(err, ubus.ErrClosed):
		fmt.Fprintf(stderr, "connmgr notify: no answer from connmgr: %v\n", err)
		return 0
	case errors.As(err, &status):
		fmt.Fprintf(stderr, "connmgr notify %s %s: %v\n", args[0], args[1], err)
		return exitFailure
	default:
		fmt.Fprintf(stderr, "connmgr notify: %v\n", err)
		return 0
	}
}
