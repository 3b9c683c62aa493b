package failover_test

import (
	"io"
	"net"
	"testing"
	"time"
)

// A captive portal that intercepts every TCP connection (whatever its
// address: a transparent proxy on the ISP's router) and accepts what it
// is sent, but is no cloud: the echo probe connects and gets no echo. An
// application of the device that keeps one connection busy (a heartbeat
// every 20 ms) gets the portal's ACKs in the cloud's name. README: "the
// echo probe ... still decides once the replies stop"; this checks whether
// it decides while they do not.
func TestE2EPortalAcksInCloudsName(t *testing.T) {
	r := newRigWith(t, rigOptions{extra: fastProbes})
	r.waitLog(`msg="firewall lock-down in force"`)
	u := r.w.MustUplink("eth0")
	ln, err := u.Router.Listen("tcp4", ":9999")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) { io.Copy(io.Discard, c); c.Close() }(c)
		}
	}()
	if err := u.Router.Nft("table ip portal {\n\tchain pre {\n\t\ttype nat hook prerouting priority -100; policy accept;\n\t\tiifname \"todev\" tcp dport != 53 redirect to :9999\n\t}\n}\n"); err != nil {
		t.Fatal(err)
	}
	c := dialEcho(t, r.w) // intercepted: the portal answers in the echo's name
	if err := c.works(time.Second); err == nil {
		t.Fatal("the echo answered through the portal: no portal to test")
	}
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write([]byte("heartbeat\n"))
			}
		}
	}()
	start := time.Now()
	at := r.waitDefault("wlan0", 10*time.Second)
	t.Logf("portal acking a heartbeat -> switched in %v", at.Sub(start))
}
