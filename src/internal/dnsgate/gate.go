// Package dnsgate runs DNS extraction: it watches the DNS queries leaving
// the uplinks (and, for forwarded LAN clients, arriving from the LAN),
// checks each DNS reply against them, and opens the firewall for the
// whitelisted addresses a trusted reply answers.
//
// Hold mode (the default): replies are taken from a netfilter queue (the
// firewall's rule sends DNS replies arriving on the uplinks there, with
// bypass) and released only after the firewall holds their addresses, so the
// application's first packet to a freshly resolved address always passes.
// Capture mode (no kernel queueing, or dns_hold '0'): replies are captured
// in-process and the addresses opened as fast as possible; the reply races
// the pinhole.
//
// A held reply waits at most MaxHold (default 150 ms) whatever the rest of
// the daemon is doing (a slow set update, a firewall lock held by a
// restore): nfqueue.Holder reads every reply as it comes and releases, on a
// deadline of its own, those not judged in time; they are still judged, and
// their addresses opened, when the handling gets to them (counted as
// released_late). When the whole process stops (SIGSTOP, a hang), a
// watchdog process (nfqueue.Watchdog, WatchdogExe), woken by the reply
// itself, releases what the queue has held for 150-200 ms, and everything
// at once when replies came and no heartbeat followed for a second; the
// copies wait in the queue's socket buffer and are judged, and their
// addresses opened, when the process runs again.
//
// Queries are always seen by AF_PACKET capture (dnscap), never queued: a
// capture costs the query no delay, and before a queued reply is judged
// every query the kernel already captured is handled (the query copy is
// queued to the capture socket when the query is sent, before its reply can
// exist), so the capture cannot lose the race to the reply. Queueing queries
// would cost each one little (measured: +4 us median, +14 us p99 over
// loopback, nfqueue's TestBenchQueueDelay) but needs a second rule and hook
// and makes DNS depend on one more held packet; capture needs neither.
//
// The host's own queries are told apart by the mark the firewall sets on
// them (Config.HubMark) and captured by a socket of their own, which a flood
// of LAN queries cannot fill; an unmarked query leaving an uplink is then
// surely a LAN client's (dnsx's QueryForwarded), whatever NAT did to it.
//
// Both modes see queries and replies in the same address view: on the
// uplink (after source NAT for outgoing, before it is undone for incoming)
// in capture mode; in hold mode replies come from the INPUT and FORWARD
// hooks, after NAT is undone, so forwarded clients' queries are taken as
// they arrive on the LAN, before NAT.
package dnsgate

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/afero/af-conn/internal/dnscap"
	"github.com/afero/af-conn/internal/dnsx"
	"github.com/afero/af-conn/internal/logline"
	"github.com/afero/af-conn/internal/nfqueue"
)

// Opener puts addresses into the firewall. Allow must return only once the
// kernel's sets hold every address (or with an error; one wrapping ErrSetFull
// when a set is full). forward says the reply was for a LAN client the host
// forwards for: such addresses open forwarding only, never the host itself.
// Forget closes learned addresses that gave way to a bound (dnsx.Ledger); an
// address opened by hand stays open.
type Opener interface {
	Allow(ps []dnsx.Pinhole, forward bool) error
	Forget(as []netip.Addr) error
}

// ErrSetFull is what an Opener's error wraps when the firewall's set is full:
// the gate then makes room (dnsx.Ledger's order) and tries once more.
var ErrSetFull = errors.New("learned-address set is full")

// Mode of operation.
type Mode string

const (
	ModeHold    Mode = "hold"
	ModeCapture Mode = "capture"
)

// Config configures a Gate.
type Config struct {
	// Mode asked for. Hold falls back to Capture when the queue cannot be
	// bound; the daemon asks for Capture when the firewall could not install
	// the queue rule (else no reply would ever be seen).
	Mode     Mode
	QueueNum uint16
	// QueueMaxLen bounds the replies held at once; when full the kernel
	// lets replies through unheld (fail-open). 0: kernel default 1024.
	QueueMaxLen uint32
	// Uplinks are the ifindexes of the uplinks; LANs those where forwarded
	// clients' queries arrive (empty: no forwarding). With neither, nothing
	// is watched (no uplink device exists yet).
	Uplinks []int
	LANs    []int
	// IsLocal says whether an address is this host's: queries from the LAN
	// to the host's own resolver are not forwarded and are not tracked.
	// nil: track every LAN query.
	IsLocal func(netip.Addr) bool
	// Extractor configures the pure part; its Trusted (the uplinks'
	// resolvers) and Limits may be changed later (SetTrusted, SetLimits).
	Extractor dnsx.Config
	Opener    Opener
	Log       *logline.Logger
	// OnReply, if set, is called after every reply was handled (tests,
	// benchmarks). It runs on the gate's goroutines.
	OnReply func(ReplyEvent)
	// MaxHold bounds the hold of a reply; 0: nfqueue.DefaultMaxHold.
	MaxHold time.Duration
	// HubMark, when not 0, is the packet mark bit the firewall sets on the host's own DNS
	// queries out of the uplinks (firewall.HubDNSMark): they are captured by a socket of their
	// own, which a flood of LAN queries cannot fill, and a reply to the host is judged after
	// that socket alone was drained.
	HubMark uint32
	// WatchdogExe, if set, is started as the queue's watchdog process
	// (nfqueue.StartWatchdog): a binary that runs nfqueue.RunWatchdog when
	// its first argument is nfqueue.WatchdogArg. WatchdogStall is its stall
	// time (0: nfqueue.DefaultStall).
	WatchdogExe   string
	WatchdogStall time.Duration
}

// ReplyEvent reports one handled reply.
type ReplyEvent struct {
	Mode    Mode
	Result  dnsx.Result
	Forward bool          // opened for forwarding only (the reply was for a LAN client)
	Err     error         // not a usable reply, refused chain, or Allow failed
	Seen    time.Time     // when the gate got the reply
	Latency time.Duration // Seen to addresses in the set (pinholes only)
}

// Status is the gate's state for `connmgr status`.
type Status struct {
	Mode     Mode              `json:"mode"`
	Fallback string            `json:"fallback,omitempty"` // why hold mode is not used
	Stats    dnsx.Stats        `json:"-"`
	Rejected map[string]uint64 `json:"rejected"`
	// Bounds counts what the bounds did: see BoundCounters.
	Bounds      map[string]uint64 `json:"bounds"`
	Queue       nfqueue.Stats     `json:"queue"`
	Hold        nfqueue.HoldStats `json:"hold"`
	WatchdogPid int               `json:"watchdog_pid,omitempty"`
	Frames      uint64            `json:"frames"`
	Opened      uint64            `json:"opened"` // addresses put into the firewall
	AllowErrors uint64            `json:"allow_errors"`
	LatencyP50  time.Duration     `json:"latency_p50_ns"`
	LatencyP99  time.Duration     `json:"latency_p99_ns"`
}

// Gate is a running extractor.
type Gate struct {
	cfg      Config
	log      *logline.Logger
	mode     Mode
	fallback string

	mu     sync.Mutex // guards x, roles, lat
	x      *dnsx.Extractor
	uplink map[int]bool
	lan    map[int]bool
	lat    latencies

	capt *dnscap.Socket
	hub  *dnscap.Socket // the host's own queries (HubMark); nil without
	q    *nfqueue.Queue
	hold *nfqueue.Holder
	dog  *nfqueue.Watchdog
	wg   sync.WaitGroup

	allowErrs   atomic.Uint64
	badChecksum atomic.Uint64 // capture mode: replies the stack drops, not judged
	opened      atomic.Uint64
	closed      atomic.Bool
}

// Start opens the capture (and the queue in hold mode) and starts serving.
// The sockets are made in the caller's network namespace.
func Start(cfg Config) (*Gate, error) {
	if cfg.Opener == nil {
		return nil, errors.New("dns gate: no opener")
	}
	g := &Gate{cfg: cfg, log: cfg.Log, mode: cfg.Mode, x: dnsx.NewExtractor(cfg.Extractor)}
	if g.log == nil {
		g.log = logline.Stderr()
	}
	if g.mode != ModeCapture {
		g.mode = ModeHold
	}
	g.setRoles(cfg.Uplinks, cfg.LANs)
	var err error
	if g.mode == ModeHold {
		var q *nfqueue.Queue
		q, err = nfqueue.Open(nfqueue.Config{Num: cfg.QueueNum, MaxLen: cfg.QueueMaxLen, FailOpen: true, GSO: true})
		if err != nil {
			g.mode, g.fallback = ModeCapture, fmt.Sprintf("netfilter queue %d unavailable: %v", cfg.QueueNum, err)
			g.log.Warn("DNS hold mode unavailable, capturing replies instead: the first packet to a freshly resolved address may be dropped", "err", err)
		} else {
			g.q = q
		}
	}
	if g.q != nil && cfg.WatchdogExe != "" {
		if g.dog, err = nfqueue.StartWatchdog(g.q, cfg.WatchdogExe, cfg.WatchdogStall); err != nil {
			// Held replies are still released on time while the process runs.
			g.log.Warn("DNS queue watchdog unavailable: DNS replies stay held while connmgr is stopped or hung", "err", err)
		}
	}
	capt, err := dnscap.Open(g.captureConfig(), g.frame)
	if err != nil {
		if g.q != nil {
			g.q.Close()
		}
		if g.dog != nil {
			g.dog.Close()
		}
		return nil, fmt.Errorf("dns gate: %w", err)
	}
	g.capt = capt
	if cfg.HubMark != 0 {
		if g.hub, err = dnscap.Open(g.hubCaptureConfig(), g.hubFrame); err != nil {
			capt.Close()
			if g.q != nil {
				g.q.Close()
			}
			if g.dog != nil {
				g.dog.Close()
			}
			return nil, fmt.Errorf("dns gate: the host's own queries: %w", err)
		}
	}
	for _, s := range []*dnscap.Socket{capt, g.hub} {
		if s == nil {
			continue
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := s.Run(); !errors.Is(err, dnscap.ErrClosed) {
				g.log.Error("DNS capture stopped", "err", err)
			}
		}()
	}
	if g.q != nil {
		hc := nfqueue.HoldConfig{MaxHold: cfg.MaxHold}
		if g.dog != nil {
			hc.Beat = g.dog.Beat
		}
		g.hold = nfqueue.NewHolder(g.q, hc)
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.serveQueue()
		}()
	}
	if g.dog != nil {
		g.log.Info("DNS extraction running", "mode", g.mode, "queue", cfg.QueueNum, "watchdog", g.dog.Pid())
	} else {
		g.log.Info("DNS extraction running", "mode", g.mode, "queue", cfg.QueueNum)
	}
	return g, nil
}

// captureBuf is the capture socket's buffer. A LAN client flooding queries makes two frames
// per query (arriving from the LAN, leaving after NAT); when the daemon is starved of CPU for
// a while the kernel drops what does not fit, and their replies open nothing. (The hub's own
// queries, marked by the firewall, have a socket of their own: HubMark.) 4 MiB holds about 4,000 frames: 0.4 s of a 5,000 queries/s flood. It
// costs memory only while frames wait.
const captureBuf = 4 << 20

func (g *Gate) captureConfig() dnscap.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	var idx []int
	for i := range g.uplink {
		idx = append(idx, i)
	}
	for i := range g.lan {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	if len(idx) == 0 {
		// No interface has index 0: the filter matches nothing (an empty
		// list would mean every interface).
		idx = []int{0}
	}
	return dnscap.Config{
		Ifindexes: idx,
		Outgoing:  true,
		RcvBuf:    captureBuf,
		// Replies are captured in capture mode; queries from the LAN
		// when forwarding.
		Incoming: g.mode == ModeCapture || len(g.lan) > 0,
		// The host's own queries go to the hub socket (when there is one).
		Mark: g.cfg.HubMark,
	}
}

// hubCaptureConfig: the host's own queries, marked by the firewall, leaving the uplinks.
func (g *Gate) hubCaptureConfig() dnscap.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	idx := []int{0} // none yet: matches nothing
	for i := range g.uplink {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	return dnscap.Config{Ifindexes: idx, Outgoing: true, Mark: g.cfg.HubMark, Marked: true, RcvBuf: hubCaptureBuf}
}

// hubCaptureBuf is the hub socket's buffer: the host's own queries only (its resolver's
// upstream queries and connmgr's probes), about 2,000 of them.
const hubCaptureBuf = 1 << 20

func (g *Gate) setRoles(uplinks, lans []int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.uplink, g.lan = map[int]bool{}, map[int]bool{}
	for _, i := range uplinks {
		g.uplink[i] = true
	}
	// LAN queries are watched in both modes: in hold mode their replies
	// are judged as the LAN client sees them; in either mode their copies
	// leaving an uplink after NAT are recognised as theirs (dnsx.Tracker).
	for _, i := range lans {
		g.lan[i] = true
	}
}

// SetInterfaces changes the uplinks and LAN interfaces (by ifindex).
func (g *Gate) SetInterfaces(uplinks, lans []int) error {
	g.setRoles(uplinks, lans)
	if g.hub != nil {
		if err := g.hub.SetInterfaces(g.hubCaptureConfig()); err != nil {
			return err
		}
	}
	return g.capt.SetInterfaces(g.captureConfig())
}

// SetMatcher replaces the whitelist.
func (g *Gate) SetMatcher(m dnsx.Matcher) {
	g.mu.Lock()
	g.x.SetMatcher(m)
	g.mu.Unlock()
}

// SetTrusted replaces the set of trusted resolvers.
func (g *Gate) SetTrusted(f func(netip.Addr) bool) {
	g.mu.Lock()
	g.x.SetTrusted(f)
	g.mu.Unlock()
}

// SetLimits replaces the bounds on what answers open.
func (g *Gate) SetLimits(l dnsx.Limits) {
	g.mu.Lock()
	g.x.SetLimits(l)
	g.mu.Unlock()
}

// SetPolicy replaces the timeout policy.
func (g *Gate) SetPolicy(p dnsx.Policy) {
	g.mu.Lock()
	g.x.SetPolicy(p)
	g.mu.Unlock()
}

// Mode is the mode in force.
func (g *Gate) Mode() Mode { return g.mode }

// frame handles one captured frame (under the capture's lock).
func (g *Gate) frame(f dnscap.Frame) {
	seen := time.Now()
	pk, err := dnsx.DecodePacket(f.Data)
	if err != nil {
		return
	}
	g.mu.Lock()
	up, lan := g.uplink[f.Ifindex], g.lan[f.Ifindex]
	switch {
	case up && f.Dir == dnscap.Outgoing && pk.Dst.Port() == 53:
		pk.Dst = onLink(pk.Dst, f.Ifindex)
		if g.hub != nil {
			// Not marked, so not the host's own: a LAN client's after NAT.
			_ = g.x.QueryForwarded(pk)
		} else {
			_ = g.x.Query(pk)
		}
		g.mu.Unlock()
	case lan && f.Dir == dnscap.Incoming && pk.Dst.Port() == 53 &&
		(g.cfg.IsLocal == nil || !g.cfg.IsLocal(pk.Dst.Addr())):
		_ = g.x.QueryLAN(pk)
		g.mu.Unlock()
	case up && f.Dir == dnscap.Incoming && pk.Src.Port() == 53 && g.mode == ModeCapture:
		g.mu.Unlock()
		if !f.ChecksumTrusted && !pk.ChecksumOK() {
			// The stack drops it after capture: no client ever sees it, so it must
			// neither open anything nor use up the query the genuine reply answers.
			// (Hold mode never sees one: conntrack calls it invalid, the lock-down drops it.)
			g.badChecksum.Add(1)
			g.log.Debug("DNS reply with a wrong checksum ignored", "from", pk.Src, "to", pk.Dst)
			return
		}
		pk.Src = onLink(pk.Src, f.Ifindex)
		if g.hub != nil {
			g.hub.Drain() // the host's queries sent before this reply came
		}
		g.reply(pk, seen)
	default:
		g.mu.Unlock()
	}
}

// hubFrame handles one frame of the hub socket: a query the host itself sent
// out of an uplink (the firewall marked it).
func (g *Gate) hubFrame(f dnscap.Frame) {
	pk, err := dnsx.DecodePacket(f.Data)
	if err != nil || f.Dir != dnscap.Outgoing || pk.Dst.Port() != 53 {
		return
	}
	g.mu.Lock()
	if g.uplink[f.Ifindex] {
		pk.Dst = onLink(pk.Dst, f.Ifindex)
		_ = g.x.QueryHub(pk)
	}
	g.mu.Unlock()
}

// reply judges a reply and opens its addresses; it returns when they are
// in the set.
func (g *Gate) reply(pk dnsx.Packet, seen time.Time) {
	g.mu.Lock()
	res, err := g.x.Reply(pk)
	g.mu.Unlock()
	ev := ReplyEvent{Mode: g.mode, Result: res, Err: err, Seen: seen}
	// A LAN client's reply: the tracker knows it from the query it answers
	// (res.LAN). In hold mode the reply is judged after NAT was undone, so its
	// destination says it exactly: the host's own address or a client's.
	ev.Forward = res.LAN
	// A query seen arriving from the LAN is a LAN client's whatever its source: over IPv6
	// (no NAT) a client may claim the host's own address, and Linux forwards that.
	if g.mode == ModeHold && g.cfg.IsLocal != nil && res.Exchange.Client.IsValid() {
		ev.Forward = res.SeenOnLAN || !g.cfg.IsLocal(res.Exchange.Client.Addr())
	}
	if len(res.Revoke) > 0 {
		if ferr := g.cfg.Opener.Forget(res.Revoke); ferr != nil {
			g.log.Error("closing DNS pinholes that gave way", "n", len(res.Revoke), "err", ferr)
		}
	}
	if len(res.Pinholes) > 0 {
		if aerr := g.allow(res, ev.Forward); aerr != nil {
			g.allowErrs.Add(1)
			ev.Err = aerr
			g.log.Error("opening DNS pinholes", "name", res.Exchange.Question.Name, "err", aerr)
		} else {
			ev.Latency = time.Since(seen)
			g.opened.Add(uint64(len(res.Pinholes)))
			g.mu.Lock()
			g.lat.add(ev.Latency)
			g.mu.Unlock()
		}
	}
	if res.Reason != dnsx.Trusted && err == nil {
		g.log.Debug("untrusted DNS reply", "reason", res.Reason, "from", pk.Src, "to", pk.Dst, "name", res.Exchange.Question.Name)
	}
	if g.cfg.OnReply != nil {
		g.cfg.OnReply(ev)
	}
}

// allow opens a reply's addresses. When the firewall's set is full (addresses
// opened by hand share it with the learned ones), as many learned addresses
// as the reply needs give way, in the ledger's order, and it tries once more;
// the addresses it could not open leave the ledger.
func (g *Gate) allow(res dnsx.Result, forward bool) error {
	err := g.cfg.Opener.Allow(res.Pinholes, forward)
	if errors.Is(err, ErrSetFull) {
		g.mu.Lock()
		room := g.x.MakeRoom(len(res.Pinholes), forward)
		g.mu.Unlock()
		if len(room) > 0 {
			if ferr := g.cfg.Opener.Forget(room); ferr != nil {
				g.log.Error("closing DNS pinholes that gave way", "n", len(room), "err", ferr)
			}
			err = g.cfg.Opener.Allow(res.Pinholes, forward)
		}
	}
	if errors.Is(err, ErrSetFull) {
		as := make([]netip.Addr, 0, len(res.Pinholes))
		for _, p := range res.Pinholes {
			as = append(as, p.Addr)
		}
		g.mu.Lock()
		g.x.Forget(as)
		g.mu.Unlock()
	}
	return err
}

// serveQueue handles held replies until the queue is closed. Every packet
// is accepted, whatever it is: the gate opens holes, it never blocks DNS.
// The holder accepts a reply on its own when this falls behind; the reply
// is judged all the same.
func (g *Gate) serveQueue() {
	for {
		p, err := g.hold.Next()
		if err != nil {
			if !errors.Is(err, nfqueue.ErrClosed) {
				g.log.Error("DNS queue stopped; replies pass unheld (bypass)", "err", err)
			}
			return
		}
		// Every query already sent is in a capture socket's queue: handle
		// those first (outside g.mu: the capture handler takes it). A reply
		// to the host itself answers a query the firewall marked, which the
		// hub socket holds: a flood of LAN queries in the other does not
		// hold it up. (The queue rule and the mark rule are set up in one
		// transaction: a queued reply means the mark rule is there too.)
		pk, err := dnsx.DecodePacket(p.Payload)
		if g.hub != nil {
			g.hub.Drain()
		}
		if g.hub == nil || err != nil || g.cfg.IsLocal == nil || !g.cfg.IsLocal(pk.Dst.Addr()) {
			g.capt.Drain()
		}
		if err == nil && pk.Src.Port() == 53 {
			pk.Src = onLink(pk.Src, int(p.InDev))
			g.reply(pk, p.At)
		}
		if _, err := g.hold.Accept(p.ID); err != nil && !g.closed.Load() {
			g.log.Error("releasing DNS reply", "err", err)
		}
	}
}

// onLink gives a link-local resolver address the zone of the interface it was seen on (its
// ifindex): fe80::1 on the cellular link is another server than fe80::1 on Ethernet's, and
// only the first may be trusted (issue 11).
func onLink(a netip.AddrPort, ifindex int) netip.AddrPort {
	if ad := a.Addr(); ad.Is6() && ad.IsLinkLocalUnicast() && ifindex > 0 {
		return netip.AddrPortFrom(ad.WithZone(strconv.Itoa(ifindex)), a.Port())
	}
	return a
}

// Status reports mode and counters.
func (g *Gate) Status() Status {
	g.mu.Lock()
	st := Status{Mode: g.mode, Fallback: g.fallback, Stats: g.x.Stats()}
	st.LatencyP50, st.LatencyP99 = g.lat.percentile(50), g.lat.percentile(99)
	g.mu.Unlock()
	st.Rejected = map[string]uint64{}
	for r := dnsx.Reason(1); r < dnsx.NumReasons; r++ {
		st.Rejected[r.String()] = st.Stats.Tracker.Verdicts[r]
	}
	// Counted with the forgeries: a reply with a wrong checksum is one the stack discards.
	st.Rejected["bad_checksum"] = g.badChecksum.Load()
	st.Bounds = BoundCounters(st.Stats)
	// Frames the kernel dropped because the capture socket was full: a query lost this way
	// leaves its reply untrusted.
	st.Bounds["capture_dropped"] = g.capt.KernelDrops()
	st.Frames = g.capt.Frames()
	if g.hub != nil {
		st.Bounds["hub_capture_dropped"] = g.hub.KernelDrops()
		st.Frames += g.hub.Frames()
	}
	if g.q != nil {
		st.Queue = g.q.Stats()
		st.Hold = g.hold.Stats()
	}
	if g.dog != nil {
		st.WatchdogPid = g.dog.Pid()
	}
	st.AllowErrors = g.allowErrs.Load()
	st.Opened = g.opened.Load()
	return st
}

// BoundCounters names the counters of the bounds, as the status shows them:
// queries to resolvers not trusted (not tracked), pending queries dropped
// (the hub's table full, the LAN table full, a LAN client over its quota),
// and learned addresses not opened or closed early (beyond the per-reply
// bound, their name over its bound, giving way in a full set to the hub's
// own, refused to a LAN client in a set full of the hub's).
func BoundCounters(s dnsx.Stats) map[string]uint64 {
	return map[string]uint64{
		"untrusted_queries":   s.Tracker.Untrusted,
		"pending_evicted":     s.Tracker.Evicted,
		"lan_pending_evicted": s.Tracker.LANEvicted,
		"lan_over_quota":      s.Tracker.OverQuota,
		"forwarded_unseen":    s.Tracker.ForwardedUnseen,
		"reply_truncated":     s.Bounds.Truncated,
		"name_evicted":        s.Bounds.NameEvicted,
		"gave_way_lan":        s.Bounds.GaveWayLAN,
		"gave_way_hub":        s.Bounds.GaveWayHub,
		"lan_refused":         s.Bounds.Refused,
	}
}

// Close stops the gate; replies still held are released.
func (g *Gate) Close() error {
	g.closed.Store(true)
	var err error
	if g.hold != nil {
		err = g.hold.Close()
	}
	if g.dog != nil {
		if derr := g.dog.Close(); err == nil {
			err = derr
		}
	}
	for _, s := range []*dnscap.Socket{g.capt, g.hub} {
		if s == nil {
			continue
		}
		if cerr := s.Close(); err == nil {
			err = cerr
		}
	}
	g.wg.Wait()
	return err
}

// latencies keeps the last samples for percentiles.
type latencies struct {
	buf [1024]time.Duration
	n   int
}

func (l *latencies) add(d time.Duration) {
	l.buf[l.n%len(l.buf)] = d
	l.n++
}

func (l *latencies) percentile(p int) time.Duration {
	n := min(l.n, len(l.buf))
	if n == 0 {
		return 0
	}
	s := append([]time.Duration(nil), l.buf[:n]...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(n-1, n*p/100)]
}
