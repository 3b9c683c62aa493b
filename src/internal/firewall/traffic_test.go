package firewall_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/firewall/fwtest"
)

// world is three namespaces:
//
//	lan (198.19.0.2) --lan0-- dev (firewall; eth0 is the uplink) --eth0-- up
//
// "up" holds 198.18.0.2 (resolver), 198.18.0.3 and 198.18.0.4 (servers),
// 198.18.0.6 (on the static whitelist in TestTrafficPolicy) and routes the LAN back through dev, so forwarding needs no NAT.
type world struct {
	dev, up, lan *fwtest.NS
}

const (
	dialOK   = 5 * time.Second // generous: the machine is shared
	dialDrop = 1500 * time.Millisecond
)

func newWorld(t *testing.T) *world {
	w := &world{
		dev: fwtest.NewNS(t, "afc-fwd"),
		up:  fwtest.NewNS(t, "afc-fwu"),
		lan: fwtest.NewNS(t, "afc-fwl"),
	}
	fwtest.Veth(t, w.dev, "eth0", "198.18.0.1/24", w.up, "eth0", "198.18.0.2/24")
	fwtest.Veth(t, w.dev, "lan0", "198.19.0.1/24", w.lan, "eth0", "198.19.0.2/24")
	w.up.MustExec(t, "ip", "addr", "add", "198.18.0.3/24", "dev", "eth0")
	w.up.MustExec(t, "ip", "addr", "add", "198.18.0.4/24", "dev", "eth0")
	w.up.MustExec(t, "ip", "addr", "add", "198.18.0.6/24", "dev", "eth0")
	w.up.MustExec(t, "ip", "route", "add", "198.19.0.0/24", "via", "198.18.0.1")
	w.lan.MustExec(t, "ip", "route", "add", "default", "via", "198.19.0.1")
	w.dev.MustExec(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	fwtest.ListenTCP(t, w.up, "0.0.0.0:8080")
	// UDP servers bind the address: one on 0.0.0.0 would answer from the
	// primary address and the client would not take the answer.
	fwtest.ListenUDP(t, w.up, "198.18.0.4:53")
	fwtest.ListenUDP(t, w.up, "198.18.0.4:123")
	fwtest.ListenTCP(t, w.dev, "0.0.0.0:8081")
	fwtest.ListenTCP(t, w.lan, "0.0.0.0:8080")
	return w
}

func expect(t *testing.T, what string, err error, pass bool) {
	t.Helper()
	switch {
	case pass && err != nil:
		t.Errorf("%s: want pass, got %v", what, err)
	case !pass && err == nil:
		t.Errorf("%s: want drop, but it passed", what)
	}
}

func ping(ns *fwtest.NS, addr string) error {
	_, err := ns.Exec("ping", "-c", "1", "-W", "3", addr)
	return err
}

func TestTrafficPolicy(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		w := newWorld(t)
		f := firewall.New(fwtest.NewBackend(t, w.dev, kind), nil)
		// The DNS hook with nobody listening on the queue: replies must
		// still pass (bypass).
		if err := f.Setup(firewall.Policy{Uplinks: []string{"eth0"}, Static: []netip.Prefix{netip.MustParsePrefix("198.18.0.6/32")},
			DNSQueue: firewall.QueueHook{Enabled: true, Num: 9}}); err != nil {
			t.Fatal(err)
		}
		if err := f.Allow(a("198.18.0.3"), time.Hour, false); err != nil {
			t.Fatal(err)
		}

		// The device itself.
		expect(t, "device -> whitelisted 198.18.0.3:8080", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialOK), true)
		expect(t, "device -> other 198.18.0.4:8080", fwtest.DialTCP(w.dev, "", "198.18.0.4:8080", dialDrop), false)
		expect(t, "device DNS query to 198.18.0.4:53 and its reply (queue bypass)", fwtest.ExchangeUDP(w.dev, "198.18.0.4:53", dialOK), true)
		expect(t, "device NTP to 198.18.0.4:123", fwtest.ExchangeUDP(w.dev, "198.18.0.4:123", dialOK), true)
		expect(t, "device ping 198.18.0.4", ping(w.dev, "198.18.0.4"), true)
		// Inbound from the uplink: a learned address gets replies, never a new
		// connection in; the static whitelist both ways.
		expect(t, "learned 198.18.0.3 -> device:8081 (new inbound)", fwtest.DialTCP(w.up, "198.18.0.3", "198.18.0.1:8081", dialDrop), false)
		expect(t, "static 198.18.0.6 -> device:8081", fwtest.DialTCP(w.up, "198.18.0.6", "198.18.0.1:8081", dialOK), true)
		expect(t, "device -> static 198.18.0.6:8080", fwtest.DialTCP(w.dev, "", "198.18.0.6:8080", dialOK), true)
		expect(t, "LAN -> static 198.18.0.6:8080 (forward)", fwtest.DialTCP(w.lan, "", "198.18.0.6:8080", dialOK), true)
		expect(t, "other 198.18.0.4 -> device:8081", fwtest.DialTCP(w.up, "198.18.0.4", "198.18.0.1:8081", dialDrop), false)
		expect(t, "198.18.0.4 pings the device", ping(w.up, "198.18.0.1"), true)
		// The LAN is not affected.
		expect(t, "LAN -> device:8081", fwtest.DialTCP(w.lan, "", "198.19.0.1:8081", dialOK), true)
		expect(t, "device -> LAN ping", ping(w.dev, "198.19.0.2"), true)
		// Forwarding follows the whitelist: the device's own learned
		// addresses and the forwarding set.
		expect(t, "LAN -> whitelisted 198.18.0.3:8080 (forward)", fwtest.DialTCP(w.lan, "", "198.18.0.3:8080", dialOK), true)
		expect(t, "LAN -> other 198.18.0.4:8080 (forward)", fwtest.DialTCP(w.lan, "", "198.18.0.4:8080", dialDrop), false)
		expect(t, "LAN DNS through the device to 198.18.0.4:53", fwtest.ExchangeUDP(w.lan, "198.18.0.4:53", dialOK), true)
		expect(t, "uplink host -> LAN (new inbound forward)", fwtest.DialTCP(w.up, "198.18.0.3", "198.19.0.2:8080", dialDrop), false)
		if err := f.Allow(a("198.18.0.4"), time.Hour, true); err != nil {
			t.Fatal(err)
		}
		expect(t, "LAN -> 198.18.0.4:8080 after add_forwarding", fwtest.DialTCP(w.lan, "", "198.18.0.4:8080", dialOK), true)
		expect(t, "device -> 198.18.0.4:8080 after add_forwarding only", fwtest.DialTCP(w.dev, "", "198.18.0.4:8080", dialDrop), false)
		expect(t, "forwarding-learned 198.18.0.4 -> device:8081 (new inbound)", fwtest.DialTCP(w.up, "198.18.0.4", "198.18.0.1:8081", dialDrop), false)

		// Closing a pinhole closes it for new connections.
		if err := f.Disallow(a("198.18.0.3"), false); err != nil {
			t.Fatal(err)
		}
		expect(t, "device -> 198.18.0.3:8080 after disallow", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialDrop), false)

		// After a flush everything passes until restore; then the policy
		// and the learned addresses are back.
		fwtest.Flush(t, w.dev, kind)
		expect(t, "device -> 198.18.0.4:8080 while flushed", fwtest.DialTCP(w.dev, "", "198.18.0.4:8080", dialOK), true)
		if restored, err := f.Ensure(); !restored || err != nil {
			t.Fatalf("Ensure: restored=%v err=%v", restored, err)
		}
		expect(t, "device -> 198.18.0.3:8080 after restore", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialDrop), false)
		expect(t, "LAN -> 198.18.0.4:8080 after restore (learned forward)", fwtest.DialTCP(w.lan, "", "198.18.0.4:8080", dialOK), true)

		// Teardown opens everything again.
		if err := f.Teardown(); err != nil {
			t.Fatal(err)
		}
		expect(t, "device -> 198.18.0.3:8080 after teardown", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialOK), true)
	})
}

func TestTrafficExpiry(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		w := newWorld(t)
		f := firewall.New(fwtest.NewBackend(t, w.dev, kind), nil)
		if err := f.Setup(firewall.Policy{Uplinks: []string{"eth0"}}); err != nil {
			t.Fatal(err)
		}
		if err := f.Allow(a("198.18.0.3"), 2*time.Second, false); err != nil {
			t.Fatal(err)
		}
		expect(t, "before expiry", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialOK), true)
		poll(t, 20*time.Second, "the pinhole to expire", func() bool { return f.Stats(true).Kernel["allow4"] == 0 })
		expect(t, "after expiry", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialDrop), false)
	})
}

// The locked-down devices follow the uplinks' layer-3 devices (netifd's l3_device) without a
// new set-up: what was learned stays in the kernel untouched, and the check finds nothing
// missing afterwards.
func TestTrafficSetUplinks(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		w := newWorld(t)
		f := firewall.New(fwtest.NewBackend(t, w.dev, kind), nil)
		if err := f.Setup(firewall.Policy{Uplinks: []string{"3g-modemnet"}}); err != nil {
			t.Fatal(err)
		}
		if err := f.Allow(a("198.18.0.3"), time.Hour, false); err != nil {
			t.Fatal(err)
		}
		expect(t, "eth0 not yet an uplink: device -> 198.18.0.4:8080", fwtest.DialTCP(w.dev, "", "198.18.0.4:8080", dialOK), true)
		if err := f.SetUplinks([]string{"3g-modemnet", "eth0"}); err != nil {
			t.Fatal(err)
		}
		expect(t, "eth0 an uplink: device -> other 198.18.0.4:8080", fwtest.DialTCP(w.dev, "", "198.18.0.4:8080", dialDrop), false)
		expect(t, "eth0 an uplink: 198.18.0.4 -> device:8081", fwtest.DialTCP(w.up, "198.18.0.4", "198.18.0.1:8081", dialDrop), false)
		expect(t, "eth0 an uplink: LAN -> other 198.18.0.4:8080", fwtest.DialTCP(w.lan, "", "198.18.0.4:8080", dialDrop), false)
		expect(t, "eth0 an uplink: device -> learned 198.18.0.3:8080", fwtest.DialTCP(w.dev, "", "198.18.0.3:8080", dialOK), true)
		if err := f.Verify(); err != nil {
			t.Errorf("check after SetUplinks: %v", err)
		}
		if st := f.Stats(true); st.Restores != 0 || st.Kernel["allow4"] != 1 {
			t.Errorf("SetUplinks restored or lost learned addresses: %+v", st)
		}
		if kind == firewall.BackendNFT {
			// Emptying the set of uplink devices lifts the lock-down: the check sees it.
			w.dev.MustExec(t, "nft", "flush", "set", "inet", "afconn", "uplinks")
			if restored, err := f.Ensure(); !restored || err != nil {
				t.Fatalf("Ensure after the uplinks set was flushed: restored=%v err=%v", restored, err)
			}
			expect(t, "uplinks set restored: device -> other 198.18.0.4:8080", fwtest.DialTCP(w.dev, "", "198.18.0.4:8080", dialDrop), false)
		}
		if err := f.SetUplinks([]string{"3g-modemnet"}); err != nil {
			t.Fatal(err)
		}
		expect(t, "eth0 no longer an uplink: device -> 198.18.0.4:8080", fwtest.DialTCP(w.dev, "", "198.18.0.4:8080", dialOK), true)
		if err := f.Verify(); err != nil {
			t.Errorf("check after SetUplinks: %v", err)
		}
	})
}
