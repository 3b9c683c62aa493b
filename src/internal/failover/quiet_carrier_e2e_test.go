package failover_test

import (
	"os"
	"testing"
	"time"
)

// Carrier loss after a long quiet period (no link messages: the carrier
// poll asleep) still switches quickly. AFCONN_QUIET_RUNS runs it (each
// waits 30 s); skipped otherwise.
func TestE2ECarrierLossAfterQuiet(t *testing.T) {
	if os.Getenv("AFCONN_QUIET_RUNS") == "" {
		t.Skip("AFCONN_QUIET_RUNS not set")
	}
	r := newRig(t, "")
	for i := 0; i < 3; i++ {
		time.Sleep(30 * time.Second)
		start := time.Now()
		r.carrier("eth0", false)
		at := r.waitDefault("wlan0", 5*time.Second)
		t.Logf("run %d: carrier loss after 30 s quiet -> switched in %v", i, at.Sub(start))
		r.carrier("eth0", true)
		r.waitDefault("eth0", 15*time.Second)
	}
}
