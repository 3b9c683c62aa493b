package firewall_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
)

// BenchmarkRepair: with set_maxelem (65,536) learned addresses and the
// watch of nf_tables' notifications running, how long after a flush the
// lock-down is in force again and every address is back, for `nft flush
// ruleset` and fw4's flush (every table deleted one by one) on the
// nftables backend; and how long a DNS answer's set update waits while
// `connmgr fw restore` puts the 65,536 back. Times run from just before
// the flush command starts (so they include starting nft). Run with
//
//	cd src && go test -run '^$' -bench Repair -benchtime 1x ./internal/firewall/
func BenchmarkRepair(b *testing.B) {
	fwtest.NeedRoot(b)
	const runs = 7
	ns := fwtest.NewNS(b, "afc-fwr")
	f := firewall.New(fwtest.NewBackend(b, ns, "nftables"), nil)
	if err := f.Setup(testPolicy); err != nil {
		b.Fatal(err)
	}
	if err := f.AllowAll(fullSet(firewall.DefaultMaxElem, false)); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	repaired := make(chan error, 16)
	if err := f.Watch(ctx, func(err error) { repaired <- err }); err != nil {
		b.Fatal(err)
	}
	for _, damage := range []struct {
		name string
		argv []string
	}{
		{"nft flush ruleset", []string{"nft", "flush", "ruleset"}},
		{"fw4 flush", []string{"sh", "-c", `nft list tables | while read dummy family table; do nft delete table "$family" "$table"; done`}},
	} {
		var lock, all, react []time.Duration
		for i := 0; i < runs; i++ {
			addFW4(b, ns)
			for len(repaired) > 0 {
				<-repaired
			}
			t0 := time.Now()
			ns.MustExec(b, damage.argv[0], damage.argv[1:]...)
			select {
			case err := <-repaired:
				if err != nil {
					b.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("%s: no repair", damage.name)
			}
			r := f.LastRestore()
			if r.Restored != firewall.DefaultMaxElem {
				b.Fatalf("%s: %+v", damage.name, r)
			}
			if testing.Verbose() {
				b.Logf("%s: %+v since %v", damage.name, r, r.At.Sub(t0))
			}
			lock = append(lock, r.At.Sub(t0))
			react = append(react, r.At.Sub(r.Noticed))
			all = append(all, r.At.Add(r.Took).Sub(t0))
			time.Sleep(200 * time.Millisecond)
		}
		b.Logf("%-18s lock-down back: median %6.1f ms, max %6.1f ms after the command started, median %5.1f ms, max %5.1f ms after the notification; %d addresses back: median %6.1f ms, max %6.1f ms (%d runs)",
			damage.name, ms(median(lock)), ms(slices.Max(lock)), ms(median(react)), ms(slices.Max(react)), firewall.DefaultMaxElem, ms(median(all)), ms(slices.Max(all)), runs)
	}

	// Set updates during `connmgr fw restore` (Restore): one DNS answer's
	// pinhole every 2 ms, from another goroutine.
	var waits []time.Duration
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			p := []firewall.Pinhole{{Addr: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), TTL: time.Minute, Forward: true}}
			t0 := time.Now()
			if err := f.AllowAll(p); err != nil {
				// Between the flush and the restore the sets are gone.
				if !errors.Is(err, firewall.ErrNotSetUp) {
					b.Error(err)
					return
				}
				continue
			}
			mu.Lock()
			waits = append(waits, time.Since(t0))
			mu.Unlock()
		}
	}()
	var took []time.Duration
	for i := 0; i < 3; i++ {
		ns.MustExec(b, "nft", "flush", "ruleset")
		t0 := time.Now()
		if err := f.Restore(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t0))
	}
	close(stop)
	wg.Wait()
	slices.Sort(waits)
	b.Logf("during 3 restores of %d addresses (median %.0f ms each): %d set updates, p50 %.2f ms, p99 %.2f ms, max %.1f ms",
		firewall.DefaultMaxElem, ms(median(took)), len(waits), ms(waits[len(waits)/2]), ms(waits[len(waits)*99/100]), ms(waits[len(waits)-1]))
	b.ReportMetric(ms(median(waits)), "update-p50-ms")
	b.ReportMetric(ms(waits[len(waits)-1]), "update-max-ms")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
