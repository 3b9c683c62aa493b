package failover_test

import (
	"io"
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
	c := dialEchoAt(t, r.w, testbed.Echo6URL())
	go io.Copy(io.Discard, c)
	sent := keepalives(t, c, 3*time.Second)
	const runs = 2
	var worst time.Duration
	for i := range runs {
		// The fault comes at a different phase of the keepalives each run.
		k := <-sent
		time.Sleep(time.Duration(500+1500*i) * time.Millisecond)
		faultAt := time.Now()
		r.fault("eth0", testbed.Fault{Blackhole: true, Family: 6})
		var next time.Time
		for next.Before(faultAt) {
			next = <-sent
		}
		at := r.waitDefault6("wlan0", 20*time.Second)
		took := at.Sub(next)
		t.Logf("run %d: IPv6 fault %v after a keepalive; IPv6 switched %v after the next keepalive was sent (%v after the fault)",
			i, faultAt.Sub(k).Round(time.Millisecond), took.Round(time.Millisecond), at.Sub(faultAt).Round(time.Millisecond))
		worst = max(worst, took)
		back := time.Now()
		r.fault("eth0", testbed.Fault{})
		atBack := r.waitDefault6("eth0", 20*time.Second)
		t.Logf("run %d: IPv6 upstream back -> failed back in %v", i, atBack.Sub(back).Round(time.Millisecond))
		for len(sent) > 0 {
			<-sent
		}
	}
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
