// Package capture owns passive liveness: it watches an uplink's received
// packets and reports when unicast traffic from beyond the uplink's own
// subnet arrives, which proves the upstream alive without a probe. It uses
// an AF_PACKET socket with a classic BPF filter, in pure Go, and costs next
// to nothing on a busy link: the kernel filter drops everything not wanted
// and copies at most one byte of a wanted packet, and after each sample
// the socket's filter is swapped for one that drops everything until the
// next sample is due, so a link at 50,000 packets/s wakes the daemon only
// a few times a second.
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
)

// Config says what to watch.
type Config struct {
	Device string
	// Prefix is the uplink's own address and subnet: traffic from inside
	// it (the gateway, neighbours) proves nothing about the upstream.
	Prefix netip.Prefix
	// Period is the least time between two reports (default 250 ms).
	Period time.Duration
	// OnAlive is called, from the capture's goroutine, at most once per
	// Period while such traffic arrives.
	OnAlive func(at time.Time)
	// Namespace, if open, is the network namespace of the device (tests).
	Namespace netns.NsHandle
}

// Capture is one running capture; Close stops it.
type Capture struct {
	cfg     Config
	f       *os.File
	accept  []unix.SockFilter
	samples atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once
}

var dropAll = []bpf.Instruction{bpf.RetConstant{Val: 0}}

// filter is the kernel program: accept (one byte) an IPv4 packet addressed
// to this host (not broadcast, multicast or outgoing), not a non-first
// fragment, from outside prefix, that is TCP carrying payload (a SYN-ACK
// or RST can come from a captive portal or prove nothing), UDP, or an ICMP
// echo reply (ICMP errors report failures, not life). The packet socket is
// SOCK_DGRAM, so offset 0 is the IPv4 header on every link type.
func filter(prefix netip.Prefix) []bpf.Instruction {
	return append([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_HOST, SkipFalse: 1},
		bpf.Jump{Skip: 1},
		bpf.RetConstant{Val: 0},
	}, ipFilter(prefix)...)
}

// ipFilter is the part of filter that looks at the IPv4 packet only (the
// part x/net/bpf's VM can run in tests).
func ipFilter(prefix netip.Prefix) []bpf.Instruction {
	a := prefix.Addr().As4()
	net := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	mask := uint32(0)
	if prefix.Bits() > 0 {
		mask = ^uint32(0) << (32 - prefix.Bits())
	}
	const (
		drop   = 100 // jump targets, resolved below
		accept = 101
		icmp   = 102
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
		bpf.LoadMemShift{Off: 0}, // X = IPv4 header length
		bpf.LoadAbsolute{Off: 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_UDP, SkipTrue: accept},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.IPPROTO_ICMP, SkipTrue: icmp},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_TCP, SkipTrue: drop},
		// TCP payload = total length - IP header - TCP header.
		bpf.LoadAbsolute{Off: 2, Size: 2},
		bpf.ALUOpX{Op: bpf.ALUOpSub},
		bpf.StoreScratch{Src: bpf.RegA, N: 0},
		bpf.LoadIndirect{Off: 12, Size: 1}, // data offset
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: 0xf0},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 2},
		bpf.TAX{},
		bpf.LoadScratch{Dst: bpf.RegA, N: 0},
		bpf.ALUOpX{Op: bpf.ALUOpSub},
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: 0, SkipTrue: accept, SkipFalse: drop},
		// ICMP: only echo replies.
		bpf.LoadIndirect{Off: 0, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: 0, SkipTrue: accept, SkipFalse: drop},
	}
	icmpAt := len(prog) - 2 // the ICMP part is the last two instructions
	prog = append(prog, bpf.RetConstant{Val: 0}, bpf.RetConstant{Val: 1})
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
			case icmp:
				return uint8(icmpAt - i - 1)
			}
			return skip
		}
		j.SkipTrue, j.SkipFalse = fix(j.SkipTrue), fix(j.SkipFalse)
		prog[i] = j
	}
	return prog
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
	c := &Capture{cfg: cfg, accept: accept, stop: make(chan struct{}), done: make(chan struct{})}
	if err := c.open(); err != nil {
		return nil, err
	}
	go c.run()
	return c, nil
}

func (c *Capture) open() error {
	var fd int
	mk := func() (err error) {
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_IP)))
		return err
	}
	if err := inns.Do(c.cfg.Namespace, mk); err != nil {
		return fmt.Errorf("capture on %s: packet socket: %w", c.cfg.Device, err)
	}
	fail := func(what string, err error) error {
		unix.Close(fd)
		return fmt.Errorf("capture on %s: %s: %w", c.cfg.Device, what, err)
	}
	drop, _ := assemble(dropAll)
	// Drop everything before binding, so nothing unfiltered is queued.
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(drop)), Filter: &drop[0]}); err != nil {
		return fail("attach filter", err)
	}
	// A small buffer: we only ever need one queued packet.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4096)
	var idx int
	err := inns.Do(c.cfg.Namespace, func() error {
		i, err := interfaceIndex(c.cfg.Device)
		idx = i
		return err
	})
	if err != nil {
		return fail("find device", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: idx}); err != nil {
		return fail("bind", err)
	}
	c.f = os.NewFile(uintptr(fd), "packet:"+c.cfg.Device)
	return c.attach(c.accept)
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

// attach swaps the socket's filter.
func (c *Capture) attach(prog []unix.SockFilter) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("capture on %s: attach filter: %w", c.cfg.Device, serr)
	}
	return nil
}

// drain discards what was queued before the drop-all filter went on.
func (c *Capture) drain() {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return
	}
	var b [1]byte
	rc.Control(func(fd uintptr) {
		for range 64 {
			if _, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_DONTWAIT); err != nil {
				return
			}
		}
	})
}

func (c *Capture) run() {
	defer close(c.done)
	drop, _ := assemble(dropAll)
	var b [1]byte
	for {
		// Blocks in the runtime's poller until a wanted packet arrives
		// or Close closes the file.
		if _, err := c.f.Read(b[:]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			select {
			case <-c.stop:
				return
			case <-time.After(c.cfg.Period): // device gone or similar: retry calmly
			}
			continue
		}
		c.samples.Add(1)
		c.cfg.OnAlive(time.Now())
		if c.attach(drop) != nil {
			return
		}
		c.drain()
		select {
		case <-c.stop:
			return
		case <-time.After(c.cfg.Period):
		}
		if c.attach(c.accept) != nil {
			return
		}
	}
}

// Samples returns how many packets the capture has taken (each at least a
// period apart).
func (c *Capture) Samples() uint64 { return c.samples.Load() }

// Close stops the capture and waits for its goroutine.
func (c *Capture) Close() {
	c.once.Do(func() {
		close(c.stop)
		c.f.Close()
		<-c.done
	})
}
