package daemon

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/capture"
	"github.com/afero/af-conn/internal/failover"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/netmon"
	"github.com/afero/af-conn/internal/probe"
	"github.com/afero/af-conn/internal/route"
	"github.com/afero/af-conn/internal/uplink"
)

// fakeNet is a kernel that reports the given devices (and, as netmon does, the new ones of
// each new device list), answers every probe but those from a dead device and family, and
// records each family's routing state; nothing touches a network.
type fakeNet struct {
	mu      sync.Mutex
	devs    map[string]uplink.Device
	notify  func(netmon.Update)
	desired map[uplink.Family]route.Desired
	flushed map[uplink.Family][]netip.Addr
	// dead names the device/family pairs whose probes fail ("eth0/ipv6"), hang those whose
	// probes never end (until the daemon stops).
	dead, hang map[string]bool
	probes     []probe.Target   // every probe's target
	captures   []capture.Config // every capture started
	cleaned    *bool
	noIPv6     bool // the kernel has no IPv6: its routes cannot be opened
}

// fakeRouter is one family's routing state in fakeNet.
type fakeRouter struct {
	n   *fakeNet
	fam uplink.Family
}

func (f *fakeNet) routes(fam uplink.Family) (routeManager, error) {
	if fam == uplink.IPv6 && f.noIPv6 {
		return nil, errors.New("no IPv6")
	}
	return &fakeRouter{n: f, fam: fam}, nil
}
func (f *fakeNet) watch(ctx context.Context, opts netmon.Options) error {
	f.mu.Lock()
	f.notify = opts.Notify
	devs := f.devs
	f.mu.Unlock()
	opts.Notify(netmon.Update{Devices: devs, Resync: true})
	for {
		select {
		case <-ctx.Done():
			return nil
		case list := <-opts.DeviceChanges:
			f.mu.Lock()
			up := netmon.Update{Devices: map[string]uplink.Device{}}
			for _, dev := range list {
				up.Devices[dev] = f.devs[dev]
			}
			f.mu.Unlock()
			opts.Notify(up)
		}
	}
}
func (f *fakeNet) capture(cfg capture.Config) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.captures = append(f.captures, cfg)
	return func() {}, nil
}
func (f *fakeNet) probe(ctx context.Context, _ *probe.Prober, t probe.Target, _, _ time.Duration) uplink.ProbeResult {
	key := t.Device + "/" + uplink.FamilyOf(t.Source).String()
	f.mu.Lock()
	f.probes = append(f.probes, t)
	dead, hang := f.dead[key], f.hang[key]
	f.mu.Unlock()
	switch {
	case hang:
		<-ctx.Done()
		return uplink.ProbeResult{Started: time.Now(), Err: "stopped"}
	case dead:
		return uplink.ProbeResult{Started: time.Now(), Err: "timeout"}
	}
	return uplink.ProbeResult{Started: time.Now(), OK: true, RTT: time.Millisecond}
}

// routes returns family f's routing state as last applied.
func (f *fakeNet) routesOf(fam uplink.Family) route.Desired {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.desired[fam]
}

func (r *fakeRouter) Apply(d route.Desired) error {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	if r.n.desired == nil {
		r.n.desired = map[uplink.Family]route.Desired{}
	}
	r.n.desired[r.fam] = d
	return nil
}
func (r *fakeRouter) FlushConntrack(as ...netip.Addr) (uint, error) {
	r.n.mu.Lock()
	defer r.n.mu.Unlock()
	if r.n.flushed == nil {
		r.n.flushed = map[uplink.Family][]netip.Addr{}
	}
	r.n.flushed[r.fam] = append(r.n.flushed[r.fam], as...)
	return uint(len(as)), nil
}
func (r *fakeRouter) Cleanup(bool) error { *r.n.cleaned = true; return nil }
func (r *fakeRouter) Close()             {}
func (r *fakeRouter) Proto() int         { return route.DefaultProto }

// noticeLog is a component that records notices.
type noticeLog struct {
	mu  sync.Mutex
	got []Notice
}

func (n *noticeLog) start(context.Context) error { return nil }
func (n *noticeLog) reload(_, _ *Loaded)         {}
func (n *noticeLog) stop()                       {}
func (n *noticeLog) fillStatus(*Status)          {}
func (n *noticeLog) notice(x Notice) {
	n.mu.Lock()
	n.got = append(n.got, x)
	n.mu.Unlock()
}

func upDev(addr, gw string) uplink.Device {
	return uplink.Device{Present: true, AdminUp: true, Carrier: true, Addrs: []netip.Prefix{netip.MustParsePrefix(addr)},
		HasDefault: true, Gateway: netip.MustParseAddr(gw)}
}

func TestUplinksComponent(t *testing.T) {
	dir := t.TempDir()
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption firewall '0'\n")
	d, err := New(Options{UCIDir: dir, WhitelistPath: filepath.Join(dir, "whitelist"),
		Logger: logline.Discard(), Clock: newFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	cleaned := false
	net := &fakeNet{cleaned: &cleaned, devs: map[string]uplink.Device{
		"eth0": upDev("198.18.10.2/24", "198.18.10.1"), "wlan0": upDev("198.18.20.2/24", "198.18.20.1"), "wwan0": {},
	}}
	d.uplinks.net = net
	notes := &noticeLog{}
	d.components = append(d.components, notes)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	status := func() Status {
		var s Status
		if err := d.Do(ctx, func() { s = d.Status() }); err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitStatus := func(what string, ok func(Status) bool) Status {
		t.Helper()
		for range 500 {
			if s := status(); ok(s) {
				return s
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("status never showed %s: %+v", what, status())
		return Status{}
	}
	s := waitStatus("ethernet in use and proven", func(s Status) bool {
		return s.InUse == "ethnet" && len(s.Uplinks) == 3 && s.Uplinks[0].StateNum == 4 && s.Uplinks[1].StateNum == 4
	})
	if s.NetworkType != 0 || s.InUseDevice != "eth0" || s.Uplinks[0].Address != "198.18.10.2/24" ||
		s.Uplinks[0].Gateway != "198.18.10.1" || s.Uplinks[0].LastProbe != "success" || !s.Uplinks[0].InUse ||
		s.Uplinks[2].State != "ITFNOTSUPP_SX" || s.Counters.Switches != 1 || s.Counters.Probes < 2 {
		t.Fatalf("status %+v", s)
	}
	if r := net.routesOf(uplink.IPv4); r.Selected != "ethnet" || len(r.Uplinks) != 2 {
		t.Errorf("routes %+v", r)
	}
	if r := net.routesOf(uplink.IPv6); r.Selected != "" || len(r.Uplinks) != 0 {
		t.Errorf("IPv6 routes without IPv6 addresses: %+v", r)
	}

	// Attribute 65008 set to WLAN moves the route to Wi-Fi, which is proven.
	var perr error
	if err := d.Do(ctx, func() { perr = d.SetPreferredNetworkType(NetworkWLAN) }); err != nil || perr != nil {
		t.Fatal(err, perr)
	}
	waitStatus("wifi in use", func(s Status) bool { return s.InUse == "stanet" && s.NetworkType == 1 && s.PreferredNetworkType == 1 })

	// Wi-Fi loses its carrier: back to Ethernet at once.
	net.mu.Lock()
	notify := net.notify
	net.mu.Unlock()
	down := upDev("198.18.20.2/24", "198.18.20.1")
	down.Carrier = false
	notify(netmon.Update{Devices: map[string]uplink.Device{"wlan0": down}})
	waitStatus("ethernet after wifi's carrier loss", func(s Status) bool { return s.InUse == "ethnet" && s.Uplinks[1].StateNum == 1 })

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !cleaned {
		t.Error("routes not cleaned up on stop")
	}
	notes.mu.Lock()
	defer notes.mu.Unlock()
	var network, iface, wifi int
	for _, n := range notes.got {
		switch n.Name {
		case "connmgr.network":
			network++
		case "connmgr.interface":
			iface++
		case "connmgr.wifi":
			wifi++
		}
	}
	if network != 3 || iface < 5 || wifi < 3 {
		t.Errorf("notices: %d network, %d interface, %d wifi: %+v", network, iface, wifi, notes.got)
	}
}

func TestRoutingChanged(t *testing.T) {
	view := func(name, addr, gw string) failover.Uplink {
		v := failover.View{Settings: failover.UplinkSettings{Name: name}, Family: uplink.IPv4}
		if addr != "" {
			v.Device.Addrs = []netip.Prefix{netip.MustParsePrefix(addr)}
		}
		if gw != "" {
			v.Device.Gateway = netip.MustParseAddr(gw)
		}
		return failover.Uplink{Settings: v.Settings, Families: []failover.View{v}}
	}
	// with6 adds an IPv6 view to u.
	with6 := func(u failover.Uplink, addr, gw string) failover.Uplink {
		v := failover.View{Settings: u.Settings, Family: uplink.IPv6}
		v.Device.Addrs = []netip.Prefix{netip.MustParsePrefix(addr)}
		v.Device.Gateway = netip.MustParseAddr(gw)
		u.Families = append(slices.Clone(u.Families), v)
		return u
	}
	eth := view("ethnet", "198.18.10.2/24", "198.18.10.1")
	wlan := view("stanet", "198.18.20.2/24", "198.18.20.1")
	eth6 := with6(eth, "2001:db8:10::2/64", "fe80::1")
	for _, tc := range []struct {
		name          string
		before, after []failover.Uplink
		want          []string
	}{
		{"nothing", []failover.Uplink{eth, wlan}, []failover.Uplink{eth, wlan}, nil},
		{"gateway", []failover.Uplink{eth, wlan}, []failover.Uplink{view("ethnet", "198.18.10.2/24", "198.18.10.254"), wlan}, []string{"ethnet"}},
		{"address", []failover.Uplink{eth, wlan}, []failover.Uplink{eth, view("stanet", "198.18.20.9/24", "198.18.20.1")}, []string{"stanet"}},
		{"went down", []failover.Uplink{eth}, []failover.Uplink{view("ethnet", "", "")}, []string{"ethnet"}},
		{"new uplink (reload)", []failover.Uplink{eth}, []failover.Uplink{eth, wlan}, []string{"stanet"}},
		{"IPv6 unchanged", []failover.Uplink{eth6, wlan}, []failover.Uplink{eth6, wlan}, nil},
		{"IPv6 gateway (RA from a new router)", []failover.Uplink{eth6}, []failover.Uplink{with6(eth, "2001:db8:10::2/64", "fe80::2")}, []string{"ethnet"}},
		{"IPv6 address", []failover.Uplink{eth6}, []failover.Uplink{with6(eth, "2001:db8:10::9/64", "fe80::1")}, []string{"ethnet"}},
	} {
		if got := routingChanged(tc.before, tc.after); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
