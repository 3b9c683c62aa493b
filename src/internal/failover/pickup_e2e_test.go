package failover_test

import (
	"net/netip"
	"regexp"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

// A connection conntrack picked up in mid-stream (its entry was deleted,
// for example by connmgr's own flush when the uplink failed, and the
// device's next segment created a new one) is tracked with liberal
// windows both ways: conntrack then accepts, and counts, any segment with
// the connection's addresses and ports, whatever its sequence numbers. A
// blind spoofer who knows the tuple (the cloud's address and port, the
// device's address and port) must still not bring a black-holed uplink
// back after its carrier returns.
func TestE2ESpoofedRepliesOnPickedUpConnection(t *testing.T) {
	r := newRigWith(t, rigOptions{extra: fastProbes})
	r.waitLog(`msg="firewall lock-down in force"`)
	c := dialEcho(t, r.w)
	if err := c.works(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	local := netip.MustParseAddrPort(c.LocalAddr().String())
	echo := netip.AddrPortFrom(testbed.EchoAddr, testbed.EchoPort)
	r.fault("eth0", testbed.Fault{Blackhole: true})
	r.waitDefault("wlan0", 10*time.Second)
	// The failover flushed the connection's entry; the device's
	// retransmissions create a picked-up one.
	if _, err := c.Write([]byte("are you there\n")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	r.carrier("eth0", false)
	r.waitState("ethnet", "ITFDOWN_SX", 5*time.Second)
	mark := r.p.Mark()
	r.carrier("eth0", true)
	stop, err := r.w.SendNoise("eth0", testbed.Noise{From: echo, To: local, TCPFlags: 0x18, PerSecond: 20})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if l, err := r.p.WaitLogFrom(mark, regexp.MustCompile(`msg="uplink state" network=ethnet .*to=ITFUP_SS`), 10*time.Second); err == nil {
		t.Fatalf("a blind spoofer proved the black-holed Ethernet: %s\nlog:\n%s", l, r.p.Log())
	}
}
