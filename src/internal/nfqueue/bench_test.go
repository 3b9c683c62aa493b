package nfqueue

import (
	"fmt"
	"os"
	"sort"
	"testing"
	"time"
)

// TestBenchQueueDelay prints what passing a packet through the queue (read,
// immediate accept) adds to its one-way delay over loopback: the price a
// DNS query would pay if queries were queued instead of captured.
//
//	sudo AFCONN_BENCH=1 go test ./internal/nfqueue -run TestBenchQueueDelay -v -count=1
func TestBenchQueueDelay(t *testing.T) {
	if os.Getenv("AFCONN_BENCH") == "" {
		t.Skip("benchmark: set AFCONN_BENCH=1")
	}
	const n = 2000
	measure := func(w *world) []time.Duration {
		var d []time.Duration
		for i := 0; i < n; i++ {
			t0 := time.Now()
			w.send(t, "x")
			if w.recv(t, 10*time.Second) != "x" {
				t.Fatal("lost")
			}
			d = append(d, time.Since(t0))
		}
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d
	}
	plain := newWorld(t, 30, true) // rule, nobody bound: bypass
	base := measure(plain)
	w := newWorld(t, 31, true)
	q := w.open(t, Config{Num: 31, FailOpen: true})
	go func() {
		for {
			p, err := q.Next()
			if err != nil {
				return
			}
			q.Verdict(p.ID, Accept)
		}
	}()
	queued := measure(w)
	fmt.Printf("BENCH nfqueue-delay packets=%d bypass_p50=%v bypass_p99=%v queued_p50=%v queued_p99=%v\n",
		n, base[n/2], base[n*99/100], queued[n/2], queued[n*99/100])
}
