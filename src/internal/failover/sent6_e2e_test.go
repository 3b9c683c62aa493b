package failover_test

import (
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// The hub's cloud session over IPv6 (issue 13's target, in IPv6): a persistent IPv6 connection
// with a keepalive every 3 s, in a dual-stack world with the default configuration. eth0's
// IPv6 upstream dies silently while its IPv4 works; the next keepalive goes unanswered, and
// connmgr must have moved IPv6 to wlan0 within 3 s of sending it (its idle rounds come every
// 15 s), while IPv4 stays on eth0.
func TestE2EUnansweredKeepaliveSwitchesIPv6(t *testing.T) {
	r := newDualRig(t, []string{}...) // firewall on, as shipped
	before := r.watch.count()
	const runs = 2
	worst, _ := r.keepaliveRuns(keepaliveLoop{addr: testbed.Echo6URL(), fault: testbed.Fault{Blackhole: true, Family: 6},
		runs: runs, phase0: 500 * time.Millisecond, phaseStep: 1500 * time.Millisecond, wait: r.waitDefault6, timeout: 20 * time.Second})
	if worst > 3*time.Second {
		t.Errorf("worst: IPv6 switched %v after the unanswered keepalive, target 3 s\nlog:\n%s", worst, r.p.Log())
	}
	if n := r.watch.count() - before; n != 0 {
		t.Errorf("the IPv4 default route changed %d times while only eth0's IPv6 failed\nlog:\n%s", n, r.p.Log())
	}
	if n := strings.Count(r.p.Log(), "traffic sent went unanswered: probing now"); n < runs {
		t.Errorf("%d rounds started by unanswered traffic in %d runs", n, runs)
	}
}
