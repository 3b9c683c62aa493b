// Package testbed builds throwaway worlds of network namespaces for end-to-end tests and for
// `make run`: a device namespace with the uplinks eth0, wlan0 and wwan0, one router namespace
// per uplink, and a cloud namespace with the Afero echo service. It owns nothing outside the
// namespaces it creates, uses only 198.18.0.0/15, and always removes what it made: on Close, on
// test cleanup, on SIGINT/SIGTERM, and (for runs that died) at the next run's start.
//
// Topology, for uplink i in eth0 (i=1), wlan0 (i=2), wwan0 (i=3):
//
//	device ns: DEV 198.18.(10i).2/24, default via 198.18.(10i).1 metric 10/20/50 (as netifd does)
//	router ns: "todev" 198.18.(10i).1/24 <-> device; "tocloud" 198.18.(10i+1).1/24 <-> cloud
//	cloud ns:  "rI" 198.18.(10i+1).2/24; services on lo: echo 198.19.0.1:80, DNS 198.19.0.53
//
// Options.IPv6 adds IPv6 from 2001:db8::/32 to every uplink (dual-stack), and Options.IPv6Only
// takes IPv4 away from some (an IPv6-only cellular uplink); see ipv6.go for that half.
package testbed

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Uplink describes one uplink of the world: the device's interface and its router.
type Uplink struct {
	Dev      string     // interface in the device namespace: eth0, wlan0, wwan0
	Index    int        // 1, 2, 3: numbers the subnets
	Metric   int        // metric of the default route the world installs (netifd's 10/20/50)
	Router   *NS        // the router namespace behind this uplink
	Addr     netip.Addr // the device's address on the uplink
	Gateway  netip.Addr // the router's address on the uplink
	Prefix   netip.Prefix
	CloudDev string // the cloud's interface toward this router

	// IPv6 (dual-stack and IPv6-only worlds; zero otherwise).
	Addr6    netip.Addr   // the device's global address on the uplink, 2001:db8:(10i)::2
	Gateway6 netip.Addr   // the router's link-local address, fe80::1 (the RA's source)
	Prefix6  netip.Prefix // 2001:db8:(10i)::/64
	V6Only   bool         // no IPv4 at all on this uplink
}

// Options shape a world.
type Options struct {
	// Uplinks names the device's uplinks; default eth0, wlan0, wwan0.
	Uplinks []string
	// NoAddresses leaves the device's uplinks without addresses and routes, for tests
	// that add them themselves.
	NoAddresses bool
	// NoEcho skips starting the echo service in the cloud.
	NoEcho bool
	// IPv6 makes the world dual-stack: every uplink also carries IPv6 (2001:db8::/32), its
	// default route installed the way the mode says (see V6Mode); the cloud's echo, HTTP
	// and DNS answer on IPv6 too. The zero value is an IPv4-only world, as before.
	IPv6 V6Mode
	// IPv6Only names uplinks with no IPv4 at all (cellular on an IPv6-only SIM); they get
	// IPv6 even when IPv6 is V6None (then as V6RA).
	IPv6Only []string
	// DNS64 makes the cloud's IPv6 resolver a DNS64 (RFC 6147): an AAAA question for a name
	// with only A records gets 64:ff9b::/96 + the IPv4 address, and the cloud answers at
	// every address of 64:ff9b::/96 as if a NAT64 sat in front of it (see ipv6.go).
	DNS64 bool
}

// Well-known cloud addresses.
var (
	EchoAddr = netip.MustParseAddr("198.19.0.1")
	DNSAddr  = netip.MustParseAddr("198.19.0.53")
)

// EchoPort is the port of the cloud's echo service.
const EchoPort = 80

var defaultUplinks = []string{"eth0", "wlan0", "wwan0"}

// World is one set of namespaces. Its methods are safe for use by one goroutine at a time,
// except Close, which may race with a signal-driven teardown.
type World struct {
	ID      string
	Device  *NS
	Cloud   *NS
	Uplinks []*Uplink
	// EtcDir is /etc/netns/<device ns>: files here (resolv.conf) are bind-mounted over /etc
	// for processes started with Device.Command.
	EtcDir string
	// RunDir is the world's own state directory (runDir/<device ns>): connmgr's usage ledger
	// (UsageLedger) is kept there. Removed when the world closes.
	RunDir string

	opt Options

	mu       sync.Mutex
	closers  []func() error
	nsList   []*NS
	unsignal func()

	// closeOnce makes a second Close wait for the first to finish: on Ctrl-C the signal
	// handler and the caller's own deferred Close race, and the loser must not return (and
	// let the process exit) while the namespaces are still being removed.
	closeOnce sync.Once
	closeErr  error
}

// runDir holds the worlds' state directories.
const runDir = "/run/af-conn-test"

// UsageLedger is the usage ledger of connmgr started in the world's device namespace.
func (w *World) UsageLedger() string { return filepath.Join(w.RunDir, "usage") }

// Build creates a world. The caller must Close it; tests use New instead.
func Build(opt Options) (_ *World, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("testbed: needs root to create network namespaces")
	}
	sweepStale()
	names := opt.Uplinks
	if len(names) == 0 {
		names = defaultUplinks
	}
	w := &World{ID: fmt.Sprintf("%s%d-%04x", namePrefix, os.Getpid(), rand.IntN(0x10000)), opt: opt}
	if len(opt.IPv6Only) > 0 && opt.IPv6 == V6None {
		w.opt.IPv6 = V6RA
	}
	if w.opt.IPv6 == V6RA {
		if _, err := exec.LookPath("radvd"); err != nil {
			return nil, ErrNoRadvd
		}
	}
	w.unsignal = register(w)
	defer func() {
		if err != nil {
			w.Close()
		}
	}()

	if w.Device, err = w.newNS("dev"); err != nil {
		return nil, err
	}
	// Conntrack accounting as OpenWrt ships it (its sysctl-nf-conntrack.conf): connmgr's
	// passive liveness reads the reply-direction counters.
	if err := w.Device.Sysctl("net.netfilter.nf_conntrack_acct", "1"); err != nil {
		return nil, err
	}
	if w.Cloud, err = w.newNS("cloud"); err != nil {
		return nil, err
	}
	w.EtcDir = filepath.Join("/etc/netns", w.Device.Name)
	if err := os.MkdirAll(w.EtcDir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	w.closers = append(w.closers, func() error { return os.RemoveAll(w.EtcDir) })
	// connmgr's usage ledger lives in the world (CONNMGR_USAGE_LEDGER), not in the host's
	// /var/run/connmgr, and goes with it.
	w.RunDir = filepath.Join(runDir, w.Device.Name)
	if err := os.MkdirAll(w.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	w.closers = append(w.closers, func() error { return os.RemoveAll(w.RunDir) })
	w.Device.Env = append(w.Device.Env, "CONNMGR_USAGE_LEDGER="+w.UsageLedger())
	resolv := "nameserver " + DNSAddr.String() + "\n"
	if w.dualStack() {
		resolv += "nameserver " + DNS6Addr.String() + "\n"
	}
	if err := os.WriteFile(filepath.Join(w.EtcDir, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}

	cloud := []string{
		"link set lo up",
		"addr add " + EchoAddr.String() + "/32 dev lo",
		"addr add " + DNSAddr.String() + "/32 dev lo",
	}
	if w.dualStack() {
		if err := w.prepareV6(w.Device); err != nil {
			return nil, err
		}
		if err := w.prepareV6(w.Cloud); err != nil {
			return nil, err
		}
		cloud = append(cloud, w.cloudV6()...)
	}
	for i, dev := range names {
		u, err := w.addUplink(dev, i+1, opt.NoAddresses)
		if err != nil {
			return nil, err
		}
		cloud = append(cloud,
			fmt.Sprintf("addr add 198.18.%d.2/24 dev %s", 10*u.Index+1, u.CloudDev),
			fmt.Sprintf("link set %s up", u.CloudDev),
		)
		if !u.V6Only {
			cloud = append(cloud, fmt.Sprintf("route add %s via 198.18.%d.1", u.Prefix, 10*u.Index+1))
		}
		if w.dualStack() {
			cloud = append(cloud, cloudV6Uplink(u)...)
		}
	}
	if err := w.Cloud.IP(cloud...); err != nil {
		return nil, err
	}
	if w.dualStack() {
		for _, u := range w.Uplinks {
			if err := w.startRouterV6(u); err != nil {
				return nil, err
			}
		}
	}
	if !opt.NoEcho {
		if err := w.startEcho(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// addUplink creates the router namespace for one uplink and wires device, router and cloud.
func (w *World) addUplink(dev string, index int, noAddr bool) (*Uplink, error) {
	r, err := w.newNS(fmt.Sprintf("r%d", index))
	if err != nil {
		return nil, err
	}
	u := &Uplink{
		Dev: dev, Index: index, Router: r,
		Metric:   map[int]int{1: 10, 2: 20, 3: 50}[index],
		Addr:     netip.AddrFrom4([4]byte{198, 18, byte(10 * index), 2}),
		Gateway:  netip.AddrFrom4([4]byte{198, 18, byte(10 * index), 1}),
		Prefix:   netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(10 * index), 0}), 24),
		CloudDev: fmt.Sprintf("r%d", index),
	}
	if u.Metric == 0 {
		u.Metric = 100 + index
	}
	if w.dualStack() {
		u.Addr6 = netip.MustParseAddr(fmt.Sprintf("2001:db8:%d::2", 10*index))
		u.Gateway6 = routerLinkLocal
		u.Prefix6 = netip.MustParsePrefix(fmt.Sprintf("2001:db8:%d::/64", 10*index))
		u.V6Only = slices.Contains(w.opt.IPv6Only, dev)
		if err := w.prepareV6(r); err != nil {
			return nil, err
		}
	}
	// veth pairs are created straight into their namespaces so no name ever appears in the host's.
	if err := runIP("link", "add", dev, "netns", w.Device.Name, "type", "veth", "peer", "name", "todev", "netns", r.Name); err != nil {
		return nil, err
	}
	if err := runIP("link", "add", "tocloud", "netns", r.Name, "type", "veth", "peer", "name", u.CloudDev, "netns", w.Cloud.Name); err != nil {
		return nil, err
	}
	routerCmds := []string{
		"link set lo up",
		fmt.Sprintf("addr add %s/24 dev todev", u.Gateway),
		fmt.Sprintf("addr add 198.18.%d.1/24 dev tocloud", 10*index+1),
		"link set todev up",
		"link set tocloud up",
		fmt.Sprintf("route add default via 198.18.%d.2", 10*index+1),
	}
	if u.V6Only {
		// No IPv4 toward the device at all: the router's side of the link has none.
		routerCmds = slices.Delete(routerCmds, 1, 2)
	}
	if w.dualStack() {
		pre, post := routerV6(u)
		routerCmds = append(append(pre, routerCmds...), post...)
	}
	if err := r.IP(routerCmds...); err != nil {
		return nil, err
	}
	if err := r.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return nil, err
	}
	if w.dualStack() {
		if err := w.deviceV6Sysctls(u); err != nil {
			return nil, err
		}
	}
	devCmds := []string{"link set lo up", "link set " + dev + " up"}
	if !noAddr && !u.V6Only {
		devCmds = append(devCmds,
			fmt.Sprintf("addr add %s/24 dev %s", u.Addr, dev),
			fmt.Sprintf("route add default via %s dev %s metric %d", u.Gateway, dev, u.Metric),
		)
	}
	if u.V6Only {
		u.Addr, u.Gateway, u.Prefix = netip.Addr{}, netip.Addr{}, netip.Prefix{}
	}
	if !noAddr && w.dualStack() {
		devCmds = append(devCmds, w.deviceV6(u)...)
	}
	if err := w.Device.IP(devCmds...); err != nil {
		return nil, err
	}
	w.Uplinks = append(w.Uplinks, u)
	return u, nil
}

// Uplink returns the uplink whose device interface is dev, or nil.
func (w *World) Uplink(dev string) *Uplink {
	for _, u := range w.Uplinks {
		if u.Dev == dev {
			return u
		}
	}
	return nil
}

// MustUplink is Uplink that panics on an unknown name: a test bug, not a runtime condition.
func (w *World) MustUplink(dev string) *Uplink {
	u := w.Uplink(dev)
	if u == nil {
		panic("testbed: no uplink " + dev)
	}
	return u
}

func (w *World) newNS(role string) (*NS, error) {
	ns, err := newNS(w.ID + "-" + role)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	w.nsList = append(w.nsList, ns)
	w.mu.Unlock()
	return ns, nil
}

// OnClose registers f to run when the world is closed, before its namespaces go.
func (w *World) OnClose(f func() error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closers = append(w.closers, f)
}

// Close stops what runs in the world and deletes its namespaces. It is idempotent, and a call
// made while another is under way returns when that one has finished.
func (w *World) Close() error {
	w.closeOnce.Do(func() { w.closeErr = w.close() })
	return w.closeErr
}

func (w *World) close() error {
	w.mu.Lock()
	closers, nsList := w.closers, w.nsList
	w.mu.Unlock()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		if err := closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ns := range nsList {
		if err := ns.remove(); err != nil {
			errs = append(errs, err)
		}
	}
	if w.unsignal != nil {
		w.unsignal()
	}
	return errors.Join(errs...)
}

// String names the world for logs.
func (w *World) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "world %s: device %s, cloud %s", w.ID, w.Device.Name, w.Cloud.Name)
	for _, u := range w.Uplinks {
		fmt.Fprintf(&b, ", %s", u.Dev)
		if !u.V6Only {
			fmt.Fprintf(&b, " %s via %s", u.Addr, u.Gateway)
		}
		if u.Addr6.IsValid() {
			if !u.V6Only {
				b.WriteString(" +")
			}
			fmt.Fprintf(&b, " %s via %s (%s)", u.Addr6, u.Gateway6, w.opt.IPv6)
		}
		fmt.Fprintf(&b, " (router %s)", u.Router.Name)
	}
	return b.String()
}
