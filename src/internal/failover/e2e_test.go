package failover_test

import (
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// End-to-end failover tests: the real connmgr binary in a testbed world.
// Their time limits are generous (the machine is shared); the benchmark
// measures the real figures.

func TestE2ECarrierLoss(t *testing.T) {
	r := newRig(t, "")
	start := time.Now()
	r.carrier("eth0", false)
	at := r.waitDefault("wlan0", 5*time.Second)
	t.Logf("carrier loss -> switched in %v", at.Sub(start))
	r.carrier("eth0", true)
	r.waitDefault("eth0", 20*time.Second)
}

// An idle hub (nothing sent): the next routine round finds the black hole,
// within probe_interval (15 s) and three failed rounds.
func TestE2ESilentUpstreamFailure(t *testing.T) {
	r := newRig(t, "")
	start := time.Now()
	r.fault("eth0", testbed.Fault{Blackhole: true})
	at := r.waitDefault("wlan0", 20*time.Second)
	t.Logf("black hole -> switched in %v", at.Sub(start))
	if err := dialEcho(t, r.w).works(5 * time.Second); err != nil {
		t.Fatalf("no connectivity after failover: %v", err)
	}
	// The preferred uplink returns: fail back.
	start = time.Now()
	r.fault("eth0", testbed.Fault{})
	at = r.waitDefault("eth0", 20*time.Second)
	t.Logf("restored -> switched back in %v", at.Sub(start))
}

func TestE2EAllDeadThenOneReturns(t *testing.T) {
	r := newRig(t, "")
	for _, dev := range []string{"eth0", "wlan0", "wwan0"} {
		r.fault(dev, testbed.Fault{Blackhole: true})
	}
	for _, n := range []string{"ethnet", "stanet", "modemnet"} {
		r.waitState(n, "ITFUP_SF", 90*time.Second)
	}
	r.fault("wlan0", testbed.Fault{})
	r.waitDefault("wlan0", 20*time.Second)
	if err := dialEcho(t, r.w).works(5 * time.Second); err != nil {
		t.Fatalf("no connectivity over the returned uplink: %v", err)
	}
}

func TestE2ELossDoesNotFlap(t *testing.T) {
	r := newRig(t, "")
	before := r.watch.count()
	r.fault("eth0", testbed.Fault{LossPercent: 20})
	time.Sleep(30 * time.Second)
	if n := r.watch.count() - before; n != 0 {
		t.Fatalf("default route changed %d times under 20%% loss\nlog:\n%s", n, r.p.Log())
	}
}

// A connection opened over Wi-Fi while Ethernet was dead keeps working
// after the default route returns to Ethernet (source rule + per-uplink
// table), and a new connection goes over Ethernet.
func TestE2EConnectionSurvivesFailBack(t *testing.T) {
	r := newRig(t, fastProbes)
	r.fault("eth0", testbed.Fault{Blackhole: true})
	r.waitDefault("wlan0", 15*time.Second)
	c := dialEcho(t, r.w)
	if err := c.works(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if got := c.LocalAddr().String(); got[:len("198.18.20.2")] != "198.18.20.2" {
		t.Fatalf("connection not over Wi-Fi: local %s", got)
	}
	r.fault("eth0", testbed.Fault{})
	r.waitDefault("eth0", 20*time.Second)
	for i := range 3 {
		if err := c.works(5 * time.Second); err != nil {
			t.Fatalf("Wi-Fi connection broken by fail-back (round %d): %v", i, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	n := dialEcho(t, r.w)
	if got := n.LocalAddr().String(); got[:len("198.18.10.2")] != "198.18.10.2" {
		t.Fatalf("new connection not over Ethernet: local %s", got)
	}
}

// With the firewall locking the uplinks down (the default), the probes
// still reach the echo host and failover works both ways.
func TestE2EWithFirewall(t *testing.T) {
	r := newRigArgs(t, fastProbes)
	r.fault("eth0", testbed.Fault{Blackhole: true})
	r.waitDefault("wlan0", 15*time.Second)
	r.fault("eth0", testbed.Fault{})
	r.waitDefault("eth0", 20*time.Second)
	if n := r.watch.count(); n > 4 {
		t.Fatalf("default route changed %d times for one failover and one fail-back\nlog:\n%s", n, r.p.Log())
	}
}

// Somebody deletes connmgr's default route and source rule: both come
// back at once. On SIGTERM everything of connmgr's goes, netifd's stays.
func TestE2ERoutesRestoredAndRemoved(t *testing.T) {
	r := newRig(t, "")
	ip := func(args ...string) string {
		out, err := r.w.Device.Run("ip", args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	before := r.watch.count()
	ip("route", "del", "default", "metric", "0")
	deadline := time.Now().Add(5 * time.Second)
	for r.watch.count() < before+2 { // gone, then back
		if time.Now().After(deadline) {
			t.Fatalf("default route not restored\nlog:\n%s", r.p.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.waitDefault("eth0", 5*time.Second)
	ip("rule", "del", "pref", "9001")
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(ip("-4", "rule", "show"), "9001:") {
		if time.Now().After(deadline) {
			t.Fatalf("source rule of wlan0 not restored:\n%s", ip("-4", "rule", "show"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Fatalf("connmgr did not stop cleanly: %v", err)
	}
	if out := ip("-4", "route", "show", "table", "all", "proto", "175"); out != "" {
		t.Fatalf("routes left after exit:\n%s", out)
	}
	if out := ip("-4", "rule", "show"); strings.Contains(out, "lookup 24") {
		t.Fatalf("rules left after exit:\n%s", out)
	}
	if out := ip("-4", "route", "show", "default"); strings.Count(out, "default") != 3 {
		t.Fatalf("netifd's default routes changed:\n%s", out)
	}
}

// keep_route '1' leaves the default route in place when connmgr exits.
func TestE2EKeepRoute(t *testing.T) {
	r := newRig(t, "\toption keep_route '1'\n")
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Fatalf("connmgr did not stop cleanly: %v", err)
	}
	out, err := r.w.Device.Run("ip", "-4", "route", "show", "table", "all", "proto", "175")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "default via 198.18.10.1 dev eth0" {
		t.Fatalf("after exit with keep_route, connmgr's routes are:\n%s", out)
	}
}
