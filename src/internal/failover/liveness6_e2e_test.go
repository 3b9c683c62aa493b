package failover_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/testbed"
)

// beyond6 is an address beyond eth0's IPv6 subnet that its router owns
// (its cloud-side end): noise from it arrives whatever the router forwards.
var beyond6 = netip.MustParseAddr("2001:db8:11::1")

// IPv6 noise from beyond the subnet must not keep a black-holed uplink's
// IPv6 in use, as TestE2ENoiseDoesNotHideBlackHole for IPv4: UDP at 20
// packets/s, and TCP segments written blind with the tuple of a live IPv6
// connection of the device. Only eth0's IPv6 dies, so its IPv6 moves to
// wlan0 on the probes' word alone while its IPv4 stays.
func TestE2ENoiseDoesNotHideBlackHole6(t *testing.T) {
	for _, m := range livenessModes {
		t.Run(m.name, func(t *testing.T) {
			r := newDualRig(t, append([]string{}, m.args...)...)
			if m.args == nil {
				r.waitLog(`msg="firewall lock-down in force"`)
			}
			// As the hub's resolver would: the answer opens the lock-down
			// for the address.
			if _, err := r.w.Resolve(testbed.DNS6Addr, "echo.afero.io", dns.TypeAAAA); err != nil {
				t.Fatal(err)
			}
			c := dialEchoAt(t, r.w, testbed.Echo6URL())
			defer c.Close()
			if err := c.works(5 * time.Second); err != nil {
				t.Fatal(err)
			}
			dev := r.w.MustUplink("eth0").Addr6
			local := netip.MustParseAddrPort(c.LocalAddr().String())
			if local.Addr() != dev {
				t.Fatalf("the IPv6 connection is from %v, want eth0's %v", local, dev)
			}
			echo := netip.AddrPortFrom(testbed.Echo6Addr, testbed.EchoPort)
			for _, n := range []testbed.Noise{
				{From: netip.AddrPortFrom(beyond6, 5353), To: netip.AddrPortFrom(dev, 40000), PerSecond: 20},
				{From: echo, To: local, TCPFlags: 0x18, PerSecond: 20},
			} {
				stop, err := r.w.SendNoise("eth0", n)
				if err != nil {
					t.Fatal(err)
				}
				defer stop()
			}
			// The device keeps talking on its connection, so the capture
			// has samples (the spoofed segments among them) all along.
			c.SetDeadline(time.Time{})
			go func() {
				for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
				}
			}()
			start := time.Now()
			r.fault("eth0", testbed.Fault{Blackhole: true, Family: 6})
			at := r.waitDefault6("wlan0", 10*time.Second)
			t.Logf("IPv6 black hole under IPv6 noise -> IPv6 switched in %v", at.Sub(start))
			c4 := dialEcho(t, r.w)
			defer c4.Close()
			if err := c4.works(5 * time.Second); err != nil {
				t.Fatalf("IPv4 through eth0 while only its IPv6 is dead: %v", err)
			}
			r.waitDefault("eth0", time.Second)
		})
	}
}
