package main

import (
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// The real connmgr binary, in a device namespace of a testbed world, on the fake ubusd: the
// CLI subcommands (themselves the real binary) read and change it, a preference change is
// announced as an event and a notification, and a ubusd restart costs the object at most a
// second.
func TestUbusEndToEnd(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	bin := testbed.Connmgr(t)
	dir := writeFiles(t, map[string]string{
		"network": testNetwork,
		"connmgr": "config connmgr 'main'\n\toption echo_host '198.19.0.1'\n",
	})
	sock := filepath.Join(dir, "ubus.sock")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := ubustest.NewServer(sock, &ubustest.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { conn.Close() }()
	events := make(chan string, 32)
	if err := conn.Listen(ctx, func(name string, data ubus.Table) {
		j, _ := ubus.FormatJSON(data, false)
		events <- "event " + name + " " + string(j)
	}, "connmgr.*"); err != nil {
		t.Fatal(err)
	}

	// Firewall off (-d): this test is about the bus.
	p := w.StartConnmgr(t, "-d", "-c", dir, "-s", sock)
	if _, err := p.WaitLog(regexp.MustCompile(`ubus: connected to `+regexp.QuoteMeta(sock)), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "-s", sock)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}
	mustCLI := func(args ...string) string {
		t.Helper()
		code, out, errb := cli(args...)
		if code != 0 {
			t.Fatalf("connmgr %q: exit %d: %s\ndaemon log:\n%s", args, code, errb, p.Log())
		}
		return out
	}

	// status: readable, and --json is the document ubus answers.
	if out := mustCLI("status"); !strings.Contains(out, "network type:") || !strings.Contains(out, "firewall:        disabled") {
		t.Errorf("connmgr status:\n%s", out)
	}
	var st struct {
		NetworkType int `json:"network_type"`
		Preferred   int `json:"preferred_network_type"`
		Ubus        struct {
			Connected  bool   `json:"connected"`
			Socket     string `json:"socket"`
			Reconnects int    `json:"reconnects"`
		} `json:"ubus"`
	}
	if err := json.Unmarshal([]byte(mustCLI("status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Ubus.Connected || st.Ubus.Socket != sock || st.Preferred != -1 {
		t.Errorf("status --json: %+v", st)
	}
	direct, err := conn.Call(ctx, "connmgr", "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := direct.Get("uplinks"); !ok {
		t.Errorf("ubus status lacks uplinks: %v", direct)
	}

	// get / set / switch.
	if v := strings.TrimSpace(mustCLI("get", "65008")); v != "-1" && v != "0" && v != "1" && v != "2" {
		t.Errorf("get 65008 = %q", v)
	}
	for _, id := range []string{"65022", "65024", "65037", "65059"} {
		mustCLI("get", id)
	}
	mustCLI("set", "65008", "1")
	wantEvent := `"old_preferred_network_type":-1,"preferred_network_type":1,"reason":"preference"`
	// The uplink monitor's own events (connmgr.interface as the uplinks are proven) may come
	// in between.
	deadline := time.After(30 * time.Second)
	for seen := false; !seen; {
		select {
		case e := <-events:
			seen = strings.HasPrefix(e, "event connmgr.network ") && strings.Contains(e, wantEvent)
		case <-deadline:
			t.Fatalf("no connmgr.network event with %s after set 65008 1", wantEvent)
		}
	}
	if code, _, errb := cli("set", "65024", "1"); code != exitFailure || !strings.Contains(errb, "read-only (Permission denied)") {
		t.Errorf("set read-only: exit %d, %q", code, errb)
	}
	if code, _, errb := cli("set", "65008", "5"); code != exitFailure || !strings.Contains(errb, "out of range -1..2") {
		t.Errorf("set out of range: exit %d, %q", code, errb)
	}
	if out := mustCLI("switch", "eth0"); !strings.Contains(out, "preferring ethnet (eth0): network type 0 (Ethernet)") {
		t.Errorf("switch eth0: %q", out)
	}
	if code, _, errb := cli("switch", "eth9"); code != exitFailure || !strings.Contains(errb, `no uplink with device or network "eth9"`) {
		t.Errorf("switch eth9: exit %d, %q", code, errb)
	}
	if err := json.Unmarshal([]byte(mustCLI("status", "--json")), &st); err != nil || st.Preferred != 0 {
		t.Errorf("after switch eth0: preferred %d (%v)", st.Preferred, err)
	}
	mustCLI("notify", "ethnet", "ifup") // the hotplug hook's hint

	// ubusd restarts: connmgr is back on the new one within a second.
	for round := 1; round <= 3; round++ {
		conn.Close()
		srv.Close()
		restarted := time.Now()
		if srv, err = ubustest.NewServer(sock, &ubustest.Options{Logf: t.Logf}); err != nil {
			t.Fatal(err)
		}
		if conn, err = ubus.Dial(ctx, sock); err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := conn.LookupID(ctx, "connmgr"); err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("connmgr never came back on the restarted ubusd\n%s", p.Log())
			}
			time.Sleep(5 * time.Millisecond)
		}
		took := time.Since(restarted)
		t.Logf("ubusd restart %d: connmgr object back after %v", round, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("ubusd restart %d: object back after %v, want at most 1s", round, took)
		}
		// The object is published a moment before the connection is complete (listeners
		// registered, reconnection counted); restarting in between would make connmgr start
		// over, so wait for it.
		for {
			if err := json.Unmarshal([]byte(mustCLI("status", "--json")), &st); err != nil {
				t.Fatal(err)
			}
			if st.Ubus.Connected && st.Ubus.Reconnects == round {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("status after restart %d: %+v\n%s", round, st, p.Log())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Cleanup(func() { srv.Close() })
	// Stopping the daemon takes the object away; the CLI then says the daemon is not running.
	if err := p.Stop(15 * time.Second); err != nil {
		t.Fatalf("connmgr did not exit cleanly: %v\n%s", err, p.Log())
	}
	for {
		code, _, errb := cli("status")
		if code == exitFailure && strings.Contains(errb, "connmgr daemon is not running") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("after stop: exit %d, %q", code, errb)
		}
		time.Sleep(10 * time.Millisecond)
	}
	conn.Close()
}
