package daemon_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/testbed"
)

// Direction and scope of the lock-down, with the real binary on both backends (issue 9 item 2):
// a learned address opens new connections outwards (from the device, and forwarded from the
// LAN) and replies inwards, never a new connection into the device; an address learned from a
// LAN client's query opens forwarding only, never the device; an address written in the
// whitelist file is open both ways, as in the seed.
//
// Besides the world of TestE2EDNSFirewall: a LAN client (198.18.100.2) behind the device's
// access-point interface wlan0-1 (198.18.100.1), masqueraded out of the uplinks, and a static
// whitelist address 198.18.200.9 and lan.afero.io's 198.18.200.5 in the cloud. The device serves a greeting on port 8081.
const (
	scopeStatic = "198.18.200.9"
	scopeLAN    = "198.18.200.5" // lan.afero.io, resolved by the LAN client
	lanClient   = "198.18.100.2"
	devPort     = 8081
)

const scopeWireless = `
config wifi-iface 'ap'
	option network 'apnet'
	option mode 'ap'
	option ifname 'wlan0-1'
`

func TestE2EScope(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var lan *testbed.NS
			records := append(slices.Clone(e2eRecords), testbed.Record{Name: "lan.afero.io", TTL: 30, Addr: netip.MustParseAddr(scopeLAN)})
			e := newE2EWith(t, backend, testbed.Options{}, records, map[string]string{
				"network":   e2eNetwork + "\nconfig interface 'apnet'\n\toption device 'wlan0-1'\n\toption proto 'static'\n",
				"wireless":  scopeWireless,
				"connmgr":   e2eConnmgr(backend, "1"),
				"whitelist": "*.afero.io\n" + scopeStatic + "\n",
			}, func(w *testbed.World, _ string) {
				lan = addLAN(t, w)
			})

			// Learned by the device: out yes, new connections in no.
			e.resolve("api.afero.io")
			e.waitLearned("198.18.200.1", "198.18.200.2")
			if err := e.connect("198.18.200.1", 5*time.Second); err != nil {
				t.Fatalf("device -> learned 198.18.200.1: %v", err)
			}
			devAddr := e.w.MustUplink("eth0").Addr.String()
			if err := dialHello(e.w.Cloud, "198.18.200.1", devAddr, devPort, 1500*time.Millisecond); err == nil {
				t.Errorf("learned 198.18.200.1 opened a new connection into the device")
			}
			// Forwarded from the LAN to the device's learned address: yes.
			if err := dialHello(lan, "", "198.18.200.2", e2ePort, 5*time.Second); err != nil {
				t.Errorf("LAN -> device-learned 198.18.200.2: %v", err)
			}

			// The whitelist file's address: both ways.
			if err := dialHello(e.w.Cloud, scopeStatic, devAddr, devPort, 5*time.Second); err != nil {
				t.Errorf("static %s -> device: %v", scopeStatic, err)
			}
			if err := e.connect(scopeStatic, 5*time.Second); err != nil {
				t.Errorf("device -> static %s: %v", scopeStatic, err)
			}

			// A LAN client's own lookup (forwarded to the uplink's resolver) opens forwarding
			// only: the LAN client gets through, the device does not.
			mark := e.p.Mark()
			if got := resolveFrom(t, lan, "lan.afero.io"); !slices.Equal(got, []string{scopeLAN}) {
				t.Fatalf("LAN client: short.afero.io answered %v", got)
			}
			if line := e.waitLog(mark, `msg="DNS reply" name=lan.afero.io `); !strings.Contains(line, "forward_only=true") {
				t.Errorf("LAN client's answer not opened for forwarding only: %s", line)
			}
			if fwd := e.members("fwd4"); !slices.Contains(fwd, scopeLAN) {
				t.Errorf("LAN client's answer not in the forwarding set: %v", fwd)
			}
			if l := e.learned(); slices.Contains(l, scopeLAN) {
				t.Errorf("LAN client's answer opened the device: %v", l)
			}
			if err := dialHello(lan, "", scopeLAN, e2ePort, 5*time.Second); err != nil {
				t.Errorf("LAN -> its own learned 198.18.200.5: %v", err)
			}
			e.mustDrop(scopeLAN)
			if err := dialHello(e.w.Cloud, scopeLAN, devAddr, devPort, 1500*time.Millisecond); err == nil {
				t.Errorf("LAN-learned 198.18.200.5 opened a new connection into the device")
			}
			// Nothing not whitelisted from the LAN.
			if err := dialHello(lan, "", "198.18.200.3", e2ePort, 1500*time.Millisecond); err == nil {
				t.Errorf("LAN -> not whitelisted 198.18.200.3 got through")
			}
		})
	}
}

// addLAN gives the device an access-point interface wlan0-1 with a LAN client behind it,
// masqueraded out of the uplinks (as fw4's wan zone does), the static whitelist address in the
// cloud and the device's greeting server.
func addLAN(t *testing.T, w *testbed.World) *testbed.NS {
	t.Helper()
	lan := testbed.NewNS(t, "lan")
	testbed.Veth(t, w.Device, "wlan0-1", []string{"198.18.100.1/24"}, lan, "eth0", []string{lanClient + "/24"})
	lan.MustRun(t, "ip", "route", "add", "default", "via", "198.18.100.1")
	w.Device.MustRun(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	var devs []string
	for _, u := range w.Uplinks {
		devs = append(devs, `"`+u.Dev+`"`)
	}
	if err := w.Device.Nft("table ip e2enat {\n\tchain post {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n" +
		"\t\toifname { " + strings.Join(devs, ", ") + " } masquerade\n\t}\n}\n"); err != nil {
		t.Fatal(err)
	}
	if err := w.Cloud.IP("addr add "+scopeStatic+"/32 dev lo", "addr add "+scopeLAN+"/32 dev lo"); err != nil {
		t.Fatal(err)
	}
	w.Device.ServeHello(t, fmt.Sprintf("0.0.0.0:%d", devPort))
	return lan
}

// dialHello connects from ns (from source address src, "" for any) to dst:port and reads the
// greeting of NS.ServeHello.
func dialHello(ns *testbed.NS, src, dst string, port int, timeout time.Duration) error {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: timeout}
		if src != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
		}
		var err error
		c, err = d.DialContext(context.Background(), "tcp4", net.JoinHostPort(dst, fmt.Sprint(port)))
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	return readHello(c, dst, timeout)
}

// readHello reads ServeHello's greeting on c and checks it names dst.
func readHello(c net.Conn, dst string, timeout time.Duration) error {
	c.SetReadDeadline(time.Now().Add(timeout))
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "hello from "+dst) {
		return fmt.Errorf("greeting %q", buf[:n])
	}
	return nil
}

// resolveFrom asks the cloud's DNS server for name's A records from ns (a LAN client's query
// is forwarded by the device).
func resolveFrom(t *testing.T, ns *testbed.NS, name string) []string {
	t.Helper()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	var m *dns.Msg
	err := ns.Do(func() (err error) {
		c := &dns.Client{Timeout: 10 * time.Second}
		m, _, err = c.Exchange(q, netip.AddrPortFrom(testbed.DNSAddr, 53).String())
		return err
	})
	if err != nil {
		t.Fatalf("resolve %s: %v", name, err)
	}
	var out []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}
