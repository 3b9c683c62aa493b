package daemon_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/daemon"
	"github.com/afero/af-conn/internal/testbed"
)

// Adversarial end-to-end tests of what DNS extraction trusts and of its bounds (issue 9), with
// the real binary, on both backends. Addresses:
//
//	198.19.0.66:53    a rogue resolver (no uplink's): answers whitelisted names with its own choice
//	198.19.0.60:53    a trusted resolver that never answers (silentDNS; the LAN flood's target)
//	198.18.100.2      a LAN client behind the device's wlan0-1 (an access point's network)
//	198.18.210.0/24   the rogue's answers (and 2001:db8::66)
//	198.18.220.0/22   answer floods: flood-N.afero.io and hubflood-N.afero.io, 40 addresses each
//	198.18.230.0/24   genuine answers the hub and the client must get opened
//
// The cloud's DNS server (198.19.0.53, the device's resolv.conf) is the uplinks' resolver.
const (
	rogueDNS   = "198.19.0.66"
	floodNames = 40
	floodAddrs = 40
	advMaxElem = 1024
)

// advRecords: the cloud's records for the adversarial tests.
func advRecords() []testbed.Record {
	rs := []testbed.Record{
		{Name: "conclave.afero.io", TTL: 60, Addr: netip.MustParseAddr("198.18.230.1")},
		{Name: "aft.afero.io", TTL: 60, Addr: netip.MustParseAddr("198.18.230.2")},
		{Name: "lan.afero.io", TTL: 60, Addr: netip.MustParseAddr("198.18.230.3")},
	}
	for _, prefix := range []string{"flood", "hubflood"} {
		for i := range floodNames {
			for j := range floodAddrs {
				rs = append(rs, testbed.Record{Name: fmt.Sprintf("%s-%d.afero.io", prefix, i), TTL: 2000000, Addr: floodAddr(prefix, i, j)})
			}
		}
	}
	for i := range hubNames {
		rs = append(rs, testbed.Record{Name: fmt.Sprintf("h-%d.afero.io", i), TTL: 60, Addr: hubAddr(i)})
	}
	return rs
}

// hubNames are h-N.afero.io, the hub's own lookups under a LAN flood, at hubAddr(N).
const hubNames = 128

func hubAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 230, byte(10 + i)}) }

func floodAddr(prefix string, i, j int) netip.Addr {
	n := i*floodAddrs + j
	if prefix == "hubflood" {
		n += floodNames * floodAddrs
	}
	return netip.AddrFrom4([4]byte{198, 18, byte(220 + n/250), byte(1 + n%250)})
}

// rogueRecords: whatever the rogue is asked about a whitelisted name, it answers with its own
// addresses, for years.
var rogueRecords = []testbed.Record{
	{Name: "conclave.afero.io", TTL: 2000000, Addr: netip.MustParseAddr("198.18.210.1")},
	{Name: "conclave.afero.io", TTL: 2000000, Addr: netip.MustParseAddr("2001:db8::66")},
	{Name: "cname.afero.io", TTL: 2000000, CNAME: "c.rogue.example"},
	{Name: "c.rogue.example", TTL: 2000000, Addr: netip.MustParseAddr("198.18.210.2")},
}

const advWireless = "config wifi-iface 'ap'\n\toption device 'radio0'\n\toption mode 'ap'\n\toption network 'apnet'\n\toption ifname 'wlan0-1'\n"

type adv struct {
	*e2e
	lan   *testbed.LAN
	cloud *testbed.DNSServer
}

func newAdv(t *testing.T, backend string) *adv {
	w := testbed.New(t, testbed.Options{})
	cloud, err := w.StartDNS(advRecords())
	if err != nil {
		t.Fatal(err)
	}
	lo := []string{"addr add " + rogueDNS + "/32 dev lo", "addr add " + silentDNS + "/32 dev lo",
		"addr add 198.18.210.0/24 dev lo", "addr add 198.18.230.0/24 dev lo"}
	if err := w.Cloud.IP(lo...); err != nil {
		t.Fatal(err)
	}
	if _, err := w.StartDNSAt(netip.MustParseAddr(rogueDNS), rogueRecords); err != nil {
		t.Fatal(err)
	}
	serveCloudTCP(t, w)
	lan, err := w.AddLAN("wlan0-1")
	if err != nil {
		t.Fatal(err)
	}
	e := startE2E(t, w, backend, map[string]string{
		"network":   e2eNetwork + "\nconfig interface 'apnet'\n\toption proto 'static'\n",
		"wireless":  advWireless,
		"connmgr":   e2eConnmgr(backend, "1") + fmt.Sprintf("\toption set_maxelem '%d'\n", advMaxElem),
		"whitelist": "*.afero.io\n",
	}, nil)
	return &adv{e2e: e, lan: lan, cloud: cloud}
}

// hubResolves looks name up from the hub through the uplinks' resolver, checks that the answer
// is addr, and says whether addr was open when the answer arrived (hold mode), and how many
// addresses were.
func (a *adv) hubResolves(name, addr string) (opened bool, learned int) {
	a.t.Helper()
	m, err := exchange(a.w.Device, testbed.DNSAddr.String(), name, dns.TypeA, false)
	if err != nil {
		a.t.Fatal(err)
	}
	if got := answerAddrs(m); !slices.Equal(got, []string{addr}) {
		a.t.Fatalf("%s answered %v", name, got)
	}
	l := a.learnedAll()
	return slices.Contains(l, addr), len(l)
}

func TestE2EDNSAdversarial(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			a := newAdv(t, backend)
			// Each step is a subtest, so that one failing does not hide what the others show.
			for _, step := range []struct {
				name string
				run  func()
			}{
				{"rogue_resolvers", a.rogueResolvers},
				{"lan_genuine", a.lanGenuine},
				{"answer_flood", a.answerFlood},
				{"lan_query_flood", a.lanQueryFlood},
			} {
				t.Run(step.name, func(t *testing.T) {
					a.e2e.t = t
					step.run()
				})
			}
			a.e2e.t = t
			t.Logf("%s: %v", backend, time.Since(start).Round(100*time.Millisecond))
		})
	}
}

// exchange asks server (address:53) for name from namespace ns, by UDP (with EDNS, so that a
// big answer fits) or TCP, and returns the answer.
func exchange(ns *testbed.NS, server, name string, qtype uint16, tcp bool) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), qtype)
	q.SetEdns0(4096, false)
	var m *dns.Msg
	err := ns.Do(func() (err error) {
		c := &dns.Client{Timeout: 10 * time.Second, UDPSize: 4096}
		if tcp {
			c.Net = "tcp"
		}
		m, _, err = c.Exchange(q, net.JoinHostPort(server, "53"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s %s from %s via %s: %w", dns.TypeToString[qtype], name, ns.Name, server, err)
	}
	return m, nil
}

func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch r := rr.(type) {
		case *dns.A:
			out = append(out, r.A.String())
		case *dns.AAAA:
			out = append(out, r.AAAA.String())
		}
	}
	return out
}

var anyAddrRe = regexp.MustCompile(`\b(198\.1[89]\.\d+\.\d+|2001:db8:[0-9a-f:]*)\b`)

// setList is the raw listing of one of connmgr's sets ("allow4", "fwd6", ...).
func (a *adv) setList(name string) string {
	a.t.Helper()
	var out string
	var err error
	if a.backend == "nftables" {
		out, err = a.w.Device.Run("nft", "list", "set", "inet", "afconn", name)
		if i := strings.Index(out, "elements = {"); i >= 0 {
			return out[i:]
		}
		return ""
	}
	out, err = a.w.Device.Run("ipset", "list", "afconn_"+name)
	if err != nil {
		a.t.Fatalf("list %s: %v", name, err)
	}
	if i := strings.Index(out, "Members:"); i >= 0 {
		return out[i:]
	}
	return ""
}

// learnedAll lists every address in the learned sets (device and forwarding, both families).
func (a *adv) learnedAll() []string {
	a.t.Helper()
	var got []string
	for _, s := range []string{"allow4", "allow6", "fwd4", "fwd6"} {
		for _, ad := range anyAddrRe.FindAllString(a.setList(s), -1) {
			if !slices.Contains(got, ad) {
				got = append(got, ad)
			}
		}
	}
	slices.Sort(got)
	return got
}

// status asks the daemon for its status over ubus (connmgr status --json).
func (a *adv) status() daemon.Status {
	a.t.Helper()
	out, err := a.w.Device.Run(testbed.Connmgr(a.t), "status", "--json", "-s", filepath.Join(a.dir, "ubus.sock"))
	if err != nil {
		a.t.Fatal(err)
	}
	var st daemon.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		a.t.Fatalf("status %q: %v", out, err)
	}
	return st
}

// Rogue resolvers, asked from the hub and from a LAN client, over UDP and TCP, for A, AAAA and
// a CNAME chain: the answers reach the askers, and open nothing.
func (a *adv) rogueResolvers() {
	a.t.Helper()
	type ask struct {
		name  string
		qtype uint16
		tcp   bool
		want  string
	}
	asks := []ask{
		{"conclave.afero.io", dns.TypeA, false, "198.18.210.1"},
		{"conclave.afero.io", dns.TypeA, true, "198.18.210.1"},
		{"conclave.afero.io", dns.TypeAAAA, false, "2001:db8::66"},
		{"conclave.afero.io", dns.TypeAAAA, true, "2001:db8::66"},
		{"cname.afero.io", dns.TypeA, false, "198.18.210.2"},
		{"cname.afero.io", dns.TypeA, true, "198.18.210.2"},
	}
	mark := a.p.Mark()
	for _, from := range []*testbed.NS{a.w.Device, a.lan.NS} {
		for _, q := range asks {
			m, err := exchange(from, rogueDNS, q.name, q.qtype, q.tcp)
			if err != nil {
				a.t.Fatal(err)
			}
			if got := answerAddrs(m); !slices.Equal(got, []string{q.want}) {
				a.t.Fatalf("rogue answered %s from %s with %v", q.name, from.Name, got)
			}
		}
	}
	// Hold mode: each reply was judged before the asker got it.
	if l := a.learnedAll(); len(l) != 0 {
		a.t.Fatalf("rogue answers opened %v", l)
	}
	// Each reply was judged (every reply is queued), and refused for its source.
	n := 2 * len(asks)
	deadline := time.Now().Add(20 * time.Second)
	for {
		log := a.p.Log()[logOffset(a.p, mark):]
		if c := strings.Count(log, `msg="untrusted DNS reply" reason=untrusted_resolver`); c >= n {
			break
		}
		if time.Now().After(deadline) {
			a.t.Fatalf("%d rogue replies judged untrusted_resolver, want %d:\n%s", strings.Count(log, "reason=untrusted_resolver"), n, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.mustDropQuick("198.18.210.1")
	a.mustDropQuick("198.18.210.2")
	if st := a.status(); st.Firewall.DNSRejected["untrusted_resolver"] != uint64(n) {
		a.t.Errorf("status dns_rejected %v, want untrusted_resolver %d", st.Firewall.DNSRejected, n)
	}
}

// A LAN client's genuine lookup through the uplinks' resolver still opens its answer.
func (a *adv) lanGenuine() {
	a.t.Helper()
	m, err := exchange(a.lan.NS, testbed.DNSAddr.String(), "lan.afero.io", dns.TypeA, false)
	if err != nil {
		a.t.Fatal(err)
	}
	if got := answerAddrs(m); !slices.Equal(got, []string{"198.18.230.3"}) {
		a.t.Fatalf("lan.afero.io answered %v", got)
	}
	if l := a.learnedAll(); !slices.Contains(l, "198.18.230.3") {
		a.t.Fatalf("the LAN client's answer is not open when it arrives: %v", l)
	}
}

// Element timeouts in set listings: nft writes "timeout 1d" or "timeout 7d" (and "1d2h" for
// more than a day), ipset "timeout 86400" in seconds.
var (
	nftDays   = regexp.MustCompile(`timeout (\d+)d(\w*)`)
	ipsetSecs = regexp.MustCompile(`timeout (\d+)`)
)

// checkLifetimes fails when an element of set was given more than one day.
func (a *adv) checkLifetimes(set string) {
	a.t.Helper()
	list := a.setList(set)
	if a.backend == "nftables" {
		for _, m := range nftDays.FindAllStringSubmatch(list, -1) {
			if d, _ := strconv.Atoi(m[1]); d > 1 || m[2] != "" {
				a.t.Fatalf("%s holds an element for more than a day (%s):\n%.600s", set, m[0], list)
			}
		}
		return
	}
	for _, m := range ipsetSecs.FindAllStringSubmatch(list, -1) {
		if s, _ := strconv.Atoi(m[1]); s > 86400 {
			a.t.Fatalf("%s holds an element for %d s, more than a day:\n%.600s", set, s, list)
		}
	}
}

// countIn counts how many of addrs are in the learned sets.
func countIn(learned []string, addrs []netip.Addr) int {
	n := 0
	for _, ad := range addrs {
		if _, ok := slices.BinarySearch(learned, ad.String()); ok {
			n++
		}
	}
	return n
}

// Answer floods: the uplinks' own resolver answers 40 whitelisted names with 40 addresses each
// for 2,000,000 s (23 days), asked by a LAN client, then by the hub. The set (set_maxelem
// 1024) never overflows; a reply opens at most dns_reply_max_addrs (32) for at most a day; the
// hub's own lookups of the cloud open every time, the LAN-learned addresses giving way.
func (a *adv) answerFlood() {
	a.t.Helper()
	flood := func(ns *testbed.NS, prefix string) {
		for i := range floodNames {
			m, err := exchange(ns, testbed.DNSAddr.String(), fmt.Sprintf("%s-%d.afero.io", prefix, i), dns.TypeA, i%2 == 1)
			if err != nil {
				a.t.Fatal(err)
			}
			if len(m.Answer) != floodAddrs {
				a.t.Fatalf("flood answer of %d records", len(m.Answer))
			}
		}
	}
	hubLookup := func(name, addr string) {
		a.t.Helper()
		if ok, n := a.hubResolves(name, addr); !ok {
			a.t.Fatalf("after an answer flood the hub's lookup of %s did not open %s (%d learned; log tail:\n%s)", name, addr, n, tail(a.p.Log(), 2000))
		}
		if err := a.connect(addr, 5*time.Second); err != nil {
			a.t.Fatalf("connect to %s after the flood: %v", addr, err)
		}
	}
	flood(a.lan.NS, "flood")
	l := a.learnedAll()
	if len(l) > advMaxElem {
		a.t.Fatalf("%d learned, more than set_maxelem %d", len(l), advMaxElem)
	}
	for i := range floodNames {
		var as []netip.Addr
		for j := range floodAddrs {
			as = append(as, floodAddr("flood", i, j))
		}
		if n := countIn(l, as); n > 32 {
			a.t.Fatalf("flood-%d.afero.io has %d addresses open, more than dns_reply_max_addrs 32", i, n)
		}
	}
	for _, s := range []string{"allow4", "fwd4"} {
		a.checkLifetimes(s)
	}
	hubLookup("conclave.afero.io", "198.18.230.1")
	flood(a.w.Device, "hubflood")
	if l := a.learnedAll(); len(l) > advMaxElem {
		a.t.Fatalf("%d learned after the hub's flood, more than set_maxelem %d", len(l), advMaxElem)
	}
	hubLookup("aft.afero.io", "198.18.230.2")
	st := a.status()
	b := st.Firewall.DNSBounds
	// (At least one flood's worth of truncations: a TCP segment that does not hold exactly one
	// DNS message is not decoded, so a TCP lookup may go unjudged.)
	if b["reply_truncated"] < floodNames*(floodAddrs-32) || b["gave_way_lan"] == 0 || st.Firewall.SetFullErrors != 0 {
		a.t.Errorf("bounds %v, set_full_errors %d", b, st.Firewall.SetFullErrors)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// floodLAN sends queries from the LAN client to a trusted resolver that never answers, at
// about rate per second, until stop is closed; it returns how many it sent.
func (a *adv) floodLAN(rate int, stop <-chan struct{}) (*atomic.Int64, *sync.WaitGroup) {
	a.t.Helper()
	var conn net.PacketConn
	a.lan.NS.MustDo(a.t, func() {
		var err error
		if conn, err = net.ListenPacket("udp4", "0.0.0.0:0"); err != nil {
			a.t.Fatal(err)
		}
	})
	to := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(silentDNS + ":53"))
	sent := new(atomic.Int64)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer conn.Close()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		// One query, packed once; each copy gets a fresh ID (a fresh pending query).
		q := new(dns.Msg)
		q.SetQuestion("flood.afero.io.", dns.TypeA)
		b, _ := q.Pack()
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			// Catch up with the rate: a late tick sends more.
			for due := int64(time.Since(start).Seconds() * float64(rate)); sent.Load() < due; {
				id := uint16(rand.IntN(1 << 16))
				b[0], b[1] = byte(id>>8), byte(id)
				if _, err := conn.WriteTo(b, to); err != nil {
					break
				}
				sent.Add(1)
			}
		}
	}()
	return sent, &wg
}

// A LAN client floods queries (5,000/s, to a trusted resolver that never answers, so each one
// stays pending) while the hub looks up whitelisted names whose answers take 700 ms to come (an
// upstream lookup): every one of the hub's lookups opens its address.
func (a *adv) lanQueryFlood() {
	a.t.Helper()
	defer a.silentResolver()()
	a.cloud.SetDelay(700 * time.Millisecond)
	defer a.cloud.SetDelay(0)
	stop := make(chan struct{})
	sent, wg := a.floodLAN(5000, stop)
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(time.Second) // the flood is on
	const tries = 8
	for i := range tries {
		name, addr := fmt.Sprintf("h-%d.afero.io", i), hubAddr(i).String()
		if ok, _ := a.hubResolves(name, addr); !ok {
			a.t.Fatalf("under a LAN query flood (%d sent) the hub's lookup %d of %d (%s) did not open %s", sent.Load(), i+1, tries, name, addr)
		}
	}
	st := a.status()
	a.t.Logf("LAN flood: %d queries sent; bounds %v", sent.Load(), st.Firewall.DNSBounds)
	if st.Firewall.DNSBounds["lan_over_quota"] == 0 || st.Firewall.DNSBounds["pending_evicted"] != 0 {
		a.t.Errorf("bounds %v: want the flooding client over its quota and none of the hub's queries evicted", st.Firewall.DNSBounds)
	}
}

// The trust benchmark (root; prints figures; asserts nothing the suite does not):
//
//	cd src && AFCONN_BENCH=1 go test ./internal/daemon -run TestBenchDNSTrust -v -count=1 -timeout 20m
//
// For each backend (AFCONN_BENCH_BACKENDS, default "nftables,iptables"), in the adversarial
// world: 10,000 answers of a rogue resolver (each a fresh whitelisted name and address) asked
// for from the hub and 10,000 from a LAN client, 8 at a time, then the addresses in the learned
// sets; then 100 lookups by the hub of whitelisted names whose answers take 300 ms (4 at a
// time) while the LAN client sends 10,000 queries/s to a trusted resolver that never answers,
// and how many of them had their address open when the answer arrived.
func TestBenchDNSTrust(t *testing.T) {
	if os.Getenv("AFCONN_BENCH") == "" {
		t.Skip("benchmark: set AFCONN_BENCH=1")
	}
	backends := []string{"nftables", "iptables"}
	if v := os.Getenv("AFCONN_BENCH_BACKENDS"); v != "" {
		backends = strings.Split(v, ",")
	}
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			a := newAdv(t, backend)
			a.benchRogue()
			a.benchHubUnderFlood()
		})
	}
}

const rogueAnswers = 10000

func rogueAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(100 + i/250), byte(1 + i%250)})
}

func (a *adv) benchRogue() {
	a.t.Helper()
	var recs []testbed.Record
	for i := range rogueAnswers {
		recs = append(recs, testbed.Record{Name: fmt.Sprintf("r-%d.afero.io", i), TTL: 3600, Addr: rogueAddr(i)})
	}
	if err := a.w.Cloud.IP("addr add 198.19.0.67/32 dev lo"); err != nil {
		a.t.Fatal(err)
	}
	if _, err := a.w.StartDNSAt(netip.MustParseAddr("198.19.0.67"), recs); err != nil {
		a.t.Fatal(err)
	}
	before := a.status().Firewall.DNSRejected["untrusted_resolver"]
	for _, from := range []*testbed.NS{a.w.Device, a.lan.NS} {
		var next, answered atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= rogueAnswers {
						return
					}
					m, err := exchange(from, "198.19.0.67", fmt.Sprintf("r-%d.afero.io", i), dns.TypeA, false)
					if err == nil && slices.Equal(answerAddrs(m), []string{rogueAddr(i).String()}) {
						answered.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		who := "hub"
		if from == a.lan.NS {
			who = "LAN client"
		}
		time.Sleep(time.Second) // capture mode would still be judging; hold mode is done
		learned := a.learnedAll()
		st := a.status()
		fmt.Printf("BENCH trust %s: rogue answers to the %s: %d answered in %v, %d addresses learned, untrusted_resolver %d\n",
			a.backend, who, answered.Load(), time.Since(start).Round(time.Millisecond), len(learned),
			st.Firewall.DNSRejected["untrusted_resolver"]-before)
		before = st.Firewall.DNSRejected["untrusted_resolver"]
		if len(learned) != 0 {
			a.t.Errorf("rogue answers opened %d addresses", len(learned))
		}
	}
}

func (a *adv) benchHubUnderFlood() {
	a.t.Helper()
	defer a.silentResolver()()
	a.cloud.SetDelay(300 * time.Millisecond)
	defer a.cloud.SetDelay(0)
	stop := make(chan struct{})
	sent, wg := a.floodLAN(10000, stop)
	time.Sleep(time.Second)
	floodStart, sent0 := time.Now(), sent.Load()
	const lookups = 100
	var next, opened, failed, wrong atomic.Int64
	var lw sync.WaitGroup
	for range 4 {
		lw.Add(1)
		go func() {
			defer lw.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= lookups {
					return
				}
				m, err := exchange(a.w.Device, testbed.DNSAddr.String(), fmt.Sprintf("h-%d.afero.io", i), dns.TypeA, false)
				if err != nil {
					failed.Add(1)
					continue
				}
				if !slices.Equal(answerAddrs(m), []string{hubAddr(i).String()}) {
					wrong.Add(1)
					continue
				}
				if slices.Contains(a.learnedAll(), hubAddr(i).String()) {
					opened.Add(1)
				}
			}
		}()
	}
	lw.Wait()
	rate := float64(sent.Load()-sent0) / time.Since(floodStart).Seconds()
	close(stop)
	wg.Wait()
	st := a.status()
	fmt.Printf("BENCH trust %s: hub lookups under a LAN flood of %.0f queries/s: %d of %d opened (%d lookups failed, %d wrong answers); bounds %v\n",
		a.backend, rate, opened.Load(), lookups, failed.Load(), wrong.Load(), st.Firewall.DNSBounds)
}

// silentResolver listens on silentDNS:53 in the cloud and reads what comes (no ICMP port
// unreachable back), never answering; the returned function stops it.
func (a *adv) silentResolver() func() {
	a.t.Helper()
	silent, err := a.w.Cloud.ListenPacket("udp4", silentDNS+":53")
	if err != nil {
		a.t.Fatal(err)
	}
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return func() { silent.Close() }
}
