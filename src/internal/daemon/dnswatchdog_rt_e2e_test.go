package daemon_test

import (
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Red team, nftables, hold mode: connmgr killed (SIGKILL, as the OOM killer or procd's stop
// timeout does) while it is stopped (SIGSTOP). Its watchdog must go (end of the heartbeat
// pipe), the queue then has no reader and its bypass lets DNS through: the device's lookups
// are answered again within a few seconds.
func TestE2EDNSKilledWhileStopped(t *testing.T) {
	e := newE2E(t, "nftables")
	line := e.waitLog(0, `msg="DNS extraction running" mode=hold .*watchdog=\d+`)
	dog, _ := strconv.Atoi(regexp.MustCompile(`watchdog=(\d+)`).FindStringSubmatch(line)[1])
	e.waitLearned()
	e.sigstop()
	if err := e.p.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Wait(5 * time.Second); err == nil {
		t.Log("connmgr exited")
	}
	deadline := time.Now().Add(3 * time.Second)
	for syscall.Kill(dog, 0) == nil {
		if time.Now().After(deadline) {
			syscall.Kill(dog, syscall.SIGKILL)
			t.Fatalf("watchdog %d still running 3 s after connmgr was killed", dog)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, took, err := e.lookupRetrying("api.afero.io", 5*time.Second); err != nil {
		t.Fatalf("connmgr killed while stopped: DNS did not answer within 5 s: %v", err)
	} else {
		t.Logf("answered after %v", took.Round(time.Millisecond))
	}
}
