package failover_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/usage"
)

// Red team of issue 13, second round: clocks, counters, the ledger and the
// configuration as a careless admin or a flaky modem treat them.

// reloadConfig rewrites the rig's /etc/config/connmgr with edit and sends SIGHUP, and waits
// for connmgr to have applied it.
func reloadConfig(t *testing.T, r *rig, edit func(string) string) {
	t.Helper()
	path := filepath.Join(filepath.Dir(r.sock), "connmgr")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	next := edit(string(b))
	if next == string(b) {
		t.Fatal("the edit changed nothing")
	}
	if err := os.WriteFile(path, []byte(next), 0o644); err != nil {
		t.Fatal(err)
	}
	mark := r.p.Mark()
	if err := r.p.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := r.p.WaitLogFrom(mark, regexp.MustCompile(`msg=reloaded `), 10*time.Second); err != nil {
		t.Fatalf("%v\nlog:\n%s", err, r.p.Log())
	}
}

// An admin takes the Ethernet uplink out of the configuration and puts it
// back (two reloads, as LuCI's apply does when a section is re-created):
// Ethernet is still over its monthly limit, so with limit_action 'off' it
// must stay unused. The controller makes a new uplink for the returning
// section; the usage component had noted the limit as already announced,
// so it never told the new one: the route went back to eth0.
func TestE2ERedTeamLimitKeptWhenUplinkReturns(t *testing.T) {
	r := monthlyLimitReached(t, "off")
	r.waitDefault("wlan0", 5*time.Second)
	r.waitState("ethnet", "ITFNOTSUPP_SX", 5*time.Second)
	const section = "\nconfig uplink 'ethnet'\n\toption type 'ethernet'\n\toption monthly_limit '50K'\n\toption limit_action 'off'\n"
	var saved string
	reloadConfig(t, r, func(s string) string {
		saved = s
		return strings.Replace(s, section, "\n", 1)
	})
	time.Sleep(time.Second)
	reloadConfig(t, r, func(string) string { return saved })
	changes := r.watch.count()
	time.Sleep(8 * time.Second) // long enough for eth0 to be proven and taken back (fail-back ~1 s)
	if c := r.watch.count(); c != changes {
		t.Errorf("the default route changed %d times after Ethernet's section came back over its limit (limit_action off)\nlog:\n%s", c-changes, r.p.Log())
	}
	st := r.status()
	for _, u := range st.Uplinks {
		if u.Network == "ethnet" && (!u.LimitReached || u.State != "ITFNOTSUPP_SX") {
			t.Errorf("ethnet back in the configuration: state %s, limit reached %v; want ITFNOTSUPP_SX, true", u.State, u.LimitReached)
		}
	}
}

// An admin who wants Ethernet probed "never" writes probe_budget '1/month';
// Ethernet is dual-stack, so each family gets half, and the floor is capped
// at about a century. The hub downloads over Ethernet, so replies flow: they
// may defer a routine round by three floors, and three centuries overflowed
// a Duration: every confirmed reply started a round, the cheapest budget
// probing the most (the same for an uplink over its monthly limit, whose
// floor is a century, when replies reach it).
func TestE2ERedTeamTinyBudgetBusyLink(t *testing.T) {
	r := newRigWith(t, rigOptions{args: []string{"-d"}, world: testbed.Options{IPv6: testbed.V6RA},
		records: append(testbed.DefaultRecords6(), testbed.Record{Name: otaName, TTL: 300, Addr: otaAddr}),
		extra: "\nconfig uplink 'ethnet'\n\toption type 'ethernet'\n\toption probe_budget '1/month'\n" +
			"\nconfig uplink 'stanet'\n\toption type 'wifi'\n\nconfig uplink 'modemnet'\n\toption type 'cellular'\n"})
	if err := r.w.TrackConnections(); err != nil {
		t.Fatal(err)
	}
	probes := countProbeSYNs(t, r)
	time.Sleep(2 * time.Second)
	before := probes()
	stop := r.trickle()
	time.Sleep(10 * time.Second)
	stop()
	n := probes() - before
	t.Logf("10 s of a download on Ethernet with probe_budget 1/month: %d probe rounds", n)
	if n > 1 {
		t.Errorf("%d probe rounds in 10 s on an uplink whose budget allows about none", n)
	}
}

// The ledger's tmpfs fills up (a careless admin's log file in /var/run, a
// runaway download to /tmp on a router with 32 MB of RAM). connmgr must
// keep running, leave the last good ledger whole and no temporary file
// behind, and say so once, not with every write (every 30 s and every
// reload: logd's ring buffer is 64 KB on OpenWrt, and the repeated line
// pushed out what the admin needs), then say when it writes again.
func TestE2ERedTeamLedgerOnFullTmpfs(t *testing.T) {
	w := testbed.New(t, testbed.Options{})
	dir := w.RunDir
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	r := startRig(t, w, rigOptions{args: []string{"-d"}})
	if err := r.p.Signal(syscall.SIGHUP); err != nil { // one write at least
		t.Fatal(err)
	}
	r.waitLog(`msg=reloaded `)
	good, err := os.ReadFile(w.UsageLedger())
	if err != nil {
		t.Fatalf("no ledger: %v\nlog:\n%s", err, r.p.Log())
	}
	// Fill the tmpfs.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := f.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	f.Close()
	for range 3 {
		reloadConfig(t, r, func(s string) string { return s + "\n" })
	}
	if n := strings.Count(r.p.Log(), `msg="usage ledger not written"`); n != 1 {
		t.Errorf("%d log lines for one lasting failure to write the ledger, want 1\nlog:\n%s", n, r.p.Log())
	}
	if !strings.Contains(r.p.Log(), "no space left on device") {
		t.Errorf("the log does not say why the ledger is not written\nlog:\n%s", r.p.Log())
	}
	if b, err := os.ReadFile(w.UsageLedger()); err != nil || string(b) != string(good) {
		t.Errorf("the last good ledger was not left whole (%v): %q", err, b)
	}
	if left, _ := filepath.Glob(w.UsageLedger() + ".new*"); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	os.Remove(filler)
	reloadConfig(t, r, func(s string) string { return s + "\n" })
	r.waitLog(`msg="usage ledger written again"`)
	b, err := os.ReadFile(w.UsageLedger())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := usage.ParseLedger(w.UsageLedger(), b); err != nil {
		t.Fatal(err)
	}
}

// A router without a real-time clock boots at its image's build date;
// connmgr starts and writes its ledger under that month; NTP then sets the
// clock 18 months forward, and procd restarts connmgr (a crash, a
// `service connmgr restart`). The ledger's bytes are this month's: the
// restarted connmgr goes on from them under the month the clock names now,
// it does not start the month afresh (which would also lift a limit
// reached). The jump is made in the ledger (the host's clock is shared):
// its month and last look's wall time put back at the build date, its
// time since the boot left as connmgr wrote it.
func TestE2ERedTeamLedgerClockJumpedWhileStopped(t *testing.T) {
	r := newRigWith(t, rigOptions{ubus: true, args: []string{"-d"}})
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	path := r.w.UsageLedger()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	l, err := usage.ParseLedger(path, b)
	if err != nil {
		t.Fatal(err)
	}
	if l.SeenBoot == 0 {
		t.Fatalf("the ledger does not say when, since the boot, it was written:\n%s", b)
	}
	build := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	l.Month = usage.MonthOf(build)
	l.SeenWall = build.Add(time.Duration(l.SeenBoot))
	const earlier = 10_000_000 // bytes of an earlier life of eth0 this month (a re-created device)
	l.Links["ethnet"].Earlier = usage.Bytes{Rx: earlier}
	if err := os.WriteFile(path, l.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	r.restart()
	r.waitState("stanet", "ITFUP_SS", 15*time.Second)
	kernel, month, _ := uplinkUsage(t, r.sock)
	if want := usage.MonthOf(time.Now()); r.status().UsageMonth != want {
		t.Errorf("usage month %q, want the clock's %q", r.status().UsageMonth, want)
	}
	if got := month["eth0"].Rx; got < earlier+kernel["eth0"].Rx {
		t.Errorf("eth0's month after the jump: %d bytes in, want the ledger's %d + the kernel's %d: the month started afresh\nlog:\n%s",
			got, earlier, kernel["eth0"].Rx, r.p.Log())
	}
}

// A flaky modem while connmgr runs: wwan0 carries traffic, disappears (the
// USB device resets), and comes back as a new device (new index, counters
// from zero) that carries more. The month never goes backwards, keeps what
// the old device had counted at connmgr's last look, and adds the new
// device's counters once.
func TestE2ERedTeamUsageModemFlapsWhileRunning(t *testing.T) {
	r := newRigWith(t, rigOptions{ubus: true, args: []string{"-d"}})
	sendVia(t, r.w, "wwan0")
	_, month, _ := uplinkUsage(t, r.sock) // connmgr's last look at the old device
	old := month["wwan0"]
	if old.Total() == 0 {
		t.Fatal("no bytes on wwan0")
	}
	if err := r.w.Device.IP("link del wwan0"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	st := r.status()
	for _, u := range st.Uplinks {
		if u.Network == "modemnet" && u.MonthRxBytes+u.MonthTxBytes < old.Total() {
			t.Errorf("wwan0 gone: month %d bytes, was %d", u.MonthRxBytes+u.MonthTxBytes, old.Total())
		}
	}
	createWwan0(t, r.w)
	r.waitState("modemnet", "ITFUP_SS", 15*time.Second)
	sendVia(t, r.w, "wwan0")
	before := deviceCounters(t, r.w)["wwan0"]
	_, month, _ = uplinkUsage(t, r.sock)
	after := deviceCounters(t, r.w)["wwan0"]
	m := month["wwan0"]
	t.Logf("old device %+v at the last look; new device %+v..%+v; month %+v", old, before, after, m)
	if m.Total() < old.Total()+before.Total() || m.Total() > old.Total()+after.Total() {
		t.Errorf("month %d bytes, want the old device's %d + the new one's %d..%d", m.Total(), old.Total(), before.Total(), after.Total())
	}
}

// procd respawns connmgr (or an admin restarts it) while Ethernet is over its
// monthly limit with limit_action 'off': the restarted connmgr must not
// route over Ethernet, even for a moment, before it has read the ledger; and
// a restart is no news: connmgr.usage must not say again that the limit was
// reached (a hub that texts its owner on the event would, at every respawn).
func TestE2ERedTeamLimitKeptOverRestart(t *testing.T) {
	r := monthlyLimitReached(t, "off")
	r.waitDefault("wlan0", 5*time.Second)
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, events := usageEvents(ctx, t, r.sock)
	r.restart()
	r.waitState("ethnet", "ITFNOTSUPP_SX", 10*time.Second)
	r.waitDefault("wlan0", 10*time.Second)
	if _, err := conn.Call(ctx, "connmgr", "status", nil); err != nil { // a look at the counters
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if m := regexp.MustCompile(`msg="switch uplink" .*to=ethnet.*`).FindString(r.p.Log()); m != "" {
		t.Errorf("the restarted connmgr routed over Ethernet, over its limit: %s\nlog:\n%s", m, r.p.Log())
	}
	if n := len(events); n != 0 {
		t.Errorf("%d %s events after a restart, the limit reached before it and still\nlog:\n%s", n, daemon.NoticeUsage, r.p.Log())
	}
}

// A generous budget is no constraint: Ethernet probed every 200 ms with
// probe_budget '100M/h' (a round every 31 ms would be within it) gets its
// rounds every 200 ms. The budget's interval was rounded up to the whole
// second, so any budget at all held rounds to one a second.
func TestE2ERedTeamGenerousBudget(t *testing.T) {
	r := newRigWith(t, rigOptions{args: []string{"-d"}, extra: "\nconfig uplink 'ethnet'\n\toption type 'ethernet'\n\toption probe_interval '200ms'\n\toption probe_budget '100M/h'\n" +
		"\nconfig uplink 'stanet'\n\toption type 'wifi'\n\nconfig uplink 'modemnet'\n\toption type 'cellular'\n"})
	probes := countProbeSYNs(t, r)
	time.Sleep(time.Second)
	before := probes()
	time.Sleep(5 * time.Second)
	n := probes() - before
	t.Logf("5 s of idle Ethernet, probe_interval 200ms, probe_budget 100M/h: %d rounds", n)
	if n < 15 {
		t.Errorf("%d rounds in 5 s, want about 25 (probe_interval 200ms; the budget allows a round every 31 ms)", n)
	}
}

// A cellular plan's limit is money: the limit must be seen soon after the
// month reaches it, not up to a whole sampling interval (30 s) later, when
// 30 s of a 150 Mbit/s LTE download are 560 MB past it. A download at about
// 140 KB/s over Ethernet with a 3 MB monthly limit: connmgr's "limit
// reached" must come within about 2 s of traffic past the limit.
func TestE2ERedTeamLimitSeenPromptly(t *testing.T) {
	r := newRigWith(t, rigOptions{args: []string{"-d"}, records: []testbed.Record{{Name: otaName, TTL: 300, Addr: otaAddr}},
		extra: "\nconfig uplink 'ethnet'\n\toption type 'ethernet'\n\toption monthly_limit '3M'\n\toption limit_action 'off'\n" +
			"\nconfig uplink 'stanet'\n\toption type 'wifi'\n\nconfig uplink 'modemnet'\n\toption type 'cellular'\n"})
	start := deviceCounters(t, r.w)["eth0"]
	at := time.Now()
	stop := r.trickle()
	defer stop()
	line, err := r.p.WaitLog(regexp.MustCompile(`msg="monthly limit reached" network=ethnet .*bytes=(\d+)`), 60*time.Second)
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, r.p.Log())
	}
	took := time.Since(at)
	stop()
	now := deviceCounters(t, r.w)["eth0"]
	rate := float64(now.Total()-start.Total()) / took.Seconds()
	m := regexp.MustCompile(`bytes=(\d+)`).FindStringSubmatch(line)
	seen, _ := strconv.ParseUint(m[1], 10, 64)
	over := float64(seen) - 3e6
	t.Logf("download at %.0f KB/s: limit reached after %v, at %d bytes: %.0f KB (%.1f s of traffic) past the 3 MB limit",
		rate/1e3, took.Round(time.Millisecond), seen, over/1e3, over/rate)
	if over > 2.5*rate {
		t.Errorf("the limit was seen %.1f s of traffic (%.0f KB) after the month reached it", over/rate, over/1e3)
	}
}
