package daemon_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/testbed"
)

// The firewall and DNS benchmark with the real daemon in a testbed world (root; prints
// figures, asserts only that forged replies open nothing):
//
//	cd src && sudo AFCONN_BENCH=1 go test ./internal/daemon -run TestBenchDNSFirewall -v -count=1 -timeout 30m
//
// AFCONN_BENCH_N sets the resolutions per mode (default 1000), AFCONN_BENCH_BACKENDS the
// backends (default "nftables,iptables"). For each backend and mode (hold, capture) connmgr
// runs with that backend, and the device resolves N fresh whitelisted names (each behind a
// CNAME, each answering a never-seen address) and connects by TCP to the answer at once, one
// after the other (capture mode: 8 workers doing so side by side, since each dropped first SYN
// costs its connection a second). A test-owned nft table
// counts the SYNs the device sends (output, before connmgr's chains) and those that leave it
// (postrouting, after them): the difference is the SYNs the lock-down dropped because their
// address was not in the set yet; each one costs its connection a retransmission (1 s).
// connmgr's exit summary gives reply-to-set latency (from the reply read off the queue or
// the capture to the addresses in the kernel set, as percentiles of the last 1024). Then
// 10,000 forged replies of five kinds (wrong source, wrong port, unsolicited, wrong ID,
// another question, all for whitelisted names with fresh addresses) go to a pending query:
// the learned set must not grow. Last, with connmgr pinned to one CPU (taskset, GOMAXPROCS=1),
// 32 concurrent resolvers for 5 s give the replies per second the whole path sustains.

// captureWorkers resolve and connect side by side in capture mode.
const captureWorkers = 8

// benchBackends skips the test unless AFCONN_BENCH is set, and returns the backends to
// measure: AFCONN_BENCH_BACKENDS, default both.
func benchBackends(t *testing.T) []string {
	if os.Getenv("AFCONN_BENCH") == "" {
		t.Skip("benchmark: set AFCONN_BENCH=1")
	}
	if v := os.Getenv("AFCONN_BENCH_BACKENDS"); v != "" {
		return strings.Split(v, ",")
	}
	return []string{"nftables", "iptables"}
}

func benchN() int {
	if n, err := strconv.Atoi(os.Getenv("AFCONN_BENCH_N")); err == nil && n > 0 {
		return n
	}
	return 1000
}

// benchAddr is the fresh address of name i: 198.19.1.1 onwards (the cloud has all of
// 198.19.0.0/16 as local addresses).
func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(1 + i/250), byte(1 + i%250)})
}

type bench struct {
	t       *testing.T
	w       *testbed.World
	dir     string
	backend string
	next    atomic.Int64 // next fresh name
}

func TestBenchDNSFirewall(t *testing.T) {
	backends := benchBackends(t)
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			b := newBench(t, backend)
			for _, hold := range []string{"1", "0"} {
				b.run(hold)
			}
			b.throughput()
		})
	}
}

func newBench(t *testing.T, backend string) *bench {
	n := benchN()
	w := testbed.New(t, testbed.Options{})
	var recs []testbed.Record
	// Names for the resolutions (2n), the forgeries' sentinels and the throughput run.
	if 2*n+2 > benchNames {
		t.Fatalf("AFCONN_BENCH_N %d: at most %d", n, benchNames/2-1)
	}
	for i := 0; i < benchNames; i++ {
		recs = append(recs,
			testbed.Record{Name: fmt.Sprintf("h%d.afero.io", i), TTL: 60, CNAME: fmt.Sprintf("e%d.edge.example", i)},
			testbed.Record{Name: fmt.Sprintf("e%d.edge.example", i), TTL: 60, Addr: benchAddr(i)})
	}
	if _, err := w.StartDNS(recs); err != nil {
		t.Fatal(err)
	}
	if err := w.Cloud.IP("route add local 198.19.0.0/16 dev lo"); err != nil {
		t.Fatal(err)
	}
	serveCloudTCP(t, w)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "network"), []byte(e2eNetwork), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "whitelist"), []byte("*.afero.io\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &bench{t: t, w: w, dir: dir, backend: backend}
}

func (b *bench) start(hold string, pin bool) *testbed.Process {
	b.t.Helper()
	cfg := "config connmgr 'main'\n\toption firewall_backend '" + b.backend + "'\n\toption echo_host '198.19.0.1'\n" +
		"\toption dns_hold '" + hold + "'\n" +
		// The forgeries' resolvers are trusted, so that the forgeries are judged on the
		// checks that follow the resolver's (TestBenchDNSTrust measures untrusted ones).
		"\tlist trusted_resolver '" + silentDNS + "'\n\tlist trusted_resolver '" + otherDNS + "'\n"
	if err := os.WriteFile(filepath.Join(b.dir, "connmgr"), []byte(cfg), 0o644); err != nil {
		b.t.Fatal(err)
	}
	args := []string{"-c", b.dir, "-w", filepath.Join(b.dir, "whitelist"), "-s", filepath.Join(b.dir, "ubus.sock")}
	var p *testbed.Process
	if pin {
		var err error
		p, err = b.w.Device.Start(nil, "taskset", append([]string{"-c", "0", "env", "GOMAXPROCS=1", testbed.Connmgr(b.t)}, args...)...)
		if err != nil {
			b.t.Fatal(err)
		}
		b.t.Cleanup(func() { p.Stop(15 * time.Second) })
	} else {
		p = b.w.StartConnmgr(b.t, args...)
	}
	mode := map[string]string{"1": "hold", "0": "capture"}[hold]
	if _, err := p.WaitLog(regexp.MustCompile(`msg="DNS extraction running" mode=`+mode), 30*time.Second); err != nil {
		b.t.Fatal(err)
	}
	return p
}

// stop stops connmgr and returns its DNS summary line.
func (b *bench) stop(p *testbed.Process) string {
	b.t.Helper()
	if err := p.Stop(15 * time.Second); err != nil {
		b.t.Fatalf("connmgr exit: %v", err)
	}
	line, err := p.WaitLog(regexp.MustCompile(`msg="DNS extraction stopped" why="connmgr exits"`), time.Second)
	if err != nil {
		b.t.Fatal(err)
	}
	return line
}

// synWatch counts SYNs to the cloud's fresh addresses before and after the lock-down.
func (b *bench) synWatch() func() (sent, passed int) {
	b.t.Helper()
	script := `table ip benchwatch
delete table ip benchwatch
table ip benchwatch {
	chain sent {
		type filter hook output priority -300; policy accept;
		ip daddr 198.19.0.0/16 tcp dport 8080 tcp flags & (syn|ack) == syn counter comment "sent"
	}
	chain passed {
		type filter hook postrouting priority 300; policy accept;
		ip daddr 198.19.0.0/16 tcp dport 8080 tcp flags & (syn|ack) == syn counter comment "passed"
	}
}
`
	if err := b.w.Device.Nft(script); err != nil {
		b.t.Fatal(err)
	}
	re := regexp.MustCompile(`counter packets (\d+) bytes \d+ comment "(\w+)"`)
	return func() (int, int) {
		out, err := b.w.Device.Run("nft", "list", "table", "ip", "benchwatch")
		if err != nil {
			b.t.Fatal(err)
		}
		got := map[string]int{}
		for _, m := range re.FindAllStringSubmatch(out, -1) {
			got[m[2]], _ = strconv.Atoi(m[1])
		}
		return got["sent"], got["passed"]
	}
}

// learnedCount is the number of addresses in the learned set.
func (b *bench) learnedCount() int {
	e := &e2e{t: b.t, w: b.w, backend: b.backend}
	return len(e.learned())
}

// benchNames is how many names there are: their addresses are 198.19.1.1 to 198.19.199.250,
// and forged answers use 198.19.200.1 onwards.
const benchNames = 199 * 250

// forgedAddr is the address forged reply i answers with.
func forgedAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 19, byte(200 + (i/250)%50), byte(1 + i%250)})
}

// holes is the number of forged answers' addresses in the learned set.
func (b *bench) holes() int {
	e := &e2e{t: b.t, w: b.w, backend: b.backend}
	n := 0
	for _, a := range e.learned() {
		if a, err := netip.ParseAddr(a); err == nil && a.As4()[2] >= 200 {
			n++
		}
	}
	return n
}

// resolver is a stub resolver socket in the device.
func (b *bench) resolver() *net.UDPConn {
	var c *net.UDPConn
	err := b.w.Device.Do(func() (err error) {
		c, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(testbed.DNSAddr, 53)))
		return err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}

// resolve asks for name on c and returns the A record's address.
func resolveA(c *net.UDPConn, id uint16, name string) (string, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	q.Id = id
	buf, _ := q.Pack()
	if _, err := c.Write(buf); err != nil {
		return "", err
	}
	buf = make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", name, err)
		}
		m := new(dns.Msg)
		if m.Unpack(buf[:n]) != nil || m.Id != id {
			continue
		}
		for _, rr := range m.Answer {
			if a, ok := rr.(*dns.A); ok {
				return a.A.String(), nil
			}
		}
		return "", fmt.Errorf("resolve %s: no A in %v", name, m)
	}
}

func (b *bench) run(hold string) {
	t := b.t
	mode := map[string]string{"1": "hold", "0": "capture"}[hold]
	n := benchN()
	p := b.start(hold, false)
	counts := b.synWatch()
	before := b.learnedCount()
	stopForks := forkWatch(t, p.Pid())
	var mu sync.Mutex
	var connects []time.Duration
	var todo atomic.Int64
	todo.Store(int64(n))
	workers := 1
	if mode == "capture" {
		workers = captureWorkers
	}
	t0 := time.Now()
	err := b.clients(workers, func() bool { return todo.Add(-1) >= 0 }, func(addr string) error {
		var d time.Duration
		err := b.w.Device.Do(func() error {
			start := time.Now()
			conn, err := net.DialTimeout("tcp4", net.JoinHostPort(addr, strconv.Itoa(e2ePort)), 15*time.Second)
			d = time.Since(start)
			if err == nil {
				conn.Close()
			}
			return err
		})
		mu.Lock()
		connects = append(connects, d)
		mu.Unlock()
		return err
	})
	wall := time.Since(t0)
	if err != nil {
		t.Fatal(err)
	}
	forks, forked := stopForks()
	sent, passed := counts()
	slow := 0
	for _, d := range connects {
		if d > 900*time.Millisecond { // the first retransmission comes after 1 s
			slow++
		}
	}
	learned := b.learnedCount() - before

	// Forgeries while this mode runs.
	fs := b.forgeMany(10000)
	holes := b.holes()

	summary := b.stop(p)
	fmt.Printf("BENCH dns-first-syn backend=%s mode=%s workers=%d resolutions=%d first_syn_ok=%d/%d syn_dropped=%d (sent %d, passed %d) "+
		"connects_over_900ms=%d connect_p50=%v connect_p99=%v new_set_elements=%d wall=%v\n",
		b.backend, mode, workers, n, n-(sent-passed), n, sent-passed, sent, passed, slow, pct(connects, 50), pct(connects, 99),
		learned, wall.Round(time.Millisecond))
	fmt.Printf("BENCH dns-reply-to-set backend=%s mode=%s %s\n", b.backend, mode, summaryFigures(summary))
	fmt.Printf("BENCH dns-forks backend=%s mode=%s resolutions=%d connmgr_forks=%d commands=%v wall=%v\n",
		b.backend, mode, n, forks, forked, wall.Round(time.Millisecond))
	fmt.Printf("BENCH dns-forged backend=%s mode=%s sent=%d holes=%d %s\n", b.backend, mode, fs, holes, summaryForged(summary))
	if holes != 0 {
		t.Errorf("%d forged replies opened %d holes", fs, holes)
	}
}

var (
	reLatency = regexp.MustCompile(`set_latency_p50=(\S+) set_latency_p99=(\S+)`)
	reForged  = regexp.MustCompile(`replies=\d+ opened=\d+ forged=(\d+) rejected="([^"]*)"`)
)

func summaryFigures(line string) string {
	m := reLatency.FindStringSubmatch(line)
	if m == nil {
		return "latency=? (" + line + ")"
	}
	return "reply_to_set_p50=" + m[1] + " reply_to_set_p99=" + m[2]
}

func summaryForged(line string) string {
	m := reForged.FindStringSubmatch(line)
	if m == nil {
		return "counted=? (" + line + ")"
	}
	return "counted=" + m[1] + " by_reason=" + strings.ReplaceAll(m[2], " ", ",")
}

func pct(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	s = append([]time.Duration(nil), s...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)].Round(time.Microsecond)
}

// forgeMany sends count forged replies, a fifth of each kind, to a query pending at a resolver
// that never answers (198.19.0.60), re-asking every 2000 so the query never expires. Each
// answers a whitelisted name with a fresh address (198.19.200.x onwards).
func (b *bench) forgeMany(count int) int {
	t := b.t
	e := &e2e{t: t, w: b.w, backend: b.backend}
	f := e.newForger()
	defer f.close()
	wrongSrc, err := b.w.Cloud.ListenPacket("udp4", otherDNS+":53")
	if err != nil {
		t.Fatal(err)
	}
	defer wrongSrc.Close()
	wrongPort, err := b.w.Cloud.ListenPacket("udp4", silentDNS+":5353")
	if err != nil {
		t.Fatal(err)
	}
	defer wrongPort.Close()
	sent := 0
	for i := 0; i < count; i++ {
		if i%2000 == 0 {
			f.ask()
		}
		m := new(dns.Msg)
		m.SetReply(f.query)
		name := "silent.afero.io."
		to := *f.from
		src := f.right
		switch i % 5 {
		case 0:
			src = wrongSrc
		case 1:
			src = wrongPort
		case 2:
			to.Port ^= 1
		case 3:
			m.Id++
		case 4:
			name = fmt.Sprintf("x%d.afero.io.", i)
			m.Question[0].Name = name
		}
		rr, _ := dns.NewRR(fmt.Sprintf("%s 3600 IN A %s", name, forgedAddr(i)))
		m.Answer = []dns.RR{rr}
		msg, _ := m.Pack()
		if _, err := src.WriteTo(msg, &to); err != nil {
			t.Fatal(err)
		}
		sent++
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // stay under the socket buffers and the queue length
		}
	}
	// A fresh whitelisted resolution after them: once its address is in the set, everything
	// sent before it on the same path has been judged (the capture socket and the queue keep
	// order), so the set shows every hole the forgeries made.
	c := b.resolver()
	defer c.Close()
	i := int(b.next.Add(1) - 1)
	addr, err := resolveA(c, 1, fmt.Sprintf("h%d.afero.io.", i))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !slices.Contains(e.learned(), addr) {
		if time.Now().After(deadline) {
			t.Fatalf("the resolution after the forgeries never opened %s", addr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return sent
}

// clients runs workers stub resolvers side by side; each, while more says so, resolves the
// next fresh name and hands the answer to then. It stops when the names run out and returns
// the first error.
func (b *bench) clients(workers int, more func() bool, then func(addr string) error) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := b.resolver()
			defer c.Close()
			for more() {
				i := int(b.next.Add(1) - 1)
				if i >= benchNames {
					return
				}
				addr, err := resolveA(c, uint16(i), fmt.Sprintf("h%d.afero.io.", i))
				if err == nil {
					err = then(addr)
				}
				if err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// throughput: connmgr pinned to one CPU in hold mode, 32 resolvers asking fresh whitelisted
// names for 5 s; every reply is held, judged, opened and released.
func (b *bench) throughput() {
	t := b.t
	p := b.start("1", true)
	const workers, dur = 32, 5 * time.Second
	var done atomic.Int64
	t0 := time.Now()
	err := b.clients(workers, func() bool { return time.Since(t0) < dur }, func(string) error {
		done.Add(1)
		return nil
	})
	el := time.Since(t0)
	summary := b.stop(p)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("BENCH dns-throughput backend=%s mode=hold cpus=1 resolvers=%d resolved=%d in %v = %.0f replies/s %s\n",
		b.backend, workers, done.Load(), el.Round(time.Millisecond), float64(done.Load())/el.Seconds(), summaryFigures(summary))
}

// forkWatch counts the processes connmgr (pid) forks, from the kernel's process events (the
// netlink proc connector): exact, whatever else the machine runs. It also notes the command
// each forked child executes. stop returns the count and the commands.
func forkWatch(t *testing.T, pid int) (stop func() (int, map[string]int)) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	if err != nil {
		t.Fatalf("proc connector: %v", err)
	}
	const cnIdxProc, cnValProc, mcastListen = 1, 1, 1
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		t.Fatalf("proc connector bind: %v", err)
	}
	// nlmsghdr, cn_msg {idx, val, seq, ack, len, flags}, then the listen op.
	msg := make([]byte, 16+20+4)
	binary.NativeEndian.PutUint32(msg[0:], uint32(len(msg)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NLMSG_DONE)
	binary.NativeEndian.PutUint32(msg[16:], cnIdxProc)
	binary.NativeEndian.PutUint32(msg[20:], cnValProc)
	binary.NativeEndian.PutUint16(msg[32:], 4)
	binary.NativeEndian.PutUint32(msg[36:], mcastListen)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		t.Fatalf("proc connector listen: %v", err)
	}
	var mu sync.Mutex
	forks := 0
	children := map[uint32]bool{}
	cmds := map[string]int{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		for {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return
			}
			for b := buf[:n]; len(b) >= 16; {
				l := int(binary.NativeEndian.Uint32(b))
				if l < 16 || l > len(b) {
					break
				}
				ev := b[16+20 : l] // proc_event: what, cpu, timestamp, then the event
				b = b[(l+3)&^3:]
				if len(ev) < 32 {
					continue
				}
				const procEventFork, procEventExec = 1, 2
				what, data := binary.NativeEndian.Uint32(ev), ev[16:]
				mu.Lock()
				switch {
				case what == procEventFork:
					parentTgid, childPid, childTgid := binary.NativeEndian.Uint32(data[4:]), binary.NativeEndian.Uint32(data[8:]), binary.NativeEndian.Uint32(data[12:])
					if int(parentTgid) == pid && childPid == childTgid { // a process, not a thread
						forks++
						children[childPid] = true
					}
				case what == procEventExec && children[binary.NativeEndian.Uint32(data)]:
					comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", binary.NativeEndian.Uint32(data)))
					cmds[strings.TrimSpace(string(comm))]++
				}
				mu.Unlock()
			}
		}
	}()
	return func() (int, map[string]int) {
		unix.Shutdown(fd, unix.SHUT_RDWR)
		unix.Close(fd)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return forks, cmds
	}
}
