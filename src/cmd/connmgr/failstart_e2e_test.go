package main

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// TestFailedStartAfterCrashFailsClosed: procd's respawn after a crash adopts the lock-down the
// crashed instance left; if that instance's start then fails (here: too few file descriptors
// for the netlink monitor, after the firewall is set up), it must leave the lock-down in place
// too, since procd starts another one 5 s later. Before, the failed start removed it, leaving
// the hub unfiltered between respawns.
func TestFailedStartAfterCrashFailsClosed(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	bin := testbed.Connmgr(t)
	dir := writeFiles(t, map[string]string{
		"network":   testNetwork,
		"connmgr":   "config connmgr 'main'\n\toption echo_host '198.19.0.1'\n\toption firewall_backend 'nftables'\n",
		"whitelist": "198.19.0.1\n",
	})
	args := []string{"-c", dir, "-w", filepath.Join(dir, "whitelist"), "-s", ""}
	failedStarts := 0
	// The descriptor limit at which the start fails after the firewall is set up depends on
	// the build; try a few.
	for n := 10; n <= 15; n++ {
		p, err := w.Device.Start(nil, bin, args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.WaitLog(regexp.MustCompile(`msg=running`), 60*time.Second); err != nil {
			t.Fatal(err)
		}
		p.Signal(syscall.SIGKILL)
		p.Wait(10 * time.Second)
		q, err := w.Device.Start(nil, "prlimit", append([]string{fmt.Sprintf("--nofile=%d:%d", n, n), "--", bin}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := q.WaitLog(regexp.MustCompile(`msg=running|msg="connmgr failed"`), 60*time.Second); err != nil {
			t.Fatal(err)
		}
		adopted := strings.Contains(q.Log(), `msg="firewall lock-down in force"`)
		if !strings.Contains(q.Log(), `msg="connmgr failed"`) || !adopted {
			q.Stop(10 * time.Second) // SIGTERM: removes the lock-down, as it should
			continue
		}
		q.Wait(10 * time.Second)
		failedStarts++
		if out, err := w.Device.Run("nft", "list", "table", "inet", "afconn"); err != nil {
			t.Fatalf("nofile %d: lock-down gone after a failed start: %v %s\nlog:\n%s", n, err, out, q.Log())
		}
		w.Device.Run("nft", "delete", "table", "inet", "afconn")
	}
	if failedStarts == 0 {
		t.Fatal("no descriptor limit from 10 to 15 made the start fail after the firewall was set up")
	}
	t.Logf("%d failed starts after a crash, each left the lock-down in place", failedStarts)
}
