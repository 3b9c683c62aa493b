// Package capture owns passive liveness: it reports when the reply
// direction of a TCP connection that this host (or a LAN client it
// forwards for) opened through the uplink to an address beyond the
// uplink's own subnet delivered traffic that conntrack accepted. Only that
// proves the upstream alive without a probe; in detail, a report needs
//
//   - a packet addressed to this host on the uplink's device (not
//     broadcast, multicast or outgoing), IPv4 or IPv6 (each family has
//     its own socket, filter and reports: Alive.Family), not a non-first
//     fragment, from outside the uplink's own prefixes and, for IPv6, not
//     from a link-local address (the gateway and neighbours prove nothing
//     about the upstream); IPv6 extension headers (hop-by-hop, routing,
//     destination options, fragment: at most 3) are walked to the TCP
//     header, any other (AH, ESP) or more make the packet count nothing;
//   - TCP with ACK set and neither SYN nor RST (a SYN-ACK or RST is what a
//     portal or a scanner forges most easily), from a source port other
//     than DNS (53, 853), NTP (123) and DHCP (67, 68, 546, 547): those prove a
//     resolver or a server, not the cloud; UDP and ICMP never count
//     (conntrack cannot tell a spoofed UDP or ICMP reply from a real one);
//   - a conntrack entry, got by that packet's tuple over ctnetlink, whose
//     reply direction is exactly that tuple (so the connection was opened
//     from this side), confirmed, seen replying, TCP ESTABLISHED;
//   - and the entry's reply-direction packet counter grown since the
//     capture last looked at the same entry: conntrack counts a reply only
//     if it was in the TCP window it tracks, so a spoofed or stale segment
//     (an attacker, noise, a black hole's leftovers) counts nothing. An
//     entry conntrack does not check the window of (IP_CT_TCP_FLAG_BE_LIBERAL:
//     a connection picked up in mid-stream after its entry was deleted,
//     e.g. by connmgr's flush when an uplink fails) counts nothing, nor
//     does anything while net.netfilter.nf_conntrack_tcp_be_liberal is on. This
//     needs conntrack accounting (net.netfilter.nf_conntrack_acct=1, which
//     OpenWrt sets); without it nothing counts and the probes decide alone.
//
// The report says the family and the uplink address the replies came to,
// and that they came after the previous look at that entry (Since), so
// the uplink state machine of that family can tell whether they came
// after a failed probe.
//
// It uses an AF_PACKET socket with a classic BPF filter, in pure Go, and
// costs next to nothing on a busy link: the kernel filter drops everything
// not wanted and copies at most the headers of a wanted packet into a
// receive buffer that holds one or two. The daemon reads one packet, then
// none for a period: meanwhile the full buffer makes the kernel drop what
// the filter accepts (a counter increment), so a link at 50,000 packets/s
// wakes the daemon (and asks conntrack about one tuple) at most once a
// period and family. (Swapping in a drop-all filter between samples, as an earlier
// version did, costs more than it saves: every attach makes the kernel
// check and translate the program again.)
// It works the same with connmgr's firewall off (-d): conntrack runs
// whether or not there is a firewall.
package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/inns"
	"github.com/afero/af-conn/internal/uplink"
)

// Config says what to watch.
type Config struct {
	Device string
	// Prefixes are the uplink's own addresses with their subnets, of one
	// family or both: each family with a prefix here is watched (at most
	// 8 prefixes a family). Traffic from inside them (the gateway,
	// neighbours) proves nothing about the upstream, nor does IPv6
	// traffic from a link-local address.
	Prefixes []netip.Prefix
	// Period is the least time between two samples of a family, each of
	// which asks conntrack about one tuple (default 250 ms).
	Period time.Duration
	// OnAlive is called, from the capture's goroutines, at most once per
	// Period and family while confirmed replies arrive.
	OnAlive func(Alive)
	// Logf, if set, says once when conntrack accounting is off.
	Logf func(format string, args ...any)
	// Namespace, if open, is the network namespace of the device (tests).
	Namespace netns.NsHandle
}

// Alive is one report: conntrack confirmed replies of the family's
// connections through the uplink.
type Alive struct {
	// Family is the replies' (each family of an uplink is judged on its
	// own). Local is the address they came to: the uplink's own, or a
	// LAN client's for its IPv6 connection, which the hub forwards
	// without NAT (its replies prove the uplink all the same).
	Family uplink.Family
	Local  netip.Addr
	// The replies arrived after Since (the previous look at the same
	// connection) and by At.
	Since, At time.Time
}

// Capture is one running capture; Close stops it.
type Capture struct {
	cfg       Config
	watchers  []*watcher
	samples   atomic.Uint64
	confirmed atomic.Uint64
	noAcct    atomic.Bool // accounting off was logged
	stop      chan struct{}
	wg        sync.WaitGroup
	once      sync.Once
}

// watcher watches one family: its own packet socket (bound to the
// family's EtherType, so one family's busy traffic never crowds out the
// other's samples), filter and ctnetlink socket.
type watcher struct {
	c      *Capture
	family uplink.Family
	accept []unix.SockFilter
	f      *os.File
	ct     *ctConn
	seen   map[tuple]look // last look at each entry, by reply tuple
	// liberalAt, liberal: when the namespace's
	// nf_conntrack_tcp_be_liberal was last read, and whether it was on
	// (then conntrack checks no TCP window at all).
	liberalAt time.Time
	liberal   bool
}

// look is one look at a conntrack entry.
type look struct {
	id      uint32
	packets uint64
	at      time.Time
}

// maxSeen bounds the entries remembered per uplink and family.
const maxSeen = 64

// verdict says whether entry e, got for packet tuple p, is the reply
// direction of an established TCP connection opened from this side.
func verdict(e ctEntry, p tuple) (ok bool, why string) {
	switch {
	case e.reply != p:
		return false, "the packet is not the reply direction of its connection"
	case e.orig.src == p.src:
		return false, "the connection was opened by the remote side"
	case e.status&(ipsConfirmed|ipsSeenReply) != ipsConfirmed|ipsSeenReply || e.status&ipsDying != 0:
		return false, "the connection is not confirmed and replied"
	case e.tcpState != tcpConntrackEstablished:
		return false, "the connection is not established"
	case e.liberal:
		// Picked up in mid-stream (its entry was deleted, e.g. by a
		// flush): conntrack accepts any sequence numbers, so a blind
		// spoofer of the tuple would grow the counter.
		return false, "conntrack does not check the connection's TCP window"
	case !e.hasCounters:
		return false, "conntrack accounting is off"
	}
	return true, ""
}

func assemble(prog []bpf.Instruction) ([]unix.SockFilter, error) {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Start opens the capture on cfg.Device, a packet socket for each family
// of cfg.Prefixes, and starts their goroutines.
func Start(cfg Config) (*Capture, error) {
	if cfg.OnAlive == nil {
		return nil, errors.New("capture: OnAlive not set")
	}
	if cfg.Period <= 0 {
		cfg.Period = 250 * time.Millisecond
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	c := &Capture{cfg: cfg, stop: make(chan struct{})}
	for _, f := range []uplink.Family{uplink.IPv4, uplink.IPv6} {
		if !slices.ContainsFunc(cfg.Prefixes, func(p netip.Prefix) bool { return p.IsValid() && uplink.FamilyOf(p.Addr()) == f }) {
			continue
		}
		w, err := c.open(f)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.watchers = append(c.watchers, w)
	}
	if len(c.watchers) == 0 {
		return nil, fmt.Errorf("capture on %s: no prefix of the uplink's own in %v", cfg.Device, cfg.Prefixes)
	}
	for _, w := range c.watchers {
		c.wg.Add(1)
		go w.run()
	}
	return c, nil
}

// ethType is the EtherType a family's packet socket is bound to.
var ethType = map[uplink.Family]uint16{uplink.IPv4: unix.ETH_P_IP, uplink.IPv6: unix.ETH_P_IPV6}

func (c *Capture) open(f uplink.Family) (*watcher, error) {
	prog, err := filter(f, c.cfg.Prefixes)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", c.cfg.Device, err)
	}
	accept, err := assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", c.cfg.Device, err)
	}
	ct, err := openCT(c.cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", c.cfg.Device, err)
	}
	w := &watcher{c: c, family: f, accept: accept, ct: ct, seen: map[tuple]look{}}
	if err := w.open(); err != nil {
		ct.Close()
		return nil, err
	}
	return w, nil
}

func (w *watcher) open() (err error) {
	w.f, err = openPacket(w.c.cfg.Namespace, w.c.cfg.Device, ethType[w.family], "capture", w.accept)
	return err
}

func interfaceIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	req, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, req); err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return int(req.Uint32()), nil
}

func (w *watcher) run() {
	defer w.c.wg.Done()
	b := make([]byte, snapLen(w.family))
	for {
		// Blocks in the runtime's poller until a wanted packet is queued
		// or Close closes the file.
		n, err := w.f.Read(b)
		if err == nil {
			w.c.samples.Add(1)
			if p, ok := packetTuple(w.family, b[:n]); ok {
				if since, ok := w.confirm(p, time.Now()); ok {
					w.c.confirmed.Add(1)
					w.c.cfg.OnAlive(Alive{Family: w.family, Local: p.dst, Since: since, At: time.Now()})
				}
			}
		} else if errors.Is(err, os.ErrClosed) {
			return
		}
		// A packet still queued after the pause is at most a period old:
		// the conntrack counters, not the packet's age, say what is new.
		select {
		case <-w.c.stop:
			return
		case <-time.After(w.c.cfg.Period):
		}
	}
}

// confirm asks conntrack about the connection of packet p and says
// whether replies on it were accepted since the last look (and since
// when).
func (w *watcher) confirm(p tuple, now time.Time) (since time.Time, ok bool) {
	e, err := w.ct.get(p)
	if err != nil {
		return time.Time{}, false // no entry (noise) or no answer: nothing proven
	}
	if good, why := verdict(e, p); !good {
		if why == "conntrack accounting is off" && w.c.noAcct.CompareAndSwap(false, true) {
			w.c.cfg.Logf("capture on %s: conntrack accounting is off (net.netfilter.nf_conntrack_acct=0): replies cannot be confirmed, probes alone judge the uplink", w.c.cfg.Device)
		}
		return time.Time{}, false
	}
	if w.beLiberal(now) {
		return time.Time{}, false
	}
	prev, seen := w.seen[p]
	if !seen && len(w.seen) >= maxSeen {
		w.forgetOldest()
	}
	w.seen[p] = look{id: e.id, packets: e.replyPackets, at: now}
	if !seen || prev.id != e.id || e.replyPackets <= prev.packets {
		return time.Time{}, false
	}
	return prev.at, true
}

// liberalSysctl is the switch that turns conntrack's TCP window checks
// off for every connection (some OpenWrt packages turn it on).
const liberalSysctl = "/proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal"

// beLiberal says whether the namespace's conntrack checks no TCP windows
// (read at most every 5 s; logged once when on): then a blind spoofer's
// segments are counted as replies, and nothing proves an uplink.
func (w *watcher) beLiberal(now time.Time) bool {
	if !w.liberalAt.IsZero() && now.Sub(w.liberalAt) < 5*time.Second {
		return w.liberal
	}
	w.liberalAt = now
	var b []byte
	err := inns.Do(w.c.cfg.Namespace, func() (err error) {
		b, err = os.ReadFile(liberalSysctl)
		return err
	})
	on := err == nil && len(b) > 0 && b[0] != '0'
	if on && !w.liberal {
		w.c.cfg.Logf("capture on %s: net.netfilter.nf_conntrack_tcp_be_liberal is on: conntrack checks no TCP window, replies cannot be confirmed, probes alone judge the uplink", w.c.cfg.Device)
	}
	w.liberal = on
	return on
}

func (w *watcher) forgetOldest() {
	var oldest tuple
	var at time.Time
	for t, l := range w.seen {
		if at.IsZero() || l.at.Before(at) {
			oldest, at = t, l.at
		}
	}
	delete(w.seen, oldest)
}

// Samples returns how many packets the capture has taken (each at least a
// period apart).
func (c *Capture) Samples() uint64 { return c.samples.Load() }

// Confirmed returns how many samples conntrack confirmed (reports made).
func (c *Capture) Confirmed() uint64 { return c.confirmed.Load() }

// Close stops the capture and waits for its goroutines.
func (c *Capture) Close() {
	c.once.Do(func() {
		close(c.stop)
		for _, w := range c.watchers {
			w.f.Close()
		}
		c.wg.Wait()
		for _, w := range c.watchers {
			w.ct.Close()
		}
	})
}
