package failover_test

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// TestEchoPinholeStays checks issue 13's fail-back outlier (26.8 s instead of ~0.7 s in one
// of five fail-backs): the echo host's learned pinhole (TTL 60 s + 30 s grace, re-learned by
// the probes' resolution every 60 s) must never leave connmgr's set (nftables, or an ip set) while it is
// refreshed; when it did (issue 9 item 7: a same-timeout add refreshed nothing on this kernel),
// the lock-down dropped the probes of every uplink until the next resolution, and a fail-back
// in that window waited for it. Opt-in: AFCONN_PINHOLE_WATCH=DURATION (longer than 90 s).
func TestEchoPinholeStays(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("AFCONN_PINHOLE_WATCH"))
	if err != nil {
		t.Skip("set AFCONN_PINHOLE_WATCH=DURATION (e.g. 4m)")
	}
	// nftables, as OpenWrt's fw4 runs it (the bug was in the nftables backend; auto picks
	// iptables on a test machine without fw4).
	o := defaultOptions(t, nil)
	o.extra = "\toption firewall_backend 'nftables'\n"
	r := newRigWith(t, o)
	r.waitFirewall()
	echo := testbed.EchoAddr.String()
	var missing, samples int
	firstMissing := time.Duration(0)
	start := time.Now()
	for time.Since(start) < d {
		// Either backend: nftables sets, or ip sets under iptables (auto's choice without fw4).
		out, err := r.w.Device.Run("nft", "list", "ruleset")
		if err != nil {
			t.Fatal(err)
		}
		if sets, err := r.w.Device.Run("ipset", "list"); err == nil {
			out += sets
		}
		samples++
		if !strings.Contains(out, echo) {
			if missing == 0 {
				firstMissing = time.Since(start)
			}
			missing++
		}
		time.Sleep(500 * time.Millisecond)
	}
	sf := strings.Count(r.p.Log(), "to=ITFUP_SF")
	t.Logf("over %v: echo host %s missing from the set in %d of %d samples (first at %v); %d transitions to ITFUP_SF",
		d, echo, missing, samples, firstMissing.Round(time.Second), sf)
	if missing > 0 || sf > 0 {
		t.Errorf("the echo host's pinhole left the set (%d samples) or an uplink failed (%d) with nothing injected", missing, sf)
	}
}
