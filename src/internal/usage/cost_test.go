package usage

import (
	"context"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/probe"
	"github.com/afero/af-conn/internal/testbed"
)

// wireBytes reads eth0's counters in the device namespace.
func wireBytes(t *testing.T, w *testbed.World) Bytes {
	t.Helper()
	var m map[string]Bytes
	if err := w.Device.Do(func() (err error) {
		m, err = ReadNetDev("/proc/thread-self/net/dev")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return m["eth0"]
}

// TestProbeCostOnTheWire measures what one round of each probe method
// costs on eth0 (the device's link counters, both ways) and holds the
// constants of cost.go to it (within 10 %): the budgets' arithmetic rests
// on them.
func TestProbeCostOnTheWire(t *testing.T) {
	w := testbed.New(t, testbed.Options{Uplinks: []string{"eth0"}})
	if _, err := w.StartDNS(testbed.DefaultRecords()); err != nil {
		t.Fatal(err)
	}
	l, err := w.Cloud.Listen("tcp4", "198.19.0.1:8204")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { rw.WriteHeader(http.StatusNoContent) })}
	go srv.Serve(l)
	defer srv.Close()
	u := w.MustUplink("eth0")
	tg := probe.Target{Device: "eth0", Source: u.Addr, DNS: []netip.Addr{testbed.DNSAddr}, Namespace: w.Device.Handle(t)}
	const n = 20
	measure := func(cfg probe.Config) float64 {
		p, err := probe.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if r := p.Probe(context.Background(), tg, 2*time.Second, 2*time.Second); !r.OK {
			t.Fatalf("%s: %+v", cfg.Method, r)
		}
		time.Sleep(200 * time.Millisecond)
		before := wireBytes(t, w)
		for range n {
			// One attempt per round (hedge = timeout): only what a round
			// on a healthy link costs.
			if r := p.Probe(context.Background(), tg, 2*time.Second, 2*time.Second); !r.OK {
				t.Fatalf("%s: %+v", cfg.Method, r)
			}
		}
		time.Sleep(200 * time.Millisecond) // the last FIN's ACK
		return float64(wireBytes(t, w).sub(before).Total()) / n
	}
	echo := measure(probe.Config{Method: probe.Echo, Host: "echo.afero.io", Port: testbed.EchoPort})
	echoDNS := measure(probe.Config{Method: probe.Echo, Host: "echo.afero.io", Port: testbed.EchoPort, DNSTTL: time.Nanosecond})
	icmp := measure(probe.Config{Method: probe.ICMP, Host: "echo.afero.io"})
	httpc := measure(probe.Config{Method: probe.HTTP, URL: "http://echo.afero.io:8204/generate_204"})
	t.Logf("bytes per round on eth0 (Ethernet frames): echo %.0f, echo resolving the name %.0f (DNS %.0f), icmp %.0f, http %.0f",
		echo, echoDNS, echoDNS-echo, icmp, httpc)
	for _, c := range []struct {
		what      string
		got, want float64
	}{
		{"echo", echo, EchoCost}, {"dns", echoDNS - echo, ProbeDNSCost}, {"icmp", icmp, ICMPCost}, {"http", httpc, HTTPCost},
	} {
		if c.got < c.want*0.9 || c.got > c.want*1.1 {
			t.Errorf("%s: %.0f bytes a round on the wire, cost.go says %.0f", c.what, c.got, c.want)
		}
	}
}
