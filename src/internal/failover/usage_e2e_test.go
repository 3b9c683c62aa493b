package failover_test

import (
	"context"
	"os"
	"path/filepath"
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
	var nsLink string
	r.w.Device.Do(func() (err error) { nsLink, err = os.Readlink("/proc/thread-self/ns/net"); return })
	ledger := daemon.DefaultUsageLedger + "." + strings.Trim(strings.TrimPrefix(nsLink, "net:"), "[]")
	t.Cleanup(func() { os.Remove(ledger) })
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
	dir := filepath.Dir(r.sock)
	r.p = r.w.StartConnmgr(t, "-d", "-c", dir, "-w", filepath.Join(dir, "whitelist"), "-s", r.sock)
	r.waitState("stanet", "ITFUP_SS", 15*time.Second)
	check("restarted")
}
