package failover_test

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/usage"
)

// deviceCounters reads the device namespace's link counters.
func deviceCounters(t testing.TB, w *testbed.World) map[string]usage.Bytes {
	t.Helper()
	var m map[string]usage.Bytes
	if err := w.Device.Do(func() (err error) {
		m, err = usage.ReadNetDev("/proc/thread-self/net/dev")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return m
}

// ledgerOf is the usage ledger connmgr keeps for the rig: inside its world (the test bed sets
// CONNMGR_USAGE_LEDGER), gone with it.
func ledgerOf(t *testing.T, r *rig) string {
	return r.w.UsageLedger()
}

// uplinkUsage calls ubus status and returns each uplink's counters: kernel and month.
func uplinkUsage(t *testing.T, sock string) (kernel, month map[string]usage.Bytes, probeBytes map[string]int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := conn.Call(ctx, "connmgr", "status", nil)
	if err != nil {
		t.Fatal(err)
	}
	ups, _ := st.Array("uplinks")
	kernel, month, probeBytes = map[string]usage.Bytes{}, map[string]usage.Bytes{}, map[string]int64{}
	for _, u := range ups {
		tb, ok := u.(ubus.Table)
		if !ok {
			t.Fatalf("uplink %T", u)
		}
		dev, _ := tb.String("device")
		get := func(k string) uint64 {
			v, ok := tb.Int(k)
			if !ok {
				t.Fatalf("status of %s has no %s: %v", dev, k, tb)
			}
			return uint64(v)
		}
		kernel[dev] = usage.Bytes{Rx: get("rx_bytes"), Tx: get("tx_bytes")}
		month[dev] = usage.Bytes{Rx: get("month_rx_bytes"), Tx: get("month_tx_bytes")}
		probeBytes[dev] = int64(get("probe_bytes"))
	}
	return kernel, month, probeBytes
}

// ubus status reports each uplink's bytes as the kernel counts them, and this month's bytes
// (the whole device life, in the boot's first ledger) the same; after a restart of connmgr,
// with traffic while it was away, the month goes on from the ledger and still matches.
func TestE2EUsageMatchesKernel(t *testing.T) {
	r := newRigWith(t, rigOptions{ubus: true, args: []string{"-d"}})
	ledger := ledgerOf(t, r)
	if err := dialEcho(t, r.w).works(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		before := deviceCounters(t, r.w)
		kernel, month, probes := uplinkUsage(t, r.sock)
		after := deviceCounters(t, r.w)
		for _, dev := range []string{"eth0", "wlan0", "wwan0"} {
			k, b, a := kernel[dev], before[dev], after[dev]
			if k.Rx < b.Rx || k.Rx > a.Rx || k.Tx < b.Tx || k.Tx > a.Tx || k.Total() == 0 {
				t.Errorf("%s: %s: status says %+v, the kernel %+v before and %+v after", when, dev, k, b, a)
			}
			if month[dev] != k {
				t.Errorf("%s: %s: month %+v, kernel counters %+v (the boot's first ledger counts the device's life)", when, dev, month[dev], k)
			}
			if probes[dev] == 0 {
				t.Errorf("%s: %s: no probe bytes reported", when, dev)
			}
		}
		t.Logf("%s: kernel %+v, month %+v, probe bytes %v", when, kernel, month, probes)
	}
	check("running")
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ledger); err != nil {
		t.Fatalf("no ledger after a stop: %v", err)
	}
	// Traffic while connmgr is away counts too: it is on the kernel's counters.
	if err := dialEcho(t, r.w).works(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	r.restart()
	r.waitState("stanet", "ITFUP_SS", 15*time.Second)
	check("restarted")
}

// A monthly limit reached: connmgr sends connmgr.usage, and with limit_action 'off' the uplink
// is not used any more (ITFNOTSUPP_SX): the route leaves Ethernet for Wi-Fi.
func TestE2EMonthlyLimitOff(t *testing.T) {
	r := monthlyLimitReached(t, "off")
	r.waitDefault("wlan0", 5*time.Second)
	r.waitState("ethnet", "ITFNOTSUPP_SX", 5*time.Second)
	// The log says why: not "disabled by configuration", which sends the admin looking there.
	r.waitLog(`msg="uplink state" network=ethnet .*to=ITFNOTSUPP_SX reason="over its monthly limit \(limit_action off\)"`)
}

// With limit_action 'last_resort' Ethernet over its limit is used only while nothing else is
// up: the route leaves it for the proven Wi-Fi (it stayed on Ethernet at 0c65d71), and comes
// back when Wi-Fi and cellular fail.
func TestE2EMonthlyLimitLastResort(t *testing.T) {
	r := monthlyLimitReached(t, "last_resort")
	r.waitDefault("wlan0", 5*time.Second)
	r.fault("wlan0", testbed.Fault{Blackhole: true})
	r.fault("wwan0", testbed.Fault{Blackhole: true})
	r.waitDefault("eth0", 20*time.Second)
}

// monthlyLimitReached runs a rig whose Ethernet has a 50K monthly limit with action, passes
// the limit and checks the connmgr.usage event.
func monthlyLimitReached(t *testing.T, action string) *rig {
	dirExtra := "\nconfig uplink 'ethnet'\n\toption type 'ethernet'\n\toption monthly_limit '50K'\n\toption limit_action '" + action + "'\n" +
		"\nconfig uplink 'stanet'\n\toption type 'wifi'\n\nconfig uplink 'modemnet'\n\toption type 'cellular'\n"
	r := newRigWith(t, rigOptions{ubus: true, args: []string{"-d"}, extra: dirExtra})
	ledgerOf(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, events := usageEvents(ctx, t, r.sock)
	// Below the limit so far (the rig found Ethernet in use); 64 KB echoed over Ethernet pass
	// it, and a status call reads the counters.
	if _, err := conn.Call(ctx, "connmgr", "status", nil); err != nil {
		t.Fatal(err)
	}
	if len(events) != 0 {
		t.Fatal("limit reached before the traffic")
	}
	c := dialEcho(t, r.w)
	line := strings.Repeat("x", 1023) + "\n"
	go io.Copy(io.Discard, c)
	for range 64 {
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if _, err := conn.Call(ctx, "connmgr", "status", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case data := <-events:
		if n, _ := data.String("network"); n != "ethnet" {
			t.Fatalf("event for %q: %v", n, data)
		}
		if b, _ := data.Bool("limit_reached"); !b {
			t.Fatalf("event %v", data)
		}
	case <-ctx.Done():
		t.Fatalf("no %s event\nlog:\n%s", daemon.NoticeUsage, r.p.Log())
	}
	return r
}

// A ledger left in the world's place by another network namespace of this boot (a test world
// that reused the namespace's inode, a container's): connmgr does not take its bytes as this
// namespace's, and the month matches the kernel's counters.
func TestE2EUsageStaleLedger(t *testing.T) {
	r := newRigWith(t, rigOptions{ubus: true, args: []string{"-d"}})
	ledger := ledgerOf(t, r)
	if err := r.p.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(ledger)
	if err != nil {
		t.Fatalf("no ledger after a stop: %v", err)
	}
	l, err := usage.ParseLedger(ledger, b)
	if err != nil {
		t.Fatal(err)
	}
	// Another namespace's: same boot, its own namespace (none named, as before the cookie),
	// its devices' bytes from earlier lives.
	l.Netns = ""
	for _, lk := range l.Links {
		lk.Earlier = usage.Bytes{Rx: 1 << 30, Tx: 1 << 30}
	}
	if err := os.WriteFile(ledger, l.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	r.restart()
	r.waitState("stanet", "ITFUP_SS", 15*time.Second)
	kernel, month, _ := uplinkUsage(t, r.sock)
	for _, dev := range []string{"eth0", "wlan0", "wwan0"} {
		if month[dev].Rx >= 1<<30 || month[dev].Tx >= 1<<30 {
			t.Errorf("%s: month %+v (kernel %+v): another namespace's ledger was taken as this one's", dev, month[dev], kernel[dev])
		}
	}
	if !strings.Contains(r.p.Log(), "another network namespace; counting afresh") {
		t.Errorf("no word of the stale ledger in the log:\n%s", r.p.Log())
	}
}

// usageEvents listens on the rig's ubus for connmgr.usage until ctx ends (the connection is
// closed when the test ends).
func usageEvents(ctx context.Context, t *testing.T, sock string) (*ubus.Conn, chan ubus.Table) {
	t.Helper()
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	events := make(chan ubus.Table, 16)
	if err := conn.Listen(ctx, func(ev string, data ubus.Table) {
		if ev == daemon.NoticeUsage {
			select {
			case events <- data:
			default:
			}
		}
	}, daemon.NoticeUsage); err != nil {
		t.Fatal(err)
	}
	return conn, events
}
