package failover_test

import (
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// fastProbes is the in-use rhythm of the tests written before issue 13
// (probe_interval 1s): their subject is what evidence may do, on an idle
// hub, not the idle rhythm (TestE2EIdleProbeRate).
const fastProbes = "\toption probe_interval '1s'\n"

// A hub's cloud session: a persistent connection with a keepalive every
// 3 s. Its upstream dies silently between two keepalives; the next one goes
// unanswered, and connmgr must have switched within 3 s of sending it,
// although the idle uplink is probed only every 15 s (issue 13). Then the
// upstream returns and connmgr fails back within 5 s. The default
// configuration (firewall on: conntrack tracks the connections, as fw4
// always does on OpenWrt).
func TestE2EUnansweredKeepaliveSwitches(t *testing.T) {
	r := newRigArgs(t, "")
	const runs = 3
	worst, worstBack := r.keepaliveRuns(keepaliveLoop{addr: testbed.EchoURL(), fault: testbed.Fault{Blackhole: true},
		runs: runs, phase0: 300 * time.Millisecond, phaseStep: 900 * time.Millisecond, wait: r.waitDefault, timeout: 15 * time.Second})
	if worst > 3*time.Second {
		t.Errorf("worst: switched %v after the unanswered keepalive, target 3 s\nlog:\n%s", worst, r.p.Log())
	}
	if worstBack > 5*time.Second {
		t.Errorf("worst fail-back %v, target 5 s", worstBack)
	}
	if n := strings.Count(r.p.Log(), "traffic sent went unanswered: probing now"); n < runs {
		t.Errorf("%d rounds started by unanswered traffic in %d runs", n, runs)
	}
}

// keepaliveLoop is the loop of the keepalive tests, in either family.
type keepaliveLoop struct {
	addr  string        // the echo service the session goes to (host:port of the family's)
	fault testbed.Fault // what eth0's router does to the family
	runs  int
	// Run i injects the fault phase0 + i*phaseStep after a keepalive: a different phase of
	// the keepalives each run.
	phase0, phaseStep time.Duration
	// wait waits for the family's default route through a device (r.waitDefault, r.waitDefault6)
	// at most timeout, and returns when it moved.
	wait    func(dev string, timeout time.Duration) time.Time
	timeout time.Duration
}

// keepaliveRuns opens a session to k.addr from the device with a keepalive every 3 s; then k.runs
// times eth0's router gets k.fault, the family must move to wlan0, the fault is lifted and the
// family must fail back to eth0. It returns the worst time from the first keepalive sent after
// the fault to the switch, and the worst fail-back (from the fault's end).
func (r *rig) keepaliveRuns(k keepaliveLoop) (worst, worstBack time.Duration) {
	t := r.t
	c := dialEchoAt(t, r.w, k.addr)
	go io.Copy(io.Discard, c)
	sent := keepalives(t, c, 3*time.Second)
	for i := range k.runs {
		last := <-sent
		time.Sleep(k.phase0 + time.Duration(i)*k.phaseStep)
		faultAt := time.Now()
		r.fault("eth0", k.fault)
		var next time.Time
		for next.Before(faultAt) {
			next = <-sent
		}
		at := k.wait("wlan0", k.timeout)
		took := at.Sub(next)
		t.Logf("run %d: fault %v after a keepalive; switched %v after the next keepalive was sent (%v after the fault)",
			i, faultAt.Sub(last).Round(time.Millisecond), took.Round(time.Millisecond), at.Sub(faultAt).Round(time.Millisecond))
		worst = max(worst, took)
		back := time.Now()
		r.fault("eth0", testbed.Fault{})
		atBack := k.wait("eth0", k.timeout)
		t.Logf("run %d: upstream back -> failed back in %v", i, atBack.Sub(back).Round(time.Millisecond))
		worstBack = max(worstBack, atBack.Sub(back))
		for len(sent) > 0 {
			<-sent
		}
	}
	return worst, worstBack
}

// keepalives writes a keepalive on c every period until the test ends, and sends on the
// channel when it wrote each.
func keepalives(t testing.TB, c echoConn, every time.Duration) <-chan time.Time {
	sent := make(chan time.Time, 100)
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			at := time.Now()
			c.SetWriteDeadline(time.Now().Add(time.Second))
			c.Write([]byte("keepalive\n"))
			sent <- at
		}
	}()
	return sent
}

// An idle hub: the in-use uplink is probed at its configured rate, the
// standbys not at all between their (10-minute) rounds. Counted as the
// probe connections' SYNs on each device.
func TestE2EIdleProbeRate(t *testing.T) {
	r := newRig(t, "\toption probe_interval '5s'\n")
	if err := r.w.Device.Nft(`table inet probecount {
	chain out {
		type filter hook output priority 0;
		oifname "eth0" tcp dport ` + strconv.Itoa(testbed.EchoPort) + ` tcp flags & (syn|ack) == syn counter
		oifname "wlan0" tcp dport ` + strconv.Itoa(testbed.EchoPort) + ` tcp flags & (syn|ack) == syn counter
		oifname "wwan0" tcp dport ` + strconv.Itoa(testbed.EchoPort) + ` tcp flags & (syn|ack) == syn counter
	}
}`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the first rounds of the new standbys are over
	before := synCounts(t, r)
	const window = 31 * time.Second
	time.Sleep(window)
	after := synCounts(t, r)
	eth, wlan, wwan := after[0]-before[0], after[1]-before[1], after[2]-before[2]
	t.Logf("SYNs in %v: eth0 %d (in use, probe_interval 5s), wlan0 %d, wwan0 %d (standbys)", window, eth, wlan, wwan)
	if eth < 5 || eth > 7 {
		t.Errorf("in-use eth0: %d probe connections in %v, want 6 (every 5 s)", eth, window)
	}
	if wlan != 0 || wwan != 0 {
		t.Errorf("standbys probed within %v: wlan0 %d, wwan0 %d", window, wlan, wwan)
	}
}

func synCounts(t *testing.T, r *rig) [3]int {
	t.Helper()
	out := r.w.Device.MustRun(t, "nft", "list", "table", "inet", "probecount")
	m := regexp.MustCompile(`counter packets (\d+)`).FindAllStringSubmatch(out, -1)
	if len(m) != 3 {
		t.Fatalf("nft counters: %s", out)
	}
	var n [3]int
	for i := range n {
		n[i], _ = strconv.Atoi(m[i][1])
	}
	return n
}
