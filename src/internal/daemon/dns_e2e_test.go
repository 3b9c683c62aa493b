package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/testbed"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// End-to-end: the real connmgr binary in a testbed world, locking the uplinks down and opening
// them from DNS answers, for both firewall backends. Cloud addresses used here:
//
//	198.18.200.1, .2  api.afero.io -> a.lb.example -> b.lb.example -> c.edge.example (3 CNAMEs)
//	198.18.200.3      evil.example (not whitelisted)
//	198.18.200.4      short.afero.io, TTL 1 (expiry)
//	198.18.200.61-65  what the forged replies answer
//	198.19.0.60:53    a resolver that never answers (forgeries race nobody)
//	198.19.0.61:53    a forger with another address
//
// Every cloud address serves TCP port 8080 (a greeting), so a connect tells an open pinhole
// from a dropped SYN.
const (
	e2ePort   = 8080
	silentDNS = "198.19.0.60"
	otherDNS  = "198.19.0.61"
)

var e2eRecords = []testbed.Record{
	{Name: "api.afero.io", TTL: 30, CNAME: "a.lb.example"},
	{Name: "a.lb.example", TTL: 30, CNAME: "b.lb.example"},
	{Name: "b.lb.example", TTL: 30, CNAME: "c.edge.example"},
	{Name: "c.edge.example", TTL: 30, Addr: netip.MustParseAddr("198.18.200.1")},
	{Name: "c.edge.example", TTL: 30, Addr: netip.MustParseAddr("198.18.200.2")},
	{Name: "evil.example", TTL: 30, Addr: netip.MustParseAddr("198.18.200.3")},
	{Name: "short.afero.io", TTL: 1, Addr: netip.MustParseAddr("198.18.200.4")},
}

const e2eNetwork = `
config interface 'ethnet'
	option device 'eth0'
	option proto 'dhcp'

config interface 'stanet'
	option device 'wlan0'
	option proto 'dhcp'

config interface 'modemnet'
	option device 'wwan0'
	option proto 'dhcp'
`

// e2eConnmgr is the test's connmgr config. The device's resolv.conf names the cloud's DNS
// server; the forgery tests' resolvers (one that never answers, one that forges) are trusted
// too, so that their forgeries are judged on the anti-forgery checks that follow the resolver's.
func e2eConnmgr(backend, hold string) string {
	return "config connmgr 'main'\n\toption firewall_backend '" + backend + "'\n\toption echo_host '198.19.0.1'\n" +
		"\toption dns_hold '" + hold + "'\n\toption dns_min_ttl '0'\n\toption dns_grace '2s'\n\toption log_level 'debug'\n" +
		"\tlist trusted_resolver '" + silentDNS + "'\n\tlist trusted_resolver '" + otherDNS + "'\n"
}

// e2e is one world with a running daemon.
type e2e struct {
	t       *testing.T
	w       *testbed.World
	p       *testbed.Process
	backend string
	dir     string
	dns     *testbed.DNSServer
}

func TestE2EDNSFirewall(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			e := newE2E(t, backend)
			e.cnameChainOpensExactly()
			e.notWhitelistedOpensNothing()
			e.forgeries("hold")
			e.expiry()
			e.survivesFlush()
			e.includeRestore()
			e.toCapture()
			e.forgeries("capture")
			e.exitSummary()
			t.Logf("%s: %v", backend, time.Since(start).Round(100*time.Millisecond))
		})
	}
}

func newE2E(t *testing.T, backend string) *e2e {
	return newE2EWith(t, backend, testbed.Options{}, e2eRecords, map[string]string{
		"network":   e2eNetwork,
		"connmgr":   e2eConnmgr(backend, "1"),
		"whitelist": "*.afero.io\n",
	}, nil)
}

// newE2EWith builds a world of opts with the cloud's DNS serving records, writes files into
// the UCI directory (network, wireless, connmgr, whitelist), runs before(w, dir) (a LAN, a
// ubus object of netifd) and starts the daemon on a test ubusd.
func newE2EWith(t *testing.T, backend string, opts testbed.Options, records []testbed.Record, files map[string]string, before func(*testbed.World, string)) *e2e {
	w := testbed.New(t, opts)
	dns, err := w.StartDNS(records)
	if err != nil {
		t.Fatal(err)
	}
	var lo []string
	for _, a := range []string{"198.18.200.1", "198.18.200.2", "198.18.200.3", "198.18.200.4", silentDNS, otherDNS} {
		lo = append(lo, "addr add "+a+"/32 dev lo")
	}
	for i := 61; i <= 65; i++ {
		lo = append(lo, fmt.Sprintf("addr add 198.18.200.%d/32 dev lo", i))
	}
	if err := w.Cloud.IP(lo...); err != nil {
		t.Fatal(err)
	}
	serveCloudTCP(t, w)
	e := startE2E(t, w, backend, files, before)
	e.dns = dns
	return e
}

// startE2E writes files (network, connmgr, whitelist, ...) to a config directory, starts a test
// ubusd, runs before(w, dir) (a LAN, a ubus object of netifd), starts connmgr in w's device
// and waits until the lock-down and DNS hold mode are in force.
func startE2E(t *testing.T, w *testbed.World, backend string, files map[string]string, before func(*testbed.World, string)) *e2e {
	dir := t.TempDir()
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bus, err := ubustest.NewServer(filepath.Join(dir, "ubus.sock"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bus.Close() })
	if before != nil {
		before(w, dir)
	}
	e := &e2e{t: t, w: w, backend: backend, dir: dir}
	e.p = w.StartConnmgr(t, "-c", dir, "-w", filepath.Join(dir, "whitelist"), "-s", filepath.Join(dir, "ubus.sock"))
	e.waitLog(0, `msg="firewall lock-down in force" backend=`+backend)
	mode := "hold"
	if strings.Contains(files["connmgr"], "dns_hold '0'") {
		mode = "capture"
	}
	e.waitLog(0, `msg="DNS extraction running" mode=`+mode)
	return e
}

// serveCloudTCP answers TCP connections to port 8080 on every cloud address with a greeting
// naming the address.
func serveCloudTCP(t *testing.T, w *testbed.World) {
	w.Cloud.ServeHello(t, fmt.Sprintf("0.0.0.0:%d", e2ePort))
}

func (e *e2e) waitLog(mark int, re string) string {
	e.t.Helper()
	line, err := e.p.WaitLogFrom(mark, regexp.MustCompile(re), 20*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	return line
}

var ipv4Re = regexp.MustCompile(`\b198\.1[89]\.\d+\.\d+\b`)

// learned lists the addresses in the kernel set of learned addresses (allow4).
func (e *e2e) learned() []string {
	e.t.Helper()
	return e.members("allow4")
}

// members lists the IPv4 addresses in one of the firewall's sets (allow4, fwd4, static4).
func (e *e2e) members(set string) []string {
	e.t.Helper()
	var out string
	var err error
	if e.backend == "nftables" {
		out, err = e.w.Device.Run("nft", "list", "set", "inet", "afconn", set)
		if i := strings.Index(out, "elements = {"); i >= 0 {
			out = out[i:]
		} else {
			out = ""
		}
	} else {
		out, err = e.w.Device.Run("ipset", "list", "afconn_"+set)
		if err != nil && strings.Contains(out, "does not exist") {
			return nil // flushed and not restored yet: nothing learned in the kernel
		}
		if i := strings.Index(out, "Members:"); i >= 0 {
			out = out[i:]
		}
	}
	if err != nil {
		return nil // removed by a flush, until the daemon puts it back
	}
	got := ipv4Re.FindAllString(out, -1)
	slices.Sort(got)
	return got
}

// waitLearned polls until the learned set is want.
func (e *e2e) waitLearned(want ...string) {
	e.t.Helper()
	slices.Sort(want)
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := e.learned()
		if slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("learned set %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resolve asks the cloud's DNS server for name's A records from the device.
func (e *e2e) resolve(name string) []string {
	e.t.Helper()
	addrs, err := e.w.ResolveA(name)
	if err != nil {
		e.t.Fatal(err)
	}
	return addrs
}

// connect opens a TCP connection from the device to addr:8080 and reads the greeting.
func (e *e2e) connect(addr string, timeout time.Duration) error {
	return dialHello(e.w.Device, "", addr, e2ePort, timeout)
}

// mustDrop checks that a connect to addr does not get through (the SYN is dropped: a timeout,
// not a refusal).
func (e *e2e) mustDrop(addr string) {
	e.t.Helper()
	err := e.connect(addr, 1500*time.Millisecond)
	if err == nil {
		e.t.Fatalf("connect to %s got through the lock-down", addr)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, os.ErrDeadlineExceeded) {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			e.t.Fatalf("connect to %s: %v, want a timeout (dropped SYN)", addr, err)
		}
	}
}

// A whitelisted name behind three CNAMEs opens exactly its two addresses, and the first
// connect after the answer goes through at once (hold mode).
func (e *e2e) cnameChainOpensExactly() {
	e.t.Helper()
	e.waitLearned() // nothing learned yet
	got := e.resolve("api.afero.io")
	slices.Sort(got)
	if !slices.Equal(got, []string{"198.18.200.1", "198.18.200.2"}) {
		e.t.Fatalf("api.afero.io answered %v", got)
	}
	// Hold mode: the reply was released only once the set held its addresses.
	if l := e.learned(); !slices.Equal(l, []string{"198.18.200.1", "198.18.200.2"}) {
		e.t.Fatalf("learned set right after the answer: %v", l)
	}
	for _, a := range got {
		if err := e.connect(a, 5*time.Second); err != nil {
			e.t.Fatalf("connect to opened %s: %v", a, err)
		}
	}
	e.mustDrop("198.18.200.3")
	e.waitLog(0, `msg="DNS reply" name=api.afero.io matched=api.afero.io opened=198\.18\.200\.[12]/32s,198\.18\.200\.[12]/32s`)
}

// A trusted answer for a name not on the whitelist opens nothing.
func (e *e2e) notWhitelistedOpensNothing() {
	e.t.Helper()
	mark := e.p.Mark()
	if got := e.resolve("evil.example"); !slices.Equal(got, []string{"198.18.200.3"}) {
		e.t.Fatalf("evil.example answered %v", got)
	}
	e.waitLog(mark, `msg="DNS reply" name=evil.example matched="" opened=""`)
	e.waitLearned("198.18.200.1", "198.18.200.2")
	e.mustDrop("198.18.200.3")
}

// forger plays a resolver that never answers, and forges replies to the query it got.
type forger struct {
	e      *e2e
	client *net.UDPConn // the device's stub socket
	got    chan *dns.Msg
	right  net.PacketConn // 198.19.0.60:53
	query  *dns.Msg
	from   *net.UDPAddr // where the query came from
	wg     sync.WaitGroup
}

func (e *e2e) newForger() *forger {
	e.t.Helper()
	f := &forger{e: e, got: make(chan *dns.Msg, 16)}
	var err error
	if f.right, err = e.w.Cloud.ListenPacket("udp4", silentDNS+":53"); err != nil {
		e.t.Fatal(err)
	}
	err = e.w.Device.Do(func() (err error) {
		f.client, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(silentDNS+":53")))
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := f.client.Read(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) == nil {
				select {
				case f.got <- m:
				default: // a benchmark's flood: nobody counts them
				}
			}
		}
	}()
	return f
}

func (f *forger) close() {
	f.client.Close()
	f.right.Close()
	f.wg.Wait()
}

// ask sends a query for silent.afero.io from the device and waits until the resolver has it.
func (f *forger) ask() {
	e := f.e
	e.t.Helper()
	q := new(dns.Msg)
	q.SetQuestion("silent.afero.io.", dns.TypeA)
	b, _ := q.Pack()
	if _, err := f.client.Write(b); err != nil {
		e.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	f.right.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := f.right.ReadFrom(buf)
	if err != nil {
		e.t.Fatalf("the query did not reach the silent resolver: %v", err)
	}
	f.query = new(dns.Msg)
	if err := f.query.Unpack(buf[:n]); err != nil {
		e.t.Fatal(err)
	}
	f.from = from.(*net.UDPAddr)
}

// forgery kinds, as the extractor names the reason it refuses them.
var forgeryKinds = []string{"wrong_source", "wrong_port", "unsolicited", "wrong_id", "wrong_question"}

// forge sends one forged reply of kind; each answers with another address (.61-.65).
func (f *forger) forge(kind string, i int) {
	e := f.e
	e.t.Helper()
	m := new(dns.Msg)
	m.SetReply(f.query)
	name := "silent.afero.io."
	to := *f.from
	src := f.right
	switch kind {
	case "wrong_source", "wrong_port":
		addr := otherDNS + ":53"
		if kind == "wrong_port" {
			addr = silentDNS + ":5353"
		}
		pc, err := e.w.Cloud.ListenPacket("udp4", addr)
		if err != nil {
			e.t.Fatal(err)
		}
		defer pc.Close()
		src = pc
	case "unsolicited":
		to.Port ^= 1
	case "wrong_id":
		m.Id++
	case "wrong_question":
		name = "other.afero.io."
		m.Question[0].Name = name
	}
	rr, _ := dns.NewRR(fmt.Sprintf("%s 3600 IN A 198.18.200.%d", name, 61+i))
	m.Answer = []dns.RR{rr}
	b, _ := m.Pack()
	if _, err := src.WriteTo(b, &to); err != nil {
		e.t.Fatal(err)
	}
}

// watch installs, in the device, a test-owned nft table that counts each forgery kind twice:
// when it arrives (prerouting, before anything) and when it has passed the lock-down (input,
// after both backends' chains). It returns a reader of the counters, "KIND in" / "KIND passed".
func (f *forger) watch() func() map[string]int {
	e := f.e
	e.t.Helper()
	sel := map[string]string{
		"wrong_source": fmt.Sprintf("ip saddr %s udp sport 53", otherDNS),
		"wrong_port":   fmt.Sprintf("ip saddr %s udp sport 5353", silentDNS),
		"unsolicited":  fmt.Sprintf("ip saddr %s udp sport 53 udp dport %d", silentDNS, f.from.Port^1),
		"same_flow":    fmt.Sprintf("ip saddr %s udp sport 53 udp dport %d", silentDNS, f.from.Port),
	}
	var b strings.Builder
	b.WriteString("table ip e2ewatch\ndelete table ip e2ewatch\ntable ip e2ewatch {\n")
	for _, stage := range []struct{ name, hook string }{{"in", "prerouting priority -300"}, {"passed", "input priority 100"}} {
		fmt.Fprintf(&b, "\tchain %s {\n\t\ttype filter hook %s; policy accept;\n", stage.name, stage.hook)
		for k, m := range sel {
			fmt.Fprintf(&b, "\t\t%s counter comment \"%s %s\"\n", m, k, stage.name)
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	if err := e.w.Device.Nft(b.String()); err != nil {
		e.t.Fatal(err)
	}
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "([a-z_]+ [a-z]+)"`)
	return func() map[string]int {
		out, err := e.w.Device.Run("nft", "list", "table", "ip", "e2ewatch")
		if err != nil {
			e.t.Fatal(err)
		}
		got := map[string]int{}
		for _, m := range re.FindAllStringSubmatch(out, -1) {
			n := 0
			fmt.Sscan(m[1], &n)
			got[m[2]] = n
		}
		return got
	}
}

// forgeries sends one forged reply of each kind to a pending query and checks what became of
// each. Whatever the mode, none opens anything, and the lock-down drops the three that belong
// to no connection of the device (wrong source, wrong port, unsolicited). The extractor judges
// and counts, in hold mode, the two that arrive on the query's own connection and are queued
// (wrong ID, another question); in capture mode it sees everything from port 53 before the
// firewall, so it counts four. A reply from another port than 53 (wrong_port) is no DNS reply
// to it at all: the capture filter and the queue rule select source port 53.
func (e *e2e) forgeries(mode string) {
	e.t.Helper()
	f := e.newForger()
	defer f.close()
	f.ask()
	counters := f.watch()
	mark := e.p.Mark()
	for i, k := range forgeryKinds {
		f.forge(k, i)
	}
	judged := []string{"wrong_id", "wrong_question"}
	if mode == "capture" {
		judged = []string{"wrong_source", "unsolicited", "wrong_id", "wrong_question"}
	}
	for _, k := range judged {
		e.waitLog(mark, `msg="untrusted DNS reply" reason=`+k+` `)
	}
	// The two on the query's connection reach the client (it discards them, as a stub
	// resolver does); in hold mode only once judged.
	for i := 0; i < 2; i++ {
		select {
		case <-f.got:
		case <-time.After(10 * time.Second):
			e.t.Fatalf("forged reply %d on the query's connection never reached the client", i)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	var c map[string]int
	for {
		c = counters()
		if c["wrong_source in"] == 1 && c["wrong_port in"] == 1 && c["unsolicited in"] == 1 && c["same_flow in"] == 2 {
			break
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("forgeries did not all arrive: %v", c)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if c["wrong_source passed"] != 0 || c["wrong_port passed"] != 0 || c["unsolicited passed"] != 0 || c["same_flow passed"] != 2 {
		e.t.Errorf("%s mode: the lock-down let through %v", mode, c)
	}
	log := e.p.Log()[logOffset(e.p, mark):]
	for _, k := range forgeryKinds {
		if !slices.Contains(judged, k) && strings.Contains(log, "reason="+k+" ") {
			e.t.Errorf("%s mode: a %s forgery reached the extractor", mode, k)
		}
	}
	e.waitLearned("198.18.200.1", "198.18.200.2")
	for i := 61; i <= 65; i++ {
		e.mustDropQuick(fmt.Sprintf("198.18.200.%d", i))
	}
	if _, err := e.w.Device.Run("nft", "delete", "table", "ip", "e2ewatch"); err != nil {
		e.t.Fatal(err)
	}
}

// logOffset is the byte offset in Log() of line mark.
func logOffset(p *testbed.Process, mark int) int {
	lines := strings.SplitAfter(p.Log(), "\n")
	off := 0
	for i := 0; i < mark && i < len(lines); i++ {
		off += len(lines[i])
	}
	return off
}

// Capture mode (dns_hold '0', by SIGHUP) opens whitelisted answers too, racing the reply.
func (e *e2e) toCapture() {
	e.t.Helper()
	e.switchToCapture()
	mark := e.p.Mark()
	e.resolve("short.afero.io")
	e.waitLog(mark, `msg="DNS reply" name=short.afero.io matched=short.afero.io opened=198\.18\.200\.4/3s`)
	e.waitLearned("198.18.200.1", "198.18.200.2", "198.18.200.4")
}

// switchToCapture switches the daemon to capture mode (dns_hold '0', by SIGHUP) and waits for it.
func (e *e2e) switchToCapture() {
	e.t.Helper()
	mark := e.p.Mark()
	if err := os.WriteFile(filepath.Join(e.dir, "connmgr"), []byte(e2eConnmgr(e.backend, "0")), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := e.p.Signal(syscall.SIGHUP); err != nil {
		e.t.Fatal(err)
	}
	e.waitLog(mark, `msg="DNS extraction running" mode=capture`)
}

// mustDropQuick is mustDrop with a short timeout, for many addresses.
func (e *e2e) mustDropQuick(addr string) {
	e.t.Helper()
	if err := e.connect(addr, 300*time.Millisecond); err == nil {
		e.t.Fatalf("connect to %s got through the lock-down", addr)
	}
}

// Addresses expire after TTL + grace (TTL 1 s, dns_min_ttl 0, dns_grace 2 s: 3 s).
func (e *e2e) expiry() {
	e.t.Helper()
	t0 := time.Now()
	if got := e.resolve("short.afero.io"); !slices.Equal(got, []string{"198.18.200.4"}) {
		e.t.Fatalf("short.afero.io answered %v", got)
	}
	if !slices.Contains(e.learned(), "198.18.200.4") {
		e.t.Fatalf("short.afero.io not opened: %v", e.learned())
	}
	if err := e.connect("198.18.200.4", 5*time.Second); err != nil {
		e.t.Fatalf("connect to short-lived %s: %v", "198.18.200.4", err)
	}
	e.waitLearned("198.18.200.1", "198.18.200.2")
	gone := time.Since(t0)
	if gone < 2500*time.Millisecond || gone > 10*time.Second {
		e.t.Errorf("short.afero.io left the set after %v, want about 3s (TTL 1s + grace 2s)", gone)
	}
	e.mustDrop("198.18.200.4")
}

// flush removes the firewall as an administrator or a firewall restart would. The daemon's
// periodic check may restore everything between two of the commands (they take a while on a
// busy machine): then the flush is done again, at most three times.
func (e *e2e) flush() {
	e.t.Helper()
	var cmds [][]string
	if e.backend == "nftables" {
		cmds = [][]string{{"nft", "flush", "ruleset"}}
	} else {
		cmds = [][]string{{"iptables", "-F"}, {"ip6tables", "-F"}}
	}
	for _, c := range cmds {
		if _, err := e.w.Device.Run(c[0], c[1:]...); err != nil {
			e.t.Fatal(err)
		}
	}
}

// The daemon puts back the rules and the learned addresses after a flush (on nf_tables'
// notification, or at the periodic check), and DNS extraction goes on.
func (e *e2e) survivesFlush() {
	e.t.Helper()
	mark := e.p.Mark()
	e.flush()
	e.waitLog(mark, `firewall rules were removed`)
	e.waitLearned("198.18.200.1", "198.18.200.2")
	if err := e.connect("198.18.200.1", 5*time.Second); err != nil {
		e.t.Fatalf("connect to a learned address after the restore: %v", err)
	}
	e.mustDrop("198.18.200.3")
	// The queue hook is back too: a fresh answer is held until it is in the set.
	e.resolve("short.afero.io")
	if !slices.Contains(e.learned(), "198.18.200.4") {
		e.t.Fatalf("after the restore, short.afero.io not in the set when its answer arrived: %v", e.learned())
	}
}

// The firewall include (what fw3/fw4 run after a reload) is `connmgr fw restore`, which asks
// the daemon over ubus (a test ubusd listens on the daemon's socket): everything is back when
// the command returns, without waiting for the periodic check.
func (e *e2e) includeRestore() {
	e.t.Helper()
	e.flush()
	out, err := e.w.Device.Run(testbed.Connmgr(e.t), "fw", "-s", filepath.Join(e.dir, "ubus.sock"), "restore")
	if err != nil {
		e.t.Fatalf("connmgr fw restore: %v\n%s", err, e.p.Log())
	}
	if l := e.learned(); !slices.Contains(l, "198.18.200.1") || !slices.Contains(l, "198.18.200.2") {
		// (short.afero.io, resolved just before, may still be there: it has time left.)
		e.t.Fatalf("connmgr fw restore returned (%q) with the learned set %v", out, l)
	}
	if err := e.connect("198.18.200.2", 5*time.Second); err != nil {
		e.t.Fatalf("connect after the include's restore: %v", err)
	}
	e.mustDrop("198.18.200.3")
}

// At exit the daemon sums up what DNS extraction saw, and removes everything.
func (e *e2e) exitSummary() {
	e.t.Helper()
	if err := e.p.Stop(15 * time.Second); err != nil {
		e.t.Fatalf("connmgr did not exit cleanly: %v\n%s", err, e.p.Log())
	}
	// Hold mode judged 2 forgeries, capture mode 4 (the SIGHUP's summary counts the first 2).
	e.waitLog(0, `msg="DNS extraction stopped" why="mode hold -> capture, queue 27 -> 27" replies=\d+ opened=\d+ forged=2 `)
	e.waitLog(0, `msg="DNS extraction stopped" why="connmgr exits" replies=\d+ opened=\d+ forged=6 `)
	if e.backend == "nftables" {
		if out, err := e.w.Device.Run("nft", "list", "ruleset"); err != nil || strings.Contains(out, "afconn") {
			e.t.Errorf("left after exit: %s", out)
		}
	} else if out, _ := e.w.Device.Run("ipset", "list", "-n"); strings.Contains(out, "afconn") {
		e.t.Errorf("ip sets left after exit: %s", out)
	}
}
