package testbed

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// echoVia sends one byte to the cloud's echo service out of uplink dev and waits for it back.
func echoVia(w *World, dev string, timeout time.Duration) error {
	return echoAt(w, dev, w.MustUplink(dev).Addr, netip.AddrPortFrom(EchoAddr, EchoPort), timeout)
}

// echoAt sends one byte to the echo service at to, out of uplink dev from address from.
func echoAt(w *World, dev string, from netip.Addr, to netip.AddrPort, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var c net.Conn
	err := w.Device.Do(func() (err error) {
		d := net.Dialer{
			LocalAddr: &net.TCPAddr{IP: from.AsSlice()},
			Control: func(_, _ string, rc syscall.RawConn) error {
				var serr error
				rc.Control(func(fd uintptr) {
					serr = syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, dev)
				})
				return serr
			},
		}
		c, err = d.DialContext(ctx, "tcp", to.String())
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{0x5a}); err != nil {
		return err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		return err
	}
	if b[0] != 0x5a {
		return fmt.Errorf("echo returned %#x", b[0])
	}
	return nil
}

func TestWorldReachesCloudOverEveryUplink(t *testing.T) {
	w := New(t, Options{})
	for _, u := range w.Uplinks {
		if err := echoVia(w, u.Dev, 5*time.Second); err != nil {
			t.Errorf("echo via %s: %v", u.Dev, err)
		}
	}
}

func TestFaultsAndCarrier(t *testing.T) {
	w := New(t, Options{})
	if err := w.SetFault("eth0", Fault{Blackhole: true}); err != nil {
		t.Fatal(err)
	}
	if err := echoVia(w, "eth0", 500*time.Millisecond); err == nil {
		t.Error("echo via a black-holed eth0 succeeded")
	}
	if err := echoVia(w, "wlan0", 5*time.Second); err != nil {
		t.Errorf("wlan0 should be unaffected by eth0's fault: %v", err)
	}
	if out, err := w.MustUplink("eth0").Router.Run("ping", "-c1", "-W2", w.MustUplink("eth0").Addr.String()); err != nil {
		t.Errorf("the gateway must stay reachable during a black hole: %v %s", err, out)
	}
	if err := w.SetFault("eth0", Fault{}); err != nil {
		t.Fatal(err)
	}
	if err := echoVia(w, "eth0", 5*time.Second); err != nil {
		t.Errorf("echo via eth0 after clearing the fault: %v", err)
	}
	if err := w.SetFault("eth0", Fault{LossPercent: 100}); err != nil {
		t.Fatal(err)
	}
	if err := echoVia(w, "eth0", 500*time.Millisecond); err == nil {
		t.Error("echo via eth0 at 100% loss succeeded")
	}
	if err := w.SetFault("eth0", Fault{}); err != nil {
		t.Fatal(err)
	}

	if err := w.SetCarrier("wlan0", false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := w.Device.Run("ip", "link", "show", "wlan0")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "NO-CARRIER") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("wlan0 kept its carrier after the router's end went down: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := w.SetCarrier("wlan0", true); err != nil {
		t.Fatal(err)
	}
	if err := eventually(5*time.Second, func() error { return echoVia(w, "wlan0", time.Second) }); err != nil {
		t.Errorf("wlan0 after carrier came back: %v", err)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	RequireRoot(t)
	w, err := Build(Options{Uplinks: []string{"eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{w.Device.Name, w.Cloud.Name, w.MustUplink("eth0").Router.Name}
	p, err := w.Device.Start(nil, "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := os.Stat("/run/netns/" + n); !os.IsNotExist(err) {
			t.Errorf("namespace %s still exists after Close (%v)", n, err)
		}
	}
	if _, err := os.Stat(w.EtcDir); !os.IsNotExist(err) {
		t.Errorf("%s still exists after Close", w.EtcDir)
	}
	if err := p.Wait(5 * time.Second); err == nil {
		t.Error("a process left in the world was not killed")
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A Close made while another is under way (Ctrl-C's handler racing the program's own deferred
// Close) returns only when the namespaces are gone, so the process cannot exit before.
func TestConcurrentCloseWaits(t *testing.T) {
	RequireRoot(t)
	w, err := Build(Options{Uplinks: []string{"eth0"}})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	w.OnClose(func() error {
		close(entered)
		<-release
		return nil
	})
	first := make(chan error)
	go func() { first <- w.Close() }()
	<-entered
	second := make(chan error)
	go func() { second <- w.Close() }()
	select {
	case <-second:
		t.Fatal("the second Close returned while the first was still closing")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + w.Device.Name); !os.IsNotExist(err) {
		t.Errorf("namespace %s still exists after Close (%v)", w.Device.Name, err)
	}
}

func TestOwnerPID(t *testing.T) {
	for name, want := range map[string]int{"afc123-00ab-dev": 123, "afc-1-dev": 0, "other": 0, "afcx-1": 0} {
		got, ok := ownerPID(name)
		if got != want || ok != (want != 0) {
			t.Errorf("ownerPID(%q) = %d, %v; want %d", name, got, ok, want)
		}
	}
}

func eventually(timeout time.Duration, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCloudDNSFollowsCNAMEs(t *testing.T) {
	w := New(t, Options{Uplinks: []string{"eth0"}})
	s, err := w.StartDNS(append(DefaultRecords(),
		Record{Name: "a.afero.io", TTL: 30, CNAME: "b.cdn.test"},
		Record{Name: "b.cdn.test", TTL: 30, CNAME: "c.cdn.test"},
		Record{Name: "c.cdn.test", TTL: 5, Addr: netip.MustParseAddr("198.19.0.7")},
	))
	if err != nil {
		t.Fatal(err)
	}
	// The resolver dials from goroutines of its own, so each dial must enter the namespace.
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return w.Device.Dial(ctx, "udp4", netip.AddrPortFrom(DNSAddr, 53).String())
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupNetIP(ctx, "ip4", "A.afero.io")
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0] != netip.MustParseAddr("198.19.0.7") {
		t.Errorf("a.afero.io resolved to %v, want [198.19.0.7]", addrs)
	}
	if s.Queries() == 0 {
		t.Error("the server counted no queries")
	}
}
