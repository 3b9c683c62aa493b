package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/firewall"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

const busTestNetwork = `
config interface 'ethnet'
	option device 'eth0'
	option proto 'dhcp'
	option metric '10'

config interface 'stanet'
	option ifname 'wlan0'
	option proto 'dhcp'
	option metric '20'

config interface 'modemnet'
	option ifname 'wwan0'
	option proto 'dhcp'
	option metric '50'

config interface 'lan'
	option device 'br-lan'
	option proto 'static'
`

// fakeUplinks stands in for the uplink monitor: it fills the uplink part of the status and
// records what the bus tells it. Its fields are used on the loop only (tests use d.Do).
type fakeUplinks struct {
	uplinks     []UplinkStatus
	networkType int
	inUse       string
	netifd      []string
	prefs       []int
}

func (f *fakeUplinks) start(context.Context) error { return nil }
func (f *fakeUplinks) reload(_, _ *Loaded)         {}
func (f *fakeUplinks) stop()                       {}
func (f *fakeUplinks) fillStatus(s *Status) {
	s.Uplinks = append(s.Uplinks, f.uplinks...)
	s.NetworkType, s.InUse = f.networkType, f.inUse
}
func (f *fakeUplinks) netifdChanged(network string, info *NetifdInterface) {
	if info == nil {
		f.netifd = append(f.netifd, network+" gone")
		return
	}
	f.netifd = append(f.netifd, fmt.Sprintf("%s up=%v dns=%v", network, info.Up, info.DNS))
}
func (f *fakeUplinks) preferenceChanged(v int) { f.prefs = append(f.prefs, v) }

// syncBuf is a log sink tests can read while the daemon writes.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type busTest struct {
	t    *testing.T
	dir  string
	sock string
	srv  *ubustest.Server
	d    *Daemon
	up   *fakeUplinks
	fw   *fakeBackend // the firewall component's backend; nil when the firewall mode is off
	log  *syncBuf
	conn *ubus.Conn // the test's own connection, as the ubus CLI would have
	ctx  context.Context
	stop func() // stops the daemon and waits for it
}

type busOpts struct {
	firewall bool
	noServer bool                      // start the daemon while ubusd is away
	more     func(*Daemon) []component // more components, after the bus and the stand-ins
}

func startBus(t *testing.T, o busOpts) *busTest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	bt := &busTest{t: t, dir: t.TempDir(), log: &syncBuf{}, ctx: ctx, up: &fakeUplinks{networkType: -1}}
	bt.sock = filepath.Join(bt.dir, "ubus.sock")
	if err := os.WriteFile(filepath.Join(bt.dir, "network"), []byte(busTestNetwork), 0o644); err != nil {
		t.Fatal(err)
	}
	if o.firewall {
		bt.writeConnmgr("config connmgr 'main'\n")
	} else {
		bt.writeConnmgr("config connmgr 'main'\n\toption firewall '0'\n")
	}
	if !o.noServer {
		bt.startServer()
	}
	d, err := New(Options{
		UCIDir: bt.dir, WhitelistPath: filepath.Join(bt.dir, "whitelist"), UbusSocket: bt.sock,
		Logger: logline.New(bt.log, logline.LevelDebug),
		Clock:  newFakeClock(),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Only the bus is real here, with stand-ins for the rest: the other components touch the
	// kernel, and this test runs in the host's namespace.
	d.components = []component{newBus(d), bt.up}
	if o.firewall {
		bt.fw = &fakeBackend{}
		fc := newFirewallComponent(d)
		fc.open = func(string) (firewall.Backend, error) { return bt.fw, nil }
		d.components = append(d.components, fc)
	}
	if o.more != nil {
		d.components = append(d.components, o.more(d)...)
	}
	bt.d = d
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.Run(runCtx) }()
	var once sync.Once
	bt.stop = func() {
		once.Do(func() {
			stop()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("daemon did not stop")
			}
		})
	}
	t.Cleanup(func() {
		bt.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", bt.log.String())
		}
	})
	if !o.noServer {
		bt.waitObject()
	}
	return bt
}

func (bt *busTest) writeConnmgr(body string) {
	bt.t.Helper()
	if err := os.WriteFile(filepath.Join(bt.dir, "connmgr"), []byte(body), 0o644); err != nil {
		bt.t.Fatal(err)
	}
}

// startServer (re)starts the fake ubusd and connects the test's client to it.
func (bt *busTest) startServer() { bt.startServerWith(nil) }

// startServerWith starts the fake ubusd under a temporary name, lets prepare publish objects
// on it (netifd's), and only then moves it to the daemon's socket path, so the daemon finds
// them at its first connection.
func (bt *busTest) startServerWith(prepare func()) {
	bt.t.Helper()
	tmp := bt.sock + ".new"
	srv, err := ubustest.NewServer(tmp, &ubustest.Options{Logf: bt.t.Logf})
	if err != nil {
		bt.t.Fatal(err)
	}
	bt.srv = srv
	bt.t.Cleanup(func() { srv.Close() })
	conn, err := ubus.Dial(bt.ctx, tmp)
	if err != nil {
		bt.t.Fatal(err)
	}
	bt.conn = conn
	bt.t.Cleanup(func() { conn.Close() })
	if prepare != nil {
		prepare()
	}
	if err := os.Rename(tmp, bt.sock); err != nil {
		bt.t.Fatal(err)
	}
}

// waitObject polls until the connmgr object is on the bus and returns how long it took.
func (bt *busTest) waitObject() time.Duration {
	bt.t.Helper()
	start := time.Now()
	for {
		if _, err := bt.conn.LookupID(bt.ctx, ObjectName); err == nil {
			return time.Since(start)
		}
		if bt.ctx.Err() != nil {
			bt.t.Fatalf("object %s never appeared on the bus", ObjectName)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (bt *busTest) call(method string, args ubus.Table) (ubus.Table, error) {
	return bt.conn.Call(bt.ctx, ObjectName, method, args)
}

// loop runs f on the daemon's loop.
func (bt *busTest) loop(f func()) {
	bt.t.Helper()
	if err := bt.d.Do(bt.ctx, f); err != nil {
		bt.t.Fatal(err)
	}
}

// eventually polls cond (on the loop) until it holds.
func (bt *busTest) eventually(what string, cond func() bool) {
	bt.t.Helper()
	for {
		var ok bool
		bt.loop(func() { ok = cond() })
		if ok {
			return
		}
		if bt.ctx.Err() != nil {
			bt.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func args(kv ...any) ubus.Table {
	var t ubus.Table
	for i := 0; i+1 < len(kv); i += 2 {
		t = append(t, ubus.Field{Name: kv[i].(string), Value: kv[i+1]})
	}
	return t
}

func wantStatus(t *testing.T, what string, reply ubus.Table, err error, want ubus.Status, msg string) {
	t.Helper()
	got := ubus.StatusOf(err)
	if got != want {
		t.Errorf("%s: status %v (%v), want %v", what, got, err, want)
		return
	}
	if msg != "" {
		e, _ := reply.String("error")
		if !strings.Contains(e, msg) {
			t.Errorf("%s: error text %q does not say %q", what, e, msg)
		}
	}
}

// The object is on the bus with the fixed methods and argument types (`ubus -v list
// connmgr` shows these).
func TestBusObjectSignature(t *testing.T) {
	bt := startBus(t, busOpts{})
	objs, err := bt.conn.Lookup(bt.ctx, ObjectName)
	if err != nil || len(objs) != 1 {
		t.Fatalf("lookup: %v %v", objs, err)
	}
	got, err := ubus.FormatJSON(objs[0].Signature, false)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"status":{},"get_attribute":{"id":5},"set_attribute":{"id":5,"value":5},"reload":{},` +
		`"switch":{"interface":3},"allow":{"address":3,"comment":3,"forward":7},"disallow":{"address":3,"forward":7},` +
		`"firewall_restore":{},"notify":{"interface":3,"action":3}}`
	if string(got) != want {
		t.Errorf("signature\n got %s\nwant %s", got, want)
	}
}

func TestBusStatus(t *testing.T) {
	bt := startBus(t, busOpts{})
	if st, err := bt.call("status", nil); err != nil {
		t.Fatal(err)
	} else if j, _ := ubus.FormatJSON(st, false); !strings.Contains(string(j), `"uplinks":[]`) {
		t.Errorf("no uplinks should read as [], not null:\n%s", j)
	}
	bt.loop(func() {
		bt.up.uplinks = []UplinkStatus{{Network: "ethnet", Device: "eth0", Type: "ethernet", State: "ITFUP_SS", StateNum: 4,
			Address: "198.18.1.2", Gateway: "198.18.1.1", InUse: true, LastProbe: "success", RTTms: 1.5, Probes: 3}}
		bt.up.networkType, bt.up.inUse = 0, "ethnet"
	})
	st, err := bt.call("status", nil)
	if err != nil {
		t.Fatal(err)
	}
	j, _ := ubus.FormatJSON(st, false)
	for _, want := range []string{`"network_type":0`, `"in_use":"ethnet"`, `"preferred_network_type":-1`,
		`"firewall":{"mode":"disabled"`, `"uplinks":[{"network":"ethnet","device":"eth0","type":"ethernet","state":"ITFUP_SS","state_num":4,`,
		`"rtt_ms":1.500000`, `"ubus":{"connected":true,"socket":"` + bt.sock + `","reconnects":0}`} {
		if !strings.Contains(string(j), want) {
			t.Errorf("status lacks %s:\n%s", want, j)
		}
	}
	// Same document as StatusTable of the loop's own snapshot (what `connmgr status --json` prints).
	var direct ubus.Table
	bt.loop(func() { direct, err = StatusTable(bt.d.Status()) })
	dj, _ := ubus.FormatJSON(direct, false)
	if err != nil || string(dj) != string(j) {
		t.Errorf("status over ubus differs from the loop's:\n%s\n%s", j, dj)
	}
}

func TestBusAttributes(t *testing.T) {
	bt := startBus(t, busOpts{})
	bt.loop(func() {
		bt.up.uplinks = []UplinkStatus{
			{Network: "ethnet", Type: "ethernet", StateNum: 5},
			{Network: "stanet", Type: "wifi", StateNum: 4},
			{Network: "modemnet", Type: "cellular", StateNum: 2},
		}
		bt.up.networkType = 1
	})
	for id, want := range map[int32]int32{65008: 1, 65024: 2, 65037: 0, 65059: 1, 65022: 0b101} {
		r, err := bt.call("get_attribute", args("id", id))
		if err != nil {
			t.Errorf("get %d: %v", id, err)
			continue
		}
		if v, _ := r.Int("value"); v != int64(want) {
			t.Errorf("get %d = %d, want %d (%v)", id, v, want, r)
		}
		if i, _ := r.Int("id"); i != int64(id) {
			t.Errorf("get %d answered id %d", id, i)
		}
	}
	// Any integer width is accepted (the stock CLI sends int32, other clients int8 or int64).
	for _, v := range []any{int8(2), int16(0), int32(1), int64(-1)} {
		r, err := bt.call("set_attribute", args("id", int32(65008), "value", v))
		if err != nil {
			t.Fatalf("set 65008 = %v (%T): %v", v, v, err)
		}
		want, _ := ubus.AsInt(v)
		if got, _ := r.Int("value"); got != want {
			t.Errorf("set reply %v, want value %d", r, want)
		}
		var pref int
		bt.loop(func() { pref = bt.d.PreferredNetworkType() })
		if pref != int(want) {
			t.Errorf("after set %d the preference is %d", want, pref)
		}
	}
	var prefs []int
	bt.loop(func() { prefs = slices.Clone(bt.up.prefs) })
	if !slices.Equal(prefs, []int{2, 0, 1, -1}) {
		t.Errorf("preference sink saw %v, want [2 0 1 -1]", prefs)
	}

	bt.call("set_attribute", args("id", int32(65008), "value", int32(2)))
	for _, tc := range []struct {
		method string
		args   ubus.Table
		status ubus.Status
		msg    string
	}{
		{"set_attribute", args("id", int32(65024), "value", int32(1)), ubus.StatusPermissionDenied, "read-only"},
		{"set_attribute", args("id", int32(65022), "value", int32(7)), ubus.StatusPermissionDenied, "read-only"},
		{"set_attribute", args("id", int32(65008), "value", int32(3)), ubus.StatusInvalidArgument, "out of range -1..2"},
		{"set_attribute", args("id", int32(65008), "value", int32(-2)), ubus.StatusInvalidArgument, "out of range"},
		{"set_attribute", args("id", int32(65008), "value", "1"), ubus.StatusInvalidArgument, `"value" must be an integer`},
		{"set_attribute", args("id", int32(65008)), ubus.StatusInvalidArgument, `missing argument "value"`},
		{"set_attribute", args("id", int32(12), "value", int32(0)), ubus.StatusInvalidArgument, "unknown attribute 12"},
		{"get_attribute", args("id", int32(12)), ubus.StatusInvalidArgument, "unknown attribute 12"},
		{"get_attribute", nil, ubus.StatusInvalidArgument, `missing argument "id"`},
		{"get_attribute", args("id", "65008"), ubus.StatusInvalidArgument, `"id" must be an integer`},
		{"no_such_method", nil, ubus.StatusMethodNotFound, ""},
	} {
		r, err := bt.call(tc.method, tc.args)
		wantStatus(t, fmt.Sprintf("%s %v", tc.method, tc.args), r, err, tc.status, tc.msg)
	}
	var pref int
	bt.loop(func() { pref = bt.d.PreferredNetworkType() })
	if pref != 2 {
		t.Errorf("refused sets changed the preference to %d", pref)
	}
}

func TestBusReload(t *testing.T) {
	bt := startBus(t, busOpts{})
	bt.writeConnmgr("config connmgr 'main'\n\toption firewall '0'\n\toption echo_port '8080'\n")
	if _, err := bt.call("reload", nil); err != nil {
		t.Fatalf("reload: %v", err)
	}
	bt.writeConnmgr("config connmgr 'main'\n\toption firewall '0'\n\toption echo_port 'eighty'\n")
	r, err := bt.call("reload", nil)
	wantStatus(t, "bad reload", r, err, ubus.StatusInvalidArgument, "echo_port")
	if e, _ := r.String("error"); !strings.Contains(e, filepath.Join(bt.dir, "connmgr")) {
		t.Errorf("bad reload's error %q does not name the file", e)
	}
	bt.loop(func() {
		if p := bt.d.cur.Config.Main.EchoPort; p != 8080 || bt.d.counters.Reloads != 1 {
			t.Errorf("after a good and a bad reload: echo_port %d, reloads %d; want 8080, 1", p, bt.d.counters.Reloads)
		}
	})
}

func TestBusSwitch(t *testing.T) {
	bt := startBus(t, busOpts{})
	for _, tc := range []struct {
		iface string
		want  int
	}{{"wlan0", 1}, {"modemnet", 2}, {"eth0", 0}, {"stanet", 1}} {
		r, err := bt.call("switch", args("interface", tc.iface))
		if err != nil {
			t.Fatalf("switch %s: %v", tc.iface, err)
		}
		var pref int
		bt.loop(func() { pref = bt.d.PreferredNetworkType() })
		if pref != tc.want {
			t.Errorf("switch %s: preference %d, want %d", tc.iface, pref, tc.want)
		}
		if v, _ := r.Int("preferred_network_type"); v != int64(tc.want) {
			t.Errorf("switch %s answered %v", tc.iface, r)
		}
	}
	r, err := bt.call("switch", args("interface", "eth9"))
	wantStatus(t, "switch eth9", r, err, ubus.StatusNotFound, `no uplink with device or network "eth9"`)
	r, err = bt.call("switch", args("interface", "lan"))
	wantStatus(t, "switch lan (not an uplink)", r, err, ubus.StatusNotFound, "")
	r, err = bt.call("switch", nil)
	wantStatus(t, "switch without interface", r, err, ubus.StatusInvalidArgument, `missing argument "interface"`)
}

func TestBusFirewallMethodsWithFirewallOff(t *testing.T) {
	bt := startBus(t, busOpts{})
	for _, m := range []struct {
		name string
		args ubus.Table
	}{
		{"allow", args("address", "198.18.5.5", "comment", "cloud")},
		{"disallow", args("address", "198.18.5.5")},
	} {
		r, err := bt.call(m.name, m.args)
		wantStatus(t, m.name, r, err, ubus.StatusNotSupported, "firewall mode is off")
	}
	// Nothing to restore is success: the firewall include calls it whatever the mode.
	r, err := bt.call("firewall_restore", nil)
	if v, _ := r.String("firewall"); err != nil || v != "disabled" {
		t.Errorf("firewall_restore with the firewall off: %v %v", r, err)
	}
}

// allow, disallow and firewall_restore reach the firewall component (here on an in-memory
// backend): what fwcfg.sh and the firewall include call.
func TestBusFirewallMethods(t *testing.T) {
	bt := startBus(t, busOpts{firewall: true})
	elems := func() []string {
		_, m, _ := bt.fw.snapshot()
		var out []string
		for k, p := range m {
			out = append(out, k+" "+p.Comment)
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		method string
		args   ubus.Table
	}{
		{"allow", args("address", "198.18.5.5", "comment", "cloud", "forward", true)},
		{"allow", args("address", "2001:db8::5")},
		{"allow", args("address", "198.18.5.6", "comment", "other")},
		{"disallow", args("address", "198.18.5.6", "forward", false)},
	} {
		if _, err := bt.call(c.method, c.args); err != nil {
			t.Errorf("%s %v: %v", c.method, c.args, err)
		}
	}
	want := []string{"false:2001:db8::5 ", "true:198.18.5.5 cloud"}
	if got := elems(); !slices.Equal(got, want) {
		t.Errorf("firewall holds %q, want %q", got, want)
	}
	// A flush removed everything; firewall_restore puts it back.
	bt.fw.Teardown()
	if _, err := bt.call("firewall_restore", nil); err != nil {
		t.Fatal(err)
	}
	if got := elems(); !slices.Equal(got, want) {
		t.Errorf("after restore the firewall holds %q, want %q", got, want)
	}
	for _, c := range []struct {
		method string
		args   ubus.Table
		msg    string
	}{
		{"allow", args("address", "cloud.example"), `"cloud.example" is not an IP address`},
		{"allow", args("address", "198.18.5.0/24"), "not an IP address"},
		{"allow", nil, `missing argument "address"`},
		{"allow", args("address", "127.0.0.1"), `"127.0.0.1" is a loopback address`},
		{"allow", args("address", "::1"), `"::1" is a loopback address`},
		{"allow", args("address", "::ffff:127.0.0.2"), "is a loopback address"},
		{"allow", args("address", "224.0.0.251"), "is a multicast address"},
		{"allow", args("address", "ff02::fb"), "is a multicast address"},
		{"allow", args("address", "255.255.255.255"), "is the broadcast address"},
		{"allow", args("address", "0.0.0.0"), "is the unspecified address"},
		{"allow", args("address", "::"), "is the unspecified address"},
		{"allow", args("address", "fe80::1%eth0"), `"fe80::1%eth0" is a scoped address`},
		{"allow", args("address", "2001:db8::1%2"), "is a scoped address"},
		{"allow", args("address", "198.18.5.5", "forward", "yes"), `"forward" must be a boolean`},
		{"disallow", args("address", int32(5)), `"address" must be a non-empty string`},
	} {
		r, err := bt.call(c.method, c.args)
		wantStatus(t, fmt.Sprintf("%s %v", c.method, c.args), r, err, ubus.StatusInvalidArgument, c.msg)
	}
	if got := elems(); !slices.Equal(got, want) {
		t.Errorf("refused calls changed the firewall: %q", got)
	}
}

// Every notice becomes an event and a notification to subscribers; a preference change is
// announced as connmgr.network with reason "preference".
func TestBusEventsAndNotifications(t *testing.T) {
	bt := startBus(t, busOpts{})
	type got struct{ kind, name, data string }
	ch := make(chan got, 16)
	record := func(kind string) func(string, ubus.Table) {
		return func(name string, data ubus.Table) {
			j, _ := ubus.FormatJSON(data, false)
			ch <- got{kind, name, string(j)}
		}
	}
	if err := bt.conn.Listen(bt.ctx, record("event"), "connmgr.*"); err != nil {
		t.Fatal(err)
	}
	if err := bt.conn.Subscribe(bt.ctx, ObjectName, record("notify"), nil); err != nil {
		t.Fatal(err)
	}
	// ubusd tells the object it has a subscriber asynchronously: wait until the daemon's
	// connection knows, or the first notification could be skipped.
	bt.eventually("subscriber known", func() bool {
		b := bt.d.components[0].(*bus)
		conn := b.client.Conn()
		return conn != nil && conn.HasSubscribers(b.obj)
	})
	expect := func(name, data string) {
		t.Helper()
		seen := map[string]bool{}
		for len(seen) < 2 {
			select {
			case g := <-ch:
				if g.name != name || g.data != data {
					t.Fatalf("%s %s %s; want %s %s", g.kind, g.name, g.data, name, data)
				}
				seen[g.kind] = true
			case <-time.After(10 * time.Second):
				t.Fatalf("no event and notification %s (saw %v)", name, seen)
			}
		}
	}
	u := UplinkStatus{Network: "stanet", Device: "wlan0", Type: "wifi", State: "ITFUP_SS", StateNum: 4, Address: "198.18.2.2", InUse: true}
	bt.loop(func() { bt.d.announce(networkNotice("ethnet", "stanet", 0, 1, "failover")) })
	expect(NoticeNetwork, `{"network_type":1,"new":"stanet","old":"ethnet","old_network_type":0,"reason":"failover"}`)
	bt.loop(func() { bt.d.announce(interfaceNotice(u, 3)) })
	expect(NoticeInterface, `{"address":"198.18.2.2","device":"wlan0","gateway":"","in_use":true,"network":"stanet","old_state_num":3,"state":"ITFUP_SS","state_num":4,"type":"wifi"}`)
	bt.loop(func() { bt.d.announce(wifiNotice(u)) })
	expect(NoticeWiFi, `{"device":"wlan0","in_use":true,"network":"stanet","state":"ITFUP_SS","state_num":4,"wifi_state":2}`)

	bt.loop(func() { bt.up.networkType, bt.up.inUse = 0, "ethnet" })
	if _, err := bt.call("set_attribute", args("id", int32(65008), "value", int32(1))); err != nil {
		t.Fatal(err)
	}
	expect(NoticeNetwork, `{"network_type":0,"new":"ethnet","old":"ethnet","old_network_type":0,"old_preferred_network_type":-1,"preferred_network_type":1,"reason":"preference"}`)
	// Setting the same value again changes nothing and announces nothing.
	if _, err := bt.call("set_attribute", args("id", int32(65008), "value", int32(1))); err != nil {
		t.Fatal(err)
	}
	if _, err := bt.call("switch", args("interface", "eth0")); err != nil {
		t.Fatal(err)
	}
	expect(NoticeNetwork, `{"network_type":0,"new":"ethnet","old":"ethnet","old_network_type":0,"old_preferred_network_type":1,"preferred_network_type":0,"reason":"preference"}`)
}

func (bt *busTest) publishNetifd(name string, answer func() (ubus.Table, error)) *ubus.Object {
	bt.t.Helper()
	obj := &ubus.Object{Name: "network.interface." + name, Methods: []ubus.Method{{Name: "status",
		Handler: func(context.Context, *ubus.Request) (ubus.Table, error) { return answer() }}}}
	if _, err := bt.conn.AddObject(bt.ctx, obj); err != nil {
		bt.t.Fatal(err)
	}
	return obj
}

// netifd's view is read at connection, after each network.interface event for an uplink,
// and on the hotplug hint; other networks' events are ignored; a network netifd drops is
// forgotten.
func TestBusNetifd(t *testing.T) {
	// netifd is there before connmgr: its answer is read at connection.
	bt := startBus(t, busOpts{noServer: true})
	var mu sync.Mutex
	answer := readNetifdSample(t)
	asked := map[string]int{}
	status := func(name string) func() (ubus.Table, error) {
		return func() (ubus.Table, error) {
			mu.Lock()
			defer mu.Unlock()
			asked[name]++
			return answer, nil
		}
	}
	var eth *ubus.Object
	bt.startServerWith(func() {
		eth = bt.publishNetifd("ethnet", status("ethnet"))
		bt.publishNetifd("lan", status("lan"))
	})
	bt.waitObject()
	bt.eventually("netifd data for ethnet", func() bool {
		n, ok := bt.d.netifdInfo("ethnet")
		return ok && n.Up && len(n.DNS) == 2
	})
	var st Status
	bt.loop(func() { st = bt.d.Status() })
	if st.Ubus == nil || len(st.Ubus.Netifd) != 1 || st.Ubus.Netifd[0].Network != "ethnet" {
		t.Errorf("status lacks netifd's view: %+v", st.Ubus)
	}

	// netifd says ethnet went down; connmgr asks again and hears it.
	mu.Lock()
	answer = ubus.Table{{Name: "up", Value: false}, {Name: "device", Value: "eth0"}}
	mu.Unlock()
	if err := bt.conn.Send(bt.ctx, "network.interface", args("action", "ifdown", "interface", "ethnet")); err != nil {
		t.Fatal(err)
	}
	bt.eventually("ethnet down", func() bool { n, ok := bt.d.netifdInfo("ethnet"); return ok && !n.Up })
	// An event for a network that is not an uplink is not followed up.
	if err := bt.conn.Send(bt.ctx, "network.interface", args("action", "ifup", "interface", "lan")); err != nil {
		t.Fatal(err)
	}
	// The hotplug hint: netifd is asked again.
	mu.Lock()
	answer = readNetifdSample(t)
	mu.Unlock()
	if _, err := bt.call("notify", args("interface", "ethnet", "action", "ifup")); err != nil {
		t.Fatal(err)
	}
	bt.eventually("ethnet up again", func() bool { n, ok := bt.d.netifdInfo("ethnet"); return ok && n.Up })
	// netifd drops the network: forgotten.
	if err := bt.conn.RemoveObject(bt.ctx, eth); err != nil {
		t.Fatal(err)
	}
	if err := bt.conn.Send(bt.ctx, "network.interface", args("action", "ifdown", "interface", "ethnet")); err != nil {
		t.Fatal(err)
	}
	bt.eventually("ethnet forgotten", func() bool { _, ok := bt.d.netifdInfo("ethnet"); return !ok })

	var sink []string
	bt.loop(func() { sink = slices.Clone(bt.up.netifd) })
	wantSink := []string{"ethnet up=true dns=[198.18.1.1 198.18.0.53]", "ethnet up=false dns=[]", "ethnet up=true dns=[198.18.1.1 198.18.0.53]", "ethnet gone"}
	if !slices.Equal(sink, wantSink) {
		t.Errorf("netifd sink saw\n %q\nwant %q", sink, wantSink)
	}
	mu.Lock()
	defer mu.Unlock()
	if asked["lan"] != 0 {
		t.Errorf("lan's status was asked %d times; it is not an uplink", asked["lan"])
	}
	for _, bad := range []ubus.Table{args("interface", "ethnet"), args("action", "ifup"), args("interface", "", "action", "ifup")} {
		r, err := bt.call("notify", bad)
		wantStatus(t, fmt.Sprintf("notify %v", bad), r, err, ubus.StatusInvalidArgument, "argument")
	}
}

// After ubusd restarts, the object is back within a second, subscribers can subscribe
// again, and netifd is asked again.
func TestBusReconnects(t *testing.T) {
	bt := startBus(t, busOpts{})
	for round := 1; round <= 3; round++ {
		bt.srv.Close()
		bt.conn.Close()
		bt.startServer()
		took := bt.waitObject()
		t.Logf("round %d: connmgr back on the restarted ubusd after %v", round, took.Round(time.Millisecond))
		if took > time.Second {
			t.Errorf("round %d: object back after %v, want at most 1s", round, took)
		}
		if _, err := bt.call("status", nil); err != nil {
			t.Fatalf("status after restart: %v", err)
		}
		bt.eventually("reconnect counted", func() bool {
			st := bt.d.Status()
			return st.Ubus.Connected && st.Ubus.Reconnects == uint64(round)
		})
	}
	bt.srv.Close()
	bt.conn.Close()
	bt.startServerWith(func() {
		bt.publishNetifd("stanet", func() (ubus.Table, error) { return args("up", true, "l3_device", "wlan0"), nil })
	})
	bt.waitObject()
	bt.eventually("netifd asked after reconnecting", func() bool { n, ok := bt.d.netifdInfo("stanet"); return ok && n.Device == "wlan0" })
}

// Without ubusd the daemon runs, says so once, and joins the bus when ubusd appears.
func TestBusWithoutUbusd(t *testing.T) {
	bt := startBus(t, busOpts{noServer: true})
	var st Status
	bt.loop(func() { st = bt.d.Status() })
	if st.Ubus == nil || st.Ubus.Connected {
		t.Fatalf("ubus status without ubusd: %+v", st.Ubus)
	}
	// Several retries happen (backoff up to 500 ms) while the log says it once.
	time.Sleep(1500 * time.Millisecond)
	retry := regexp.MustCompile(`connect to ubus at .*retrying`)
	if n := len(retry.FindAllString(bt.log.String(), -1)); n != 1 {
		t.Errorf("the missing ubusd was logged %d times, want once:\n%s", n, bt.log.String())
	}
	bt.startServer()
	bt.waitObject()
	bt.eventually("connected", func() bool { return bt.d.Status().Ubus.Connected })
	bt.eventually("connection logged", func() bool { return strings.Contains(bt.log.String(), "ubus: connected to "+bt.sock) })
}

// Stopping the daemon takes the object off the bus.
func TestBusStopRemovesObject(t *testing.T) {
	bt := startBus(t, busOpts{})
	bt.stop()
	// ubusd removes the object when it sees the connection end, which it may do after
	// Run returned.
	for {
		_, err := bt.conn.LookupID(bt.ctx, ObjectName)
		if errors.Is(err, ubus.StatusNotFound) {
			break
		}
		if bt.ctx.Err() != nil {
			t.Fatalf("after the daemon stopped, lookup of %s: %v; want NOT_FOUND", ObjectName, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
