package failover_test

import (
	"fmt"
	"testing"
	"time"
)

// TestE2ERouteLossStays: the grace must not hide a real fault. eth0's default route is deleted
// and not added again (a lease lost while carrier and address stay, or an admin's ip route del)
// and nothing else changes: connmgr moves its default route to wlan0 once
// the grace is over, not before it and not never.
func TestE2ERouteLossStays(t *testing.T) {
	r := newRig(t, "")
	eth := r.w.MustUplink("eth0")
	r.waitDefault("eth0", 30*time.Second)
	r.waitState("stanet", "ITFUP_SS", 30*time.Second)
	start := time.Now()
	if err := r.w.Device.IP(fmt.Sprintf("route del default via %s dev eth0 metric %d", eth.Gateway, eth.Metric)); err != nil {
		t.Fatal(err)
	}
	at := r.waitDefault("wlan0", 15*time.Second)
	took := at.Sub(start)
	t.Logf("default route on wlan0 %v after eth0's default route went for good", took)
	if took < time.Second {
		t.Errorf("switched after %v, within the 1.5 s grace", took)
	}
}
