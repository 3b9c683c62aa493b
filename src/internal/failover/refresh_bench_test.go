package failover_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// TestRefreshBenchmark runs connmgr with the default configuration (firewall on, DNS hold,
// echo_host echo.afero.io, TTL 60 s: a pinhole of 90 s re-learned every 60 s) and opens a
// new TCP connection from the device to the echo host every second: none may fail, and no
// uplink may lose its proof. AFCONN_BENCH_REFRESH sets the length (default 10m). Run with
//
//	cd src && AFCONN_BENCH=1 go test ./internal/failover -run TestRefreshBenchmark -v -count=1 -timeout 30m
func TestRefreshBenchmark(t *testing.T) {
	if os.Getenv("AFCONN_BENCH") == "" {
		t.Skip("benchmark: set AFCONN_BENCH=1")
	}
	d := envDuration(t, "AFCONN_BENCH_REFRESH", 10*time.Minute)
	r := newRigWith(t, defaultOptions(t, nil))
	r.waitFirewall()
	addr := net.JoinHostPort(testbed.EchoAddr.String(), fmt.Sprint(testbed.EchoPort))
	var tries, failed int
	var firstFail time.Duration
	t0 := time.Now()
	for time.Since(t0) < d {
		next := time.Now().Add(time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 900*time.Millisecond)
		c, err := r.w.Device.Dial(ctx, "tcp4", addr)
		cancel()
		tries++
		if err != nil {
			if failed == 0 {
				firstFail = time.Since(t0)
			}
			failed++
		} else {
			c.Close()
		}
		time.Sleep(time.Until(next))
	}
	log := r.p.Log()
	sf := len(regexp.MustCompile(`msg="uplink state" .*to=ITFUP_SF`).FindAllString(log, -1))
	t.Logf("%v with the default configuration: %d new connections to the echo host, %d failed (first after %v); uplinks losing their proof (ITFUP_SF): %d",
		d, tries, failed, firstFail.Round(time.Second), sf)
	if failed > 0 || sf > 0 {
		t.Errorf("a name resolved again before its pinhole expired lost it: %d failed connections, %d ITFUP_SF", failed, sf)
	}
}
