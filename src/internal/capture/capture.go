// Package capture owns passive liveness: it reports when the reply
// direction of a TCP connection that this host (or a LAN client it
// forwards for) opened through the uplink to an address beyond the
// uplink's own subnet delivered traffic that conntrack accepted. Only that
// proves the upstream alive without a probe; in detail, a report needs
//
//   - a packet addressed to this host on the uplink's device (not
//     broadcast, multicast or outgoing), IPv4, not a non-first fragment,
//     from outside the uplink's subnet (the gateway and neighbours prove
//     nothing about the upstream);
//   - TCP with ACK set and neither SYN nor RST (a SYN-ACK or RST is what a
//     portal or a scanner forges most easily), from a source port other
//     than DNS (53, 853), NTP (123) and DHCP (67, 68): those prove a
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
// The report says the replies came after the previous look at that entry
// (Since), so the uplink state machine can tell whether they came after a
// failed probe.
//
// It uses an AF_PACKET socket with a classic BPF filter, in pure Go, and
// costs next to nothing on a busy link: the kernel filter drops everything
// not wanted and copies at most the headers of a wanted packet into a
// receive buffer that holds one or two. The daemon reads one packet, then
// none for a period: meanwhile the full buffer makes the kernel drop what
// the filter accepts (a counter increment), so a link at 50,000 packets/s
// wakes the daemon (and asks conntrack about one tuple) at most once a
// period. (Swapping in a drop-all filter between samples, as an earlier
// version did, costs more than it saves: every attach makes the kernel
// check and translate the program again.)
// It works the same with connmgr's firewall off (-d): conntrack runs
// whether or not there is a firewall.
package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/inns"
)

// Config says what to watch.
type Config struct {
	Device string
	// Prefix is the uplink's own address and subnet: traffic from inside
	// it (the gateway, neighbours) proves nothing about the upstream.
	Prefix netip.Prefix
	// Period is the least time between two samples, each of which asks
	// conntrack about one tuple (default 250 ms).
	Period time.Duration
	// OnAlive is called, from the capture's goroutine, at most once per
	// Period while confirmed replies arrive: they arrived after since
	// and by at.
	OnAlive func(since, at time.Time)
	// Logf, if set, says once when conntrack accounting is off.
	Logf func(format string, args ...any)
	// Namespace, if open, is the network namespace of the device (tests).
	Namespace netns.NsHandle
}

// Capture is one running capture; Close stops it.
type Capture struct {
	cfg    Config
	f      *os.File
	ct     *ctConn
	accept []unix.SockFilter
	seen   map[tuple]look // last look at each entry, by reply tuple
	noAcct bool           // accounting off was logged
	// liberalAt, liberal: when the namespace's
	// nf_conntrack_tcp_be_liberal was last read, and whether it was on
	// (then conntrack checks no TCP window at all).
	liberalAt time.Time
	liberal   bool
	samples   atomic.Uint64
	confirmed atomic.Uint64
	stop      chan struct{}
	done      chan struct{}
	once      sync.Once
}

// look is one look at a conntrack entry.
type look struct {
	id      uint32
	packets uint64
	at      time.Time
}

// maxSeen bounds the entries remembered per uplink.
const maxSeen = 64

// snapLen is what the filter copies of a wanted packet: the IPv4 header
// (at most 60 bytes) and the TCP ports.
const snapLen = 64

// filter is the kernel program: accept (the headers of) a packet
// addressed to this host (not broadcast, multicast or outgoing) that
// ipFilter wants. The packet socket is SOCK_DGRAM, so offset 0 is the
// IPv4 header on every link type.
func filter(prefix netip.Prefix) []bpf.Instruction {
	return append([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_HOST, SkipFalse: 1},
		bpf.Jump{Skip: 1},
		bpf.RetConstant{Val: 0},
	}, ipFilter(prefix)...)
}

// excludedPorts are the source ports whose replies prove a service, not
// the cloud: DNS, DNS over TLS, NTP, DHCP.
var excludedPorts = []uint32{53, 853, 123, 67, 68}

// ipFilter is the part of filter that looks at the IPv4 packet only (the
// part x/net/bpf's VM can run in tests): an IPv4 TCP segment, not a
// non-first fragment, from outside prefix, from none of excludedPorts,
// with ACK and without SYN or RST.
func ipFilter(prefix netip.Prefix) []bpf.Instruction {
	a := prefix.Addr().As4()
	net := binary.BigEndian.Uint32(a[:])
	mask := uint32(0)
	if prefix.Bits() > 0 {
		mask = ^uint32(0) << (32 - prefix.Bits())
	}
	const (
		drop   = 200 // jump targets, resolved below
		accept = 201
	)
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x40, SkipTrue: drop},
		bpf.LoadAbsolute{Off: 12, Size: 4}, // source address
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: net & mask, SkipTrue: drop},
		bpf.LoadAbsolute{Off: 6, Size: 2}, // fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: drop},
		bpf.LoadAbsolute{Off: 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_TCP, SkipTrue: drop},
		bpf.LoadMemShift{Off: 0},          // X = IPv4 header length
		bpf.LoadIndirect{Off: 0, Size: 2}, // source port
	}
	for _, p := range excludedPorts {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: p, SkipTrue: drop})
	}
	prog = append(prog,
		bpf.LoadIndirect{Off: 13, Size: 1},                                  // flags
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x02 | 0x04, SkipTrue: drop}, // SYN, RST
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x10, SkipTrue: accept, SkipFalse: drop},
		bpf.RetConstant{Val: 0},
		bpf.RetConstant{Val: snapLen},
	)
	dropAt, acceptAt := len(prog)-2, len(prog)-1
	for i, ins := range prog {
		j, ok := ins.(bpf.JumpIf)
		if !ok {
			continue
		}
		fix := func(skip uint8) uint8 {
			switch skip {
			case drop:
				return uint8(dropAt - i - 1)
			case accept:
				return uint8(acceptAt - i - 1)
			}
			return skip
		}
		j.SkipTrue, j.SkipFalse = fix(j.SkipTrue), fix(j.SkipFalse)
		prog[i] = j
	}
	return prog
}

// packetTuple reads the tuple of a packet the filter accepted.
func packetTuple(b []byte) (tuple, bool) {
	if len(b) < 20 {
		return tuple{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl+4 {
		return tuple{}, false
	}
	return tuple{
		src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])),
		srcPort: binary.BigEndian.Uint16(b[ihl:]), dstPort: binary.BigEndian.Uint16(b[ihl+2:]),
	}, true
}

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

// Start opens the capture on cfg.Device and starts its goroutine.
func Start(cfg Config) (*Capture, error) {
	if !cfg.Prefix.Addr().Is4() {
		return nil, fmt.Errorf("capture on %s: prefix %v is not IPv4", cfg.Device, cfg.Prefix)
	}
	if cfg.OnAlive == nil {
		return nil, errors.New("capture: OnAlive not set")
	}
	if cfg.Period <= 0 {
		cfg.Period = 250 * time.Millisecond
	}
	accept, err := assemble(filter(cfg.Prefix))
	if err != nil {
		return nil, err
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	ct, err := openCT(cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", cfg.Device, err)
	}
	c := &Capture{cfg: cfg, ct: ct, accept: accept, seen: map[tuple]look{}, stop: make(chan struct{}), done: make(chan struct{})}
	if err := c.open(); err != nil {
		ct.Close()
		return nil, err
	}
	go c.run()
	return c, nil
}

func (c *Capture) open() error {
	f, err := openPacket(c.cfg.Namespace, c.cfg.Device, unix.ETH_P_IP, "capture", c.accept)
	c.f = f
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

func (c *Capture) run() {
	defer close(c.done)
	var b [snapLen]byte
	for {
		// Blocks in the runtime's poller until a wanted packet is queued
		// or Close closes the file.
		n, err := c.f.Read(b[:])
		if err == nil {
			c.samples.Add(1)
			if p, ok := packetTuple(b[:n]); ok {
				if since, ok := c.confirm(p, time.Now()); ok {
					c.confirmed.Add(1)
					c.cfg.OnAlive(since, time.Now())
				}
			}
		} else if errors.Is(err, os.ErrClosed) {
			return
		}
		// A packet still queued after the pause is at most a period old:
		// the conntrack counters, not the packet's age, say what is new.
		select {
		case <-c.stop:
			return
		case <-time.After(c.cfg.Period):
		}
	}
}

// confirm asks conntrack about the connection of packet p and says
// whether replies on it were accepted since the last look (and since
// when).
func (c *Capture) confirm(p tuple, now time.Time) (since time.Time, ok bool) {
	e, err := c.ct.get(p)
	if err != nil {
		return time.Time{}, false // no entry (noise) or no answer: nothing proven
	}
	if good, why := verdict(e, p); !good {
		if why == "conntrack accounting is off" && !c.noAcct {
			c.noAcct = true
			c.cfg.Logf("capture on %s: conntrack accounting is off (net.netfilter.nf_conntrack_acct=0): replies cannot be confirmed, probes alone judge the uplink", c.cfg.Device)
		}
		return time.Time{}, false
	}
	if c.beLiberal(now) {
		return time.Time{}, false
	}
	prev, seen := c.seen[p]
	if !seen && len(c.seen) >= maxSeen {
		c.forgetOldest()
	}
	c.seen[p] = look{id: e.id, packets: e.replyPackets, at: now}
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
func (c *Capture) beLiberal(now time.Time) bool {
	if !c.liberalAt.IsZero() && now.Sub(c.liberalAt) < 5*time.Second {
		return c.liberal
	}
	c.liberalAt = now
	var b []byte
	err := inns.Do(c.cfg.Namespace, func() (err error) {
		b, err = os.ReadFile(liberalSysctl)
		return err
	})
	on := err == nil && len(b) > 0 && b[0] != '0'
	if on && !c.liberal {
		c.cfg.Logf("capture on %s: net.netfilter.nf_conntrack_tcp_be_liberal is on: conntrack checks no TCP window, replies cannot be confirmed, probes alone judge the uplink", c.cfg.Device)
	}
	c.liberal = on
	return on
}

func (c *Capture) forgetOldest() {
	var oldest tuple
	var at time.Time
	for t, l := range c.seen {
		if at.IsZero() || l.at.Before(at) {
			oldest, at = t, l.at
		}
	}
	delete(c.seen, oldest)
}

// Samples returns how many packets the capture has taken (each at least a
// period apart).
func (c *Capture) Samples() uint64 { return c.samples.Load() }

// Confirmed returns how many samples conntrack confirmed (reports made).
func (c *Capture) Confirmed() uint64 { return c.confirmed.Load() }

// Close stops the capture and waits for its goroutine.
func (c *Capture) Close() {
	c.once.Do(func() {
		close(c.stop)
		c.f.Close()
		<-c.done
		c.ct.Close()
	})
}
