package daemon_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus"
)

// Every uplink device (issue 9 item 6), with the real binary on both backends: the cellular
// uplink is `proto 3g` on a serial port (/dev/ttyUSB2), and its traffic goes over the device
// netifd makes, 3g-modemnet (here a veth of that name), which the test's ubusd publishes as
// l3_device of network.interface.modemnet. The lock-down and the DNS gate must watch it: new
// connections out to an address not whitelisted and in from the cloud are dropped, and a DNS
// answer on it is held until its addresses are in the set. Then the device changes (the
// link is renamed wwan1, netifd says so with an event): the filtering follows.
const l3Network = `
config interface 'modemnet'
	option device '/dev/ttyUSB2'
	option proto '3g'
`

// netifd plays netifd's network.interface.modemnet on the test's ubusd.
type netifd struct {
	t    *testing.T
	conn *ubus.Conn
	mu   sync.Mutex
	dev  string
}

func (n *netifd) status(context.Context, *ubus.Request) (ubus.Table, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return ubus.Table{
		{Name: "up", Value: true},
		{Name: "proto", Value: "3g"},
		{Name: "device", Value: "/dev/ttyUSB2"},
		{Name: "l3_device", Value: n.dev},
		{Name: "dns-server", Value: []any{testbed.DNSAddr.String()}},
	}, nil
}

// setDevice changes l3_device and sends netifd's event, as it does when the interface changes.
func (n *netifd) setDevice(dev string) {
	n.t.Helper()
	n.mu.Lock()
	n.dev = dev
	n.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := n.conn.Send(ctx, "network.interface", ubus.Table{{Name: "action", Value: "ifupdate"}, {Name: "interface", Value: "modemnet"}})
	if err != nil {
		n.t.Fatal(err)
	}
}

func publishNetifd(t *testing.T, sock, dev string) *netifd {
	t.Helper()
	n := &netifd{t: t, dev: dev}
	n.conn = publishObject(t, sock, "network.interface.modemnet", ubus.Method{Name: "status", Handler: n.status})
	return n
}

// publishObject publishes an object of netifd's on the test's ubusd over a connection of its
// own, closed when the test ends.
func publishObject(t *testing.T, sock, name string, methods ...ubus.Method) *ubus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ubus.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.AddObject(ctx, &ubus.Object{Name: name, Methods: methods}); err != nil {
		t.Fatal(err)
	}
	return conn
}

// status is `connmgr status --json` of the running daemon, read back.
func (e *e2e) status() daemon.Status {
	e.t.Helper()
	out, err := e.w.Device.Run(testbed.Connmgr(e.t), "status", "--json", "-s", filepath.Join(e.dir, "ubus.sock"))
	if err != nil {
		e.t.Fatal(err)
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status %q: %v", out, err)
	}
	return st
}

func TestE2EUplinkL3Device(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			var nd *netifd
			records := append(slices.Clone(e2eRecords),
				testbed.Record{Name: "ppp.afero.io", TTL: 30, Addr: netip.MustParseAddr("198.18.200.6")},
				testbed.Record{Name: "wwan.afero.io", TTL: 30, Addr: netip.MustParseAddr("198.18.200.7")})
			e := newE2EWith(t, backend, testbed.Options{Uplinks: []string{"3g-modemnet"}}, records, map[string]string{
				"network":   l3Network,
				"connmgr":   e2eConnmgr(backend, "1"),
				"whitelist": "*.afero.io\n",
			}, func(w *testbed.World, dir string) {
				if err := w.Cloud.IP("addr add 198.18.200.6/32 dev lo", "addr add 198.18.200.7/32 dev lo"); err != nil {
					t.Fatal(err)
				}
				w.Device.ServeHello(t, "0.0.0.0:8081")
				nd = publishNetifd(t, filepath.Join(dir, "ubus.sock"), "3g-modemnet")
			})
			up := e.w.MustUplink("3g-modemnet")
			devAddr := up.Addr.String()

			// checks runs the lock-down's checks over the uplink's device, whatever its name;
			// name is a whitelisted host whose answer has to open its address before the
			// client sees it.
			checks := func(dev, name, addr string) {
				t.Helper()
				if err := e.connect("198.18.200.3", 1500*time.Millisecond); err == nil {
					t.Errorf("%s: a new connection from the device to 198.18.200.3 (not whitelisted) got through", dev)
				}
				if err := dialHello(e.w.Cloud, "198.18.200.3", devAddr, devPort, 1500*time.Millisecond); err == nil {
					t.Errorf("%s: a new connection from the cloud into the device got through", dev)
				}
				if got := e.resolve(name); !slices.Equal(got, []string{addr}) {
					t.Fatalf("%s answered %v", name, got)
				}
				if l := e.learned(); !slices.Contains(l, addr) {
					t.Errorf("%s: the answer for %s reached the client before %s was in the set (learned %v): DNS not gated on the device", dev, name, addr, l)
				}
				if err := e.connect(addr, 5*time.Second); err != nil {
					t.Errorf("%s: device -> learned %s: %v", dev, addr, err)
				}
			}
			checks("3g-modemnet", "ppp.afero.io", "198.18.200.6")
			e.waitLog(0, `msg="uplink state" network=modemnet device=3g-modemnet .*to=ITFUP_SS`)

			// The device changes: renamed (down, new name, up, netifd's route back), and netifd
			// reports it. The lock-down, the DNS gate and the uplink monitor follow.
			mark := e.p.Mark()
			if err := e.w.Device.IP("link set 3g-modemnet down", "link set 3g-modemnet name wwan1", "link set wwan1 up",
				"route add default via "+up.Gateway.String()+" dev wwan1 metric 10"); err != nil {
				t.Fatal(err)
			}
			nd.setDevice("wwan1")
			e.waitLog(mark, `msg="firewall lock-down follows the uplink devices" uplinks="\[3g-modemnet eth0 wlan0 wwan1\]"`)
			checks("wwan1", "wwan.afero.io", "198.18.200.7")
			e.waitLog(mark, `msg="uplink state" network=modemnet device=wwan1 .*to=ITFUP_SS`)
			st := e.status()
			if i := slices.IndexFunc(st.Uplinks, func(u daemon.UplinkStatus) bool { return u.Network == "modemnet" }); i < 0 || st.Uplinks[i].Device != "wwan1" {
				t.Errorf("status: uplinks %+v, want modemnet on wwan1", st.Uplinks)
			}
		})
	}
}
