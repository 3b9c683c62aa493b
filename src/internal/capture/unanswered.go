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
	"github.com/afero/af-conn/internal/uplink"
)

// This file is the other half of passive evidence: the hub's own traffic
// that goes unanswered. A watcher samples TCP segments the hub sends
// through the uplink that call for an answer (data, SYN or FIN) to an
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
	// Prefix is the uplink's own address and subnet: traffic to inside
	// it (the gateway, neighbours) says nothing about the upstream.
	Prefix netip.Prefix
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
	f          *os.File
	ct         *ctConn
	samples    atomic.Uint64
	unanswered atomic.Uint64
	stop       chan struct{}
	done       chan struct{}
	once       sync.Once
}

// sentFilter is the kernel program: accept (the headers of) an IPv4
// packet this host sends (PACKET_OUTGOING) that sentIPFilter wants.
func sentFilter(prefix netip.Prefix) []bpf.Instruction {
	return append([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipFalse: 3},
		bpf.LoadExtension{Num: bpf.ExtProto},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.ETH_P_IP, SkipFalse: 1},
		bpf.Jump{Skip: 1},
		bpf.RetConstant{Val: 0},
	}, sentIPFilter(prefix)...)
}

// sentIPFilter accepts an IPv4 TCP segment, not a non-first fragment, to
// outside prefix, to none of excludedPorts, without RST, that carries a
// SYN, a FIN or data: a segment the far end must answer.
func sentIPFilter(prefix netip.Prefix) []bpf.Instruction {
	a := prefix.Addr().As4()
	net := binary.BigEndian.Uint32(a[:])
	mask := uint32(0)
	if prefix.Bits() > 0 {
		mask = ^uint32(0) << (32 - prefix.Bits())
	}
	// Jumps are written to labels and resolved below.
	type label int
	const (
		drop label = iota + 1
		accept
	)
	type jump struct {
		cond    bpf.JumpTest
		val     uint32
		ifTrue  label
		ifFalse label
	}
	steps := []any{
		bpf.LoadAbsolute{Off: 0, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		jump{bpf.JumpNotEqual, 0x40, drop, 0},
		bpf.LoadAbsolute{Off: 16, Size: 4}, // destination address
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: mask},
		jump{bpf.JumpEqual, net & mask, drop, 0},
		bpf.LoadAbsolute{Off: 6, Size: 2},
		jump{bpf.JumpBitsSet, 0x1fff, drop, 0},
		bpf.LoadAbsolute{Off: 9, Size: 1},
		jump{bpf.JumpNotEqual, unix.IPPROTO_TCP, drop, 0},
		bpf.LoadMemShift{Off: 0},          // X = IPv4 header length
		bpf.LoadIndirect{Off: 2, Size: 2}, // destination port
	}
	for _, p := range excludedPorts {
		steps = append(steps, jump{bpf.JumpEqual, p, drop, 0})
	}
	steps = append(steps,
		bpf.LoadIndirect{Off: 13, Size: 1}, // flags
		jump{bpf.JumpBitsSet, 0x04, drop, 0},
		jump{bpf.JumpBitsSet, 0x01 | 0x02, accept, 0},
		// Payload: total length - IPv4 header - TCP header.
		bpf.LoadIndirect{Off: 12, Size: 1},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0x3c},
		bpf.StoreScratch{Src: bpf.RegA, N: 0},
		bpf.LoadAbsolute{Off: 2, Size: 2},
		bpf.ALUOpX{Op: bpf.ALUOpSub},
		bpf.LoadScratch{Dst: bpf.RegX, N: 0},
		bpf.ALUOpX{Op: bpf.ALUOpSub},
		jump{bpf.JumpGreaterThan, 0, accept, drop},
	)
	end := len(steps)
	at := map[label]int{drop: end, accept: end + 1}
	prog := make([]bpf.Instruction, 0, end+2)
	for i, s := range steps {
		j, ok := s.(jump)
		if !ok {
			prog = append(prog, s.(bpf.Instruction))
			continue
		}
		skip := func(l label) uint8 {
			if l == 0 {
				return 0
			}
			return uint8(at[l] - i - 1)
		}
		prog = append(prog, bpf.JumpIf{Cond: j.cond, Val: j.val, SkipTrue: skip(j.ifTrue), SkipFalse: skip(j.ifFalse)})
	}
	return append(prog, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: snapLen4})
}

// WatchSent opens a watcher on cfg.Device and starts its goroutine.
func WatchSent(cfg SentConfig) (*Sent, error) {
	if !cfg.Prefix.Addr().Is4() {
		return nil, fmt.Errorf("sent-traffic watch on %s: prefix %v is not IPv4", cfg.Device, cfg.Prefix)
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
	prog, err := assemble(sentFilter(cfg.Prefix))
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
	s := &Sent{cfg: cfg, f: f, ct: ct, stop: make(chan struct{}), done: make(chan struct{})}
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
	var b [snapLen4]byte
	for {
		n, err := s.f.Read(b[:])
		if errors.Is(err, os.ErrClosed) {
			return
		}
		if err == nil {
			s.samples.Add(1)
			if p, ok := packetTuple(uplink.IPv4, b[:n]); ok && !s.check(p, time.Now()) {
				return
			}
		}
		if !s.pause(s.cfg.Period) {
			return
		}
		s.drain()
	}
}

// check follows one sent segment p: it returns false when stopped.
func (s *Sent) check(p tuple, sent time.Time) bool {
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
	var b [snapLen4]byte
	rc.Read(func(fd uintptr) bool {
		for {
			if _, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_DONTWAIT); err != nil {
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
