package ubus_test

import (
	"bufio"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// TestStockUbus checks the client library's interoperability with the stock
// ubusd and ubus CLI of openwrt/ubus. It runs only when AFCONN_STOCK_UBUS
// names their install prefix (see ubustest.StockEnv).
func TestStockUbus(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "ubus.sock")
	stock := ubustest.StartStock(t, sock)
	cli, run := stock.Command, stock.Run

	cl := ubus.NewClient(sock)
	cl.Logf = t.Logf
	obj := echoObject("connmgr.stock")
	events := newEventLog()
	ctx := tctx(t)
	if err := cl.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	if err := cl.Listen(ctx, events.handle, "stock.*"); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- cl.Run(runCtx) }()
	defer func() { stop(); <-done }()
	conn, err := cl.WaitConnected(ctx)
	if err != nil {
		t.Fatal(err)
	}

	list := run("-v", "list", "connmgr.stock")
	t.Logf("ubus -v list:\n%s", list)
	for _, want := range []string{`"echo":{"value":"String"}`, `"types":{"b":"Boolean","i":"Integer","t":"Table","a":"Array"}`} {
		if !strings.Contains(list, want) {
			t.Errorf("ubus -v list lacks %s", want)
		}
	}
	call := run("call", "connmgr.stock", "echo", `{"value":"hi","n":12345678901,"f":true}`)
	t.Logf("ubus call:\n%s", call)
	if !strings.Contains(call, `"value": "hi"`) || !strings.Contains(call, `"n": 12345678901`) || !strings.Contains(call, `"f": true`) {
		t.Errorf("ubus call output %q", call)
	}
	if out, err := cli("call", "connmgr.stock", "fail").CombinedOutput(); err == nil || !strings.Contains(string(out), "Permission denied") {
		t.Errorf("ubus call fail: %v %s", err, out)
	}

	// ubus listen sees our event.
	lis := cli("listen", "connmgr.*")
	stdout, _ := lis.StdoutPipe()
	if err := lis.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { lis.Process.Kill(); lis.Wait() }()
	lines := bufio.NewScanner(stdout)
	got := make(chan string, 1)
	go func() {
		if lines.Scan() {
			got <- lines.Text()
		}
	}()
	deadline := time.Now().Add(patience)
sendLoop:
	for time.Now().Before(deadline) { // until the listener is registered
		if err := conn.Send(ctx, "connmgr.test", ubus.Table{{Name: "old", Value: "eth0"}}); err != nil {
			t.Fatal(err)
		}
		select {
		case l := <-got:
			t.Logf("ubus listen: %s", l)
			if l != `{ "connmgr.test": {"old":"eth0"} }` {
				t.Errorf("ubus listen printed %q", l)
			}
			break sendLoop
		case <-time.After(50 * time.Millisecond):
		}
	}

	// ubus send reaches our listener.
	run("send", "stock.evt", `{"x":1}`)
	if ev := events.wait(t, 1); ev[0] != `stock.evt {"x":1}` {
		t.Errorf("event %q", ev)
	}

	// ubus subscribe gets our notifications.
	sub := cli("subscribe", "connmgr.stock")
	subOut, _ := sub.StdoutPipe()
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { sub.Process.Kill(); sub.Wait() }()
	for start := time.Now(); !conn.HasSubscribers(obj); time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > patience {
			t.Fatal("no subscriber reported")
		}
	}
	if err := conn.Notify(obj, "state", ubus.Table{{Name: "up", Value: true}}); err != nil {
		t.Fatal(err)
	}
	subLines := bufio.NewScanner(subOut)
	if !subLines.Scan() || subLines.Text() != `{ "state": {"up":true} }` {
		t.Errorf("ubus subscribe printed %q", subLines.Text())
	}

	// Kill and restart ubusd: how long is the object gone? The last rounds
	// keep ubusd away for a while, so the reconnect backoff has grown.
	for round, outage := range []time.Duration{0, 0, 0, 0, 0, 3 * time.Second, 10 * time.Second} {
		killed := time.Now()
		stock.Kill()
		time.Sleep(outage)
		stock.Start()
		back := waitObject(t, sock, "connmgr.stock")
		t.Logf("restart %d (ubusd away %v): object back %v after ubusd started (%v after the kill)",
			round, outage, back.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
		if back > time.Second {
			t.Errorf("restart %d: object back %v after ubusd started, want at most 1s", round, back)
		}
	}
	if out := run("call", "connmgr.stock", "echo", `{"value":"again"}`); !strings.Contains(out, "again") {
		t.Errorf("call after restarts: %s", out)
	}
}
