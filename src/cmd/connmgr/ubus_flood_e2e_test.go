package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// floodCalls is how many concurrent status calls TestUbusFlood makes (the attack:
// any member of group afconn may call status).
const floodCalls = 20000

// procKB reads a "Vm...:  N kB" line of /proc/PID/status.
func procKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^` + field + `:\s+(\d+) kB`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no %s in /proc/%d/status", field, pid)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestUbusFlood: 20,000 concurrent status calls from a local client (8 connections through
// the test's ubusd). connmgr serves a bounded number at once and refuses the rest with a
// status, so its peak RSS stays under 16 MB, it answers status promptly afterwards, and the
// refusals cost a bounded number of log lines. Before the bound: RSS 11 -> 136 MB and 20,002
// log lines.
func TestUbusFlood(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	dir := writeFiles(t, map[string]string{
		"network": testNetwork,
		"connmgr": "config connmgr 'main'\n\toption echo_host '198.19.0.1'\n",
	})
	sock := filepath.Join(dir, "ubus.sock")
	srv, err := ubustest.NewServer(sock, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	p := w.StartConnmgr(t, "-d", "-c", dir, "-s", sock)
	if _, err := p.WaitLog(regexp.MustCompile(`ubus: connected to `), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := statusOf(ctx, sock, p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	rssBefore := procKB(t, p.Pid(), "VmRSS")
	mark := p.Mark()

	const conns = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcome := map[string]int{}
	start := time.Now()
	for range conns {
		conn, err := ubus.Dial(ctx, sock)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for range floodCalls / conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
				defer ccancel()
				_, err := conn.Call(cctx, "connmgr", "status", nil)
				key := "ok"
				var st ubus.Status
				switch {
				case errors.As(err, &st):
					key = st.Error()
				case err != nil:
					key = err.Error()
				}
				mu.Lock()
				outcome[key]++
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	flood := time.Since(start)
	hwm := procKB(t, p.Pid(), "VmHWM")

	// Afterwards: status answers at once.
	after := time.Now()
	actx, acancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = statusOf(actx, sock, p)
	acancel()
	took := time.Since(after)
	time.Sleep(500 * time.Millisecond)
	lines := len(strings.Split(p.Log(), "\n")) - mark
	t.Logf("%d concurrent status calls in %v: %v; connmgr RSS %d kB before, peak (VmHWM) %d kB; status afterwards in %v; %d log lines",
		floodCalls, flood.Round(time.Millisecond), outcome, rssBefore, hwm, took.Round(time.Millisecond), lines)
	if err != nil {
		t.Fatalf("status after the flood: %v\nlog:\n%s", err, p.Log())
	}
	if hwm >= 16*1024 {
		t.Errorf("peak RSS %d kB during the flood: over 16 MB", hwm)
	}
	if lines > 50 {
		t.Errorf("%d log lines for one flood", lines)
	}
	if outcome["ok"] == 0 {
		t.Errorf("no call served during the flood: %v", outcome)
	}
}
