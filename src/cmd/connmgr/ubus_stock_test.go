package main

import (
	"bufio"
	"encoding/json"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// TestUbusStockEndToEnd is issue 5's check against the stock tools: the real connmgr binary in a
// testbed world on the stock ubusd, asked with the stock ubus CLI. `ubus call connmgr status`
// and `get_attribute 65008` answer, `ubus listen connmgr.*` sees the event of a failover, and
// killing and restarting ubusd loses the object for at most a second. It runs only when
// AFCONN_STOCK_UBUS names the stock install (ubustest.StockEnv; built by hand, never
// committed), as root.
func TestUbusStockEndToEnd(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"network": testNetwork,
		"connmgr": "config connmgr 'main'\n\toption echo_host '198.19.0.1'\n",
	})
	sock := filepath.Join(dir, "ubus.sock")
	stock := ubustest.StartStock(t, sock)
	w := testbed.New(t, testbed.Options{})

	p := w.StartConnmgr(t, "-d", "-c", dir, "-s", sock)
	if _, err := p.WaitLog(regexp.MustCompile(`ubus: connected to `+regexp.QuoteMeta(sock)), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	lis := stock.Command("listen", "connmgr.*")
	stdout, err := lis.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := lis.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { lis.Process.Kill(); lis.Wait() }()
	events := make(chan string, 64)
	go func() {
		for sc := bufio.NewScanner(stdout); sc.Scan(); {
			events <- sc.Text()
		}
	}()

	type status struct {
		NetworkType int    `json:"network_type"`
		InUse       string `json:"in_use"`
		Uplinks     []struct {
			Network string `json:"network"`
			State   string `json:"state"`
		} `json:"uplinks"`
	}
	callStatus := func() status {
		t.Helper()
		var st status
		out := stock.Run("call", "connmgr", "status")
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("ubus call connmgr status: %v\n%s", err, out)
		}
		return st
	}
	waitInUse := func(network string) status {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			st := callStatus()
			if st.InUse == network {
				return st
			}
			if time.Now().After(deadline) {
				t.Fatalf("in use %q, want %q\n%s", st.InUse, network, p.Log())
			}
		}
	}
	st := waitInUse("ethnet")
	t.Logf("ubus call connmgr status: network_type %d, in use %s, %d uplinks", st.NetworkType, st.InUse, len(st.Uplinks))
	if st.NetworkType != 0 || len(st.Uplinks) != 3 {
		t.Errorf("status: %+v", st)
	}

	out := stock.Run("call", "connmgr", "get_attribute", `{"id":65008}`)
	var attr struct {
		ID    int    `json:"id"`
		Name  string `json:"name"`
		Value int    `json:"value"`
	}
	if err := json.Unmarshal([]byte(out), &attr); err != nil || attr.ID != 65008 || attr.Name != "network_type" || attr.Value != 0 {
		t.Errorf("get_attribute 65008: %+v (%v)\n%s", attr, err, out)
	}
	list := stock.Run("-v", "list", "connmgr")
	for _, m := range []string{`"status":{}`, `"get_attribute":{"id":"Integer"}`, `"switch":{"interface":"String"}`} {
		if !strings.Contains(list, m) {
			t.Errorf("ubus -v list connmgr lacks %s:\n%s", m, list)
		}
	}

	// Failover: the Ethernet cable is pulled; ubus listen prints connmgr.network.
	if err := w.SetCarrier("eth0", false); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for seen := false; !seen; {
		select {
		case e := <-events:
			t.Logf("ubus listen: %s", e)
			seen = strings.HasPrefix(e, `{ "connmgr.network": `) && strings.Contains(e, `"old":"ethnet"`) &&
				strings.Contains(e, `"reason":"failover"`)
		case <-deadline:
			t.Fatalf("ubus listen saw no connmgr.network failover event\n%s", p.Log())
		}
	}
	if st := callStatus(); st.InUse == "ethnet" || st.InUse == "" {
		t.Errorf("after the cable pull, in use %q", st.InUse)
	}

	// ubusd killed and restarted: how long until `ubus list connmgr` finds the object again.
	var gaps []time.Duration
	for round := 1; round <= 5; round++ {
		stock.Kill()
		started := time.Now()
		stock.Start()
		for {
			if err := stock.Command("list", "connmgr").Run(); err == nil {
				break
			}
			if time.Since(started) > 10*time.Second {
				t.Fatalf("restart %d: connmgr not back on ubusd after 10s\n%s", round, p.Log())
			}
			time.Sleep(5 * time.Millisecond)
		}
		gap := time.Since(started)
		gaps = append(gaps, gap)
		t.Logf("stock ubusd restart %d: connmgr object back %v after ubusd started", round, gap.Round(time.Millisecond))
		if gap > time.Second {
			t.Errorf("restart %d: object back after %v, want at most 1s", round, gap)
		}
		// Let connmgr finish its reconnection (listeners, netifd) before the next kill.
		time.Sleep(200 * time.Millisecond)
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	t.Logf("object back after a ubusd restart: median %v, max %v (5 restarts)", gaps[2].Round(time.Millisecond), gaps[4].Round(time.Millisecond))
	if st := callStatus(); len(st.Uplinks) != 3 {
		t.Errorf("status after the restarts: %+v", st)
	}
}
