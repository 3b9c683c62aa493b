package failover

import (
	"strings"
	"testing"
	"time"
)

// limit_action 'last_resort' (README, config docs): an uplink over its
// monthly limit carries the traffic only while no other uplink is up. Ethernet
// over its limit, Wi-Fi proven: the route must leave Ethernet for Wi-Fi, and
// come back to Ethernet only when Wi-Fi (and cellular) fail.
func TestLimitedLastResortLeavesPreferredUplink(t *testing.T) {
	s := newSimWith(t, idleSettings())
	s.run(s.now.Add(20 * time.Second))
	if s.routes.Selected != "ethnet" {
		t.Fatalf("selected %q at start", s.routes.Selected)
	}
	s.c.SetLimited("ethnet", true)
	s.run(s.now.Add(10 * time.Second))
	if s.routes.Selected == "ethnet" {
		t.Fatalf("Ethernet over its monthly limit (last_resort) still in use while Wi-Fi is proven\n%s", strings.Join(s.log, "\n"))
	}
}
