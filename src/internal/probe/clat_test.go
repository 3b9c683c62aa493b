package probe

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// A 464XLAT uplink's IPv4 round runs on the clat device, which carries no IPv6, while the
// uplink's resolvers are IPv6 ones (DNS64) reached through the uplink's own device: Device6.
// Here eth0 stands for the clat device (its IPv6 black-holed, its IPv4 working) and wwan0 for
// the IPv6-only uplink whose resolver answers the echo host's A record.
func TestClatRoundResolvesThroughDevice6(t *testing.T) {
	w := world6(t)
	if err := w.SetFault("eth0", testbed.Fault{Blackhole: true, Family: 6}); err != nil {
		t.Fatal(err)
	}
	p := mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort})
	tg := Target{Device: "eth0", Device6: "wwan0", Source: w.MustUplink("eth0").Addr,
		DNS: []netip.Addr{testbed.DNS6Addr}, Namespace: w.Device.Handle(t)}
	if r := p.Probe(context.Background(), tg, 3*time.Second, 0); !r.OK {
		t.Fatalf("IPv4 round on eth0 resolving through wwan0: %+v", r)
	}
	// Without Device6 the resolver is asked through eth0, whose IPv6 is dead: the round fails.
	tg.Device6 = ""
	if r := mustProber(t, Config{Host: "echo.afero.io", Port: testbed.EchoPort}).Probe(context.Background(), tg, 2*time.Second, 0); r.OK {
		t.Fatalf("IPv4 round resolved through eth0's dead IPv6: %+v", r)
	}
}

func TestDeviceFor(t *testing.T) {
	for _, tc := range []struct {
		t      Target
		v4, v6 string
	}{
		{Target{Device: "eth0"}, "eth0", "eth0"},
		{Target{Device: "464-modemnet_6_4", Device6: "wwan0"}, "464-modemnet_6_4", "wwan0"},
	} {
		if got := tc.t.deviceFor(4); got != tc.v4 {
			t.Errorf("%+v: IPv4 on %q, want %q", tc.t, got, tc.v4)
		}
		if got := tc.t.deviceFor(6); got != tc.v6 {
			t.Errorf("%+v: IPv6 on %q, want %q", tc.t, got, tc.v6)
		}
	}
}
