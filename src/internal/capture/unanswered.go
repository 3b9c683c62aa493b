package capture

import (
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
	"github.com/afero/af-conn/internal/uplink"
)

// This file is the other half of passive evidence: the hub's own traffic
// that goes unanswered. A watcher (one per family: IPv4, or IPv6 with
// the same extension-header walk as the capture) samples TCP segments the
// hub sends through the uplink that call for an answer (data, SYN or FIN) to an
// address beyond the uplink's subnet, notes the reply-direction packet
// counter of the segment's conntrack entry, and looks again a bound
// later: a counter that did not grow means the far end answered nothing
// in the TCP window conntrack tracks (no ACK, no data, no reset) while
// the hub was waiting, which is exactly what a silently dead upstream
// does to a keepalive or a retransmission. The failover controller then
// probes at once instead of at the idle rhythm. Only connections opened
// from this side count (the hub's or a LAN client's it masquerades),
// never DNS, NTP or DHCP, and nothing while conntrack accounting is off.
// Like the capture, it takes one segment, then none for a while (a full
// one-packet buffer makes the kernel drop the rest), so a busy upload
// costs two conntrack questions per sample.

// SentConfig says what to watch.
type SentConfig struct {
	Device string
	// Prefixes are the uplink's own addresses with their subnets, all of
	// one family, the one watched (at most 8): traffic to inside them
	// (the gateway, neighbours) says nothing about the upstream, nor does
	// IPv6 traffic to a link-local address.
	Prefixes []netip.Prefix
	// Bound is how long the far end may take to answer (default 500 ms).
	Bound time.Duration
	// Period is the least time between two samples (default 250 ms).
	Period time.Duration
	// OnUnanswered is called, from the watcher's goroutine, when a segment
	// sent at sent got no reply by at (at least Bound later).
	OnUnanswered func(sent, at time.Time)
	// Namespace, if open, is the network namespace of the device (tests).
	Namespace netns.NsHandle
}

// Sent is one running watcher; Close stops it.
type Sent struct {
	cfg        SentConfig
	family     uplink.Family
	f          *os.File
	ct         *ctConn
	samples    atomic.Uint64
	unanswered atomic.Uint64
	// reported holds the segments (sent-direction tuple and sequence number) reported
	// unanswered within the last RepeatQuiet: their retransmissions are no new evidence.
	// Only the run goroutine touches it.
	reported map[segment]time.Time
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// sentFilter is the kernel program of family f: accept (the headers of)
// a packet of the family this host sends (PACKET_OUTGOING) that
// sentIPFilter wants.
func sentFilter(f uplink.Family, own []netip.Prefix) ([]bpf.Instruction, error) {
	ip, err := sentIPFilter(f, own)
	if err != nil {
		return nil, err
	}
	return append([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipFalse: 3},
		bpf.LoadExtension{Num: bpf.ExtProto},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(ethType[f]), SkipFalse: 1},
		bpf.Jump{Skip: 1},
		bpf.RetConstant{Val: 0},
	}, ip...), nil
}

// sentIPFilter accepts a TCP segment of family f, not a non-first
// fragment, to outside the own prefixes (and, for IPv6, not to a
// link-local address), to none of excludedPorts, without RST, that
// carries a SYN, a FIN or data: a segment the far end must answer.
func sentIPFilter(f uplink.Family, own []netip.Prefix) ([]bpf.Instruction, error) {
	var a asm
	if err := a.ipHeader(f, own, true); err != nil {
		return nil, err
	}
	// The TCP header is at X.
	a.add(bpf.LoadIndirect{Off: 2, Size: 2}) // destination port
	for _, p := range excludedPorts {
		a.jumpIf(bpf.JumpEqual, p, "drop", "")
	}
	a.add(bpf.LoadIndirect{Off: 13, Size: 1}) // flags
	a.jumpIf(bpf.JumpBitsSet, 0x04, "drop", "")
	a.jumpIf(bpf.JumpBitsSet, 0x01|0x02, "accept", "")
	// Data: the packet's end lies beyond the TCP header's.
	a.add(
		bpf.LoadIndirect{Off: 12, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x3c},
		bpf.ALUOpX{Op: bpf.ALUOpAdd}, // A = the data's offset
		bpf.StoreScratch{Src: bpf.RegA, N: 1},
	)
	if f == uplink.IPv6 {
		a.add(bpf.LoadAbsolute{Off: 4, Size: 2}, bpf.ALUOpConstant{Op: bpf.ALUOpAdd, Val: 40}) // payload length + header
	} else {
		a.add(bpf.LoadAbsolute{Off: 2, Size: 2}) // total length
	}
	a.add(bpf.LoadScratch{Dst: bpf.RegX, N: 1})
	a.jumpIfX(bpf.JumpGreaterThan, "accept", "drop")
	a.label("drop")
	a.add(bpf.RetConstant{Val: 0})
	a.label("accept")
	a.add(bpf.RetConstant{Val: uint32(snapLen(f))})
	return a.program()
}

// WatchSent opens a watcher on cfg.Device and starts its goroutine.
func WatchSent(cfg SentConfig) (*Sent, error) {
	if len(cfg.Prefixes) == 0 || !cfg.Prefixes[0].IsValid() {
		return nil, fmt.Errorf("sent-traffic watch on %s: no prefix of the uplink's own", cfg.Device)
	}
	fam := uplink.FamilyOf(cfg.Prefixes[0].Addr())
	for _, p := range cfg.Prefixes {
		if !p.IsValid() || uplink.FamilyOf(p.Addr()) != fam {
			return nil, fmt.Errorf("sent-traffic watch on %s: prefixes %v are not all of one family", cfg.Device, cfg.Prefixes)
		}
	}
	if cfg.OnUnanswered == nil {
		return nil, errors.New("sent-traffic watch: OnUnanswered not set")
	}
	if cfg.Bound <= 0 {
		cfg.Bound = 500 * time.Millisecond
	}
	if cfg.Period <= 0 {
		cfg.Period = 250 * time.Millisecond
	}
	ins, err := sentFilter(fam, cfg.Prefixes)
	if err != nil {
		return nil, fmt.Errorf("sent-traffic watch on %s: %w", cfg.Device, err)
	}
	prog, err := assemble(ins)
	if err != nil {
		return nil, err
	}
	ct, err := openCT(cfg.Namespace)
	if err != nil {
		return nil, fmt.Errorf("sent-traffic watch on %s: %w", cfg.Device, err)
	}
	f, err := openPacket(cfg.Namespace, cfg.Device, unix.ETH_P_ALL, "sent-traffic watch", prog)
	if err != nil {
		ct.Close()
		return nil, err
	}
	s := &Sent{cfg: cfg, family: fam, f: f, ct: ct, reported: map[segment]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go s.run()
	return s, nil
}

// openPacket opens a packet socket (SOCK_DGRAM: offset 0 is the network
// header) on device for protocol proto (ETH_P_ALL: sent packets too), with
// program prog, attached before the socket is bound so nothing unfiltered
// is ever queued, and a small buffer: one queued packet is all a sampler
// needs.
func openPacket(ns netns.NsHandle, device string, proto uint16, what string, prog []unix.SockFilter) (*os.File, error) {
	var fd int
	err := inns.Do(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s on %s: packet socket: %w", what, device, err)
	}
	fail := func(step string, err error) (*os.File, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("%s on %s: %s: %w", what, device, step, err)
	}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
		return fail("attach filter", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	var idx int
	err = inns.Do(ns, func() error {
		i, err := interfaceIndex(device)
		idx = i
		return err
	})
	if err != nil {
		return fail("find device", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: idx}); err != nil {
		return fail("bind", err)
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("packet:%s:%#x", device, proto)), nil
}

func (s *Sent) run() {
	defer close(s.done)
	b := make([]byte, snapLen(s.family))
	for {
		n, err := s.f.Read(b)
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err == nil {
			s.samples.Add(1)
			if p, off, ok := packetTCP(s.family, b[:n]); ok {
				seq, _ := tcpSeq(b[:n], off)
				if !s.check(segment{p, seq}, time.Now()) {
					return
				}
			}
		}
		if !s.pause(s.cfg.Period) {
			return
		}
		s.drain()
	}
}

// segment is one sent TCP segment: its connection and sequence number (a
// retransmission has the same, a new keepalive or SYN another).
type segment struct {
	t   tuple
	seq uint32
}

// RepeatQuiet is how long a segment reported unanswered is not reported
// again. The kernel retransmits an unanswered SYN after 1, 3, 7, 15, 31 and
// 63 s (and data on a similar rhythm): each retransmission would otherwise
// start a round of its own, a failed connect to a dead host four or more. A
// round that fails goes on by itself (fail_count rounds), so a dead
// upstream loses nothing; new segments (the next keepalive) are reported.
const RepeatQuiet = 2 * time.Minute

// repeated tells whether p was reported within RepeatQuiet of at,
// forgetting what is older.
func (s *Sent) repeated(p segment, at time.Time) bool {
	if last, ok := s.reported[p]; ok && at.Sub(last) < RepeatQuiet {
		return true
	}
	if len(s.reported) >= 64 {
		for k, t := range s.reported {
			if at.Sub(t) >= RepeatQuiet {
				delete(s.reported, k)
			}
		}
	}
	return false
}

// check follows one sent segment p: it returns false when stopped.
func (s *Sent) check(seg segment, sent time.Time) bool {
	if s.repeated(seg, sent) {
		return true
	}
	p := seg.t
	// The answer's tuple: the reply direction of a connection opened
	// from this side (masqueraded ones included).
	r := tuple{src: p.dst, dst: p.src, srcPort: p.dstPort, dstPort: p.srcPort}
	e, err := s.ct.get(r)
	if err != nil || e.reply != r || e.orig.dst != r.src || !e.hasCounters || e.status&ipsDying != 0 {
		return true // untracked, opened by the far end, or no accounting: nothing to judge
	}
	if !s.pause(s.cfg.Bound) {
		return false
	}
	later, err := s.ct.get(r)
	if err != nil || later.id != e.id {
		return true // gone (closed, reset, flushed): nothing to judge
	}
	if later.replyPackets == e.replyPackets {
		if len(s.reported) < 1024 { // bounded: a flood of new connections forgets nothing it needs
			s.reported[seg] = sent
		}
		s.unanswered.Add(1)
		s.cfg.OnUnanswered(sent, time.Now())
	}
	return true
}

// pause waits d; false when stopped.
func (s *Sent) pause(d time.Duration) bool {
	select {
	case <-s.stop:
		return false
	case <-time.After(d):
		return true
	}
}

// drain discards segments queued while a sample was followed: their
// counters would be read late, after their answer may have come.
func (s *Sent) drain() {
	rc, err := s.f.SyscallConn()
	if err != nil {
		return
	}
	b := make([]byte, snapLen(s.family))
	rc.Read(func(fd uintptr) bool {
		for {
			if _, _, err := unix.Recvfrom(int(fd), b, unix.MSG_DONTWAIT); err != nil {
				return true
			}
		}
	})
}

// Samples returns how many sent segments the watcher has taken.
func (s *Sent) Samples() uint64 { return s.samples.Load() }

// Unanswered returns how many of them went unanswered.
func (s *Sent) Unanswered() uint64 { return s.unanswered.Load() }

// Close stops the watcher and waits for its goroutine.
func (s *Sent) Close() {
	s.once.Do(func() {
		close(s.stop)
		s.f.Close()
		<-s.done
		s.ct.Close()
	})
}
