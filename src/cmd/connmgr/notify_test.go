package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// notifyWorld is a Go ubusd with an object connmgr whose notify method runs handler: a
// stand-in for the daemon, to check what `connmgr notify` (the hotplug hook's command) sends
// and that it never holds the hook up.
func notifyWorld(t *testing.T, handler ubus.MethodHandler) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "ubus.sock")
	srv, err := ubustest.NewServer(socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	daemon, err := ubus.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { daemon.Close() })
	obj := &ubus.Object{Name: "connmgr", Methods: []ubus.Method{{
		Name:    "notify",
		Args:    []ubus.Arg{{Name: "interface", Type: ubus.TypeString}, {Name: "action", Type: ubus.TypeString}},
		Handler: handler,
	}}}
	if _, err := daemon.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	return socket
}

func TestNotifyTellsTheDaemon(t *testing.T) {
	got := make(chan ubus.Table, 1)
	socket := notifyWorld(t, func(_ context.Context, req *ubus.Request) (ubus.Table, error) {
		got <- req.Args
		return nil, nil
	})
	// As the hook runs it: connmgr notify INTERFACE ACTION (the socket given here too).
	code, stdout, stderr := runCLI("notify", "-s", socket, "stanet", "ifdown")
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	select {
	case args := <-got:
		iface, _ := args.String("interface")
		action, _ := args.String("action")
		if iface != "stanet" || action != "ifdown" || len(args) != 2 {
			t.Errorf("notify called with %v", args)
		}
	default:
		t.Fatal("the daemon's notify method was not called")
	}
}

// TestNotifyNeverBlocks: a daemon that takes the call and never answers holds the command for
// notifyTimeout at most, and that is no error either.
func TestNotifyNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	socket := notifyWorld(t, func(ctx context.Context, _ *ubus.Request) (ubus.Table, error) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	start := time.Now()
	code, _, stderr := runCLI("notify", "ethnet", "ifup", "-s", socket)
	took := time.Since(start)
	if code != 0 || !strings.Contains(stderr, "no answer") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// The timeout bounds the whole command; the margin is for a loaded machine.
	if took < notifyTimeout/2 || took > notifyTimeout+3*time.Second {
		t.Errorf("took %v with a timeout of %v", took, notifyTimeout)
	}
}

func TestNotifyRefusedAndUsage(t *testing.T) {
	socket := notifyWorld(t, func(context.Context, *ubus.Request) (ubus.Table, error) {
		return nil, ubus.StatusInvalidArgument
	})
	if code, _, stderr := runCLI("notify", "-s", socket, "nosuch", "ifup"); code != exitFailure {
		t.Errorf("refused: exit %d, want %d (%s)", code, exitFailure, stderr)
	}
	for _, args := range [][]string{{"notify"}, {"notify", "ethnet"}, {"notify", "ethnet", "ifup", "x"}, {"notify", "-x", "a", "b"}} {
		if code, _, stderr := runCLI(args...); code != exitUsage {
			t.Errorf("%q: exit %d %q, want %d", args, code, stderr, exitUsage)
		}
	}
}
