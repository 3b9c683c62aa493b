package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// notifyWorld is a Go ubusd with, when handler is set, an object connmgr whose notify method
// runs it.
func notifyWorld(t *testing.T, handler ubus.MethodHandler) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "ubus.sock")
	srv, err := ubustest.NewServer(socket, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if handler == nil {
		return socket
	}
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
	var stderr bytes.Buffer
	if code := runNotify([]string{"ethnet", "ifup"}, socket, &stderr, notifyTimeout); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	select {
	case args := <-got:
		iface, _ := args.String("interface")
		action, _ := args.String("action")
		if iface != "ethnet" || action != "ifup" || len(args) != 2 {
			t.Errorf("notify called with %v", args)
		}
	default:
		t.Fatal("the daemon's notify method was not called")
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr %q", stderr.String())
	}
}

func TestNotifyWithNobodyToTell(t *testing.T) {
	for name, socket := range map[string]string{
		"no ubusd":   filepath.Join(t.TempDir(), "none.sock"),
		"no connmgr": notifyWorld(t, nil),
	} {
		var stderr bytes.Buffer
		start := time.Now()
		if code := runNotify([]string{"ethnet", "ifdown"}, socket, &stderr, notifyTimeout); code != 0 {
			t.Errorf("%s: exit %d", name, code)
		}
		if took := time.Since(start); took > notifyTimeout {
			t.Errorf("%s: took %v", name, took)
		}
		if !strings.Contains(stderr.String(), "nobody to tell") {
			t.Errorf("%s: stderr %q", name, stderr.String())
		}
	}
}

func TestNotifyNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	socket := notifyWorld(t, func(ctx context.Context, _ *ubus.Request) (ubus.Table, error) {
		select { // a daemon that does not answer
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	var stderr bytes.Buffer
	start := time.Now()
	code := runNotify([]string{"ethnet", "ifup"}, socket, &stderr, 300*time.Millisecond)
	took := time.Since(start)
	if code != 0 {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
	// The timeout bounds the whole command; allow for a loaded machine, not for blocking.
	if took > 5*time.Second {
		t.Errorf("took %v with a 300ms timeout", took)
	}
	if !strings.Contains(stderr.String(), "no answer") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// TestNotifyCommand runs it as the hook does: connmgr notify -s SOCKET INTERFACE ACTION.
func TestNotifyCommand(t *testing.T) {
	got := make(chan ubus.Table, 1)
	socket := notifyWorld(t, func(_ context.Context, req *ubus.Request) (ubus.Table, error) {
		got <- req.Args
		return nil, nil
	})
	var stdout, stderr bytes.Buffer
	if code := run([]string{"notify", "-s", socket, "stanet", "ifdown"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	args := <-got
	if iface, _ := args.String("interface"); iface != "stanet" {
		t.Errorf("notify called with %v", args)
	}
	if code := run([]string{"notify", "-x", "a", "b"}, &stdout, &stderr); code != exitUsage {
		t.Errorf("bad flag: exit %d", code)
	}
}

func TestNotifyRefusedAndUsage(t *testing.T) {
	socket := notifyWorld(t, func(context.Context, *ubus.Request) (ubus.Table, error) {
		return nil, ubus.StatusInvalidArgument
	})
	var stderr bytes.Buffer
	if code := runNotify([]string{"nosuch", "ifup"}, socket, &stderr, notifyTimeout); code != 1 {
		t.Errorf("refused: exit %d, want 1 (%s)", code, stderr.String())
	}
	for _, args := range [][]string{nil, {"ethnet"}, {"ethnet", "ifup", "x"}, {"", "ifup"}} {
		stderr.Reset()
		if code := runNotify(args, socket, &stderr, notifyTimeout); code != 2 || !strings.Contains(stderr.String(), "usage") {
			t.Errorf("%q: exit %d %q, want usage and 2", args, code, stderr.String())
		}
	}
}
