// Package dnscap captures DNS packets (UDP and TCP port 53, IPv4 and IPv6)
// in-process with an AF_PACKET socket and a classic BPF filter, pure Go: the
// queries this host sends out of its uplinks (to build the anti-forgery
// table) and, in capture-only mode, the replies that come back. Frames start
// at the network header whatever the link type (SOCK_DGRAM), so Ethernet,
// Wi-Fi and raw-IP cellular devices look the same.
package dnscap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Direction of a captured frame.
type Direction uint8

const (
	Incoming Direction = iota // addressed to this host (PACKET_HOST)
	Outgoing                  // sent by this host (PACKET_OUTGOING)
)

func (d Direction) String() string {
	if d == Outgoing {
		return "out"
	}
	return "in"
}

// Frame is one captured packet. Data starts at the IP header and is only
// valid during the handler call.
type Frame struct {
	Ifindex int
	Dir     Direction
	Data    []byte
	// ChecksumTrusted: the kernel vouches for the transport checksum (the device checked
	// it, or the packet was made on this host or a virtual link and carries none yet).
	// Otherwise it is unchecked: the stack checks it only after capture, and drops the
	// packet if it is wrong.
	ChecksumTrusted bool
}

// Config says what to capture.
type Config struct {
	// Ifindexes restricts capture to these interfaces; empty means all.
	Ifindexes []int
	Incoming  bool // capture replies and queries arriving at this host
	Outgoing  bool // capture what this host sends
	// RcvBuf is the socket buffer; 0: 1 MiB.
	RcvBuf int
	// Mark, when not 0, selects by the packet's netfilter mark: with Marked only packets
	// carrying one of Mark's bits, else only those carrying none. The firewall marks the
	// host's own DNS queries, so that a socket of their own takes them, which a flood of
	// forwarded LAN queries cannot crowd out.
	Mark   uint32
	Marked bool
}

// Socket is one capturing AF_PACKET socket. The handler runs with the
// socket's lock held, so when Drain returns every frame the kernel had
// queued has been handled.
type Socket struct {
	mu      sync.Mutex
	handler func(Frame)
	file    *os.File
	rc      syscall.RawConn
	buf     []byte
	oob     []byte
	closed  atomic.Bool
	frames  atomic.Uint64
	drops   atomic.Uint64 // frames the kernel dropped (PACKET_STATISTICS)
	filterB []bpf.RawInstruction
}

// ErrClosed is returned by Run after Close.
var ErrClosed = errors.New("dns capture closed")

// htons for the protocol argument of socket(2) and bind(2).
func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Open makes the socket and attaches the filter before binding, so no
// unfiltered frame is ever queued. handler gets every frame.
func Open(c Config, handler func(Frame)) (*Socket, error) {
	if !c.Incoming && !c.Outgoing {
		return nil, errors.New("dns capture: neither incoming nor outgoing")
	}
	prog, err := Filter(c)
	if err != nil {
		return nil, err
	}
	// Protocol 0: nothing is queued until bind names ETH_P_ALL below, by
	// which time the filter is attached.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("dns capture: packet socket: %w", err)
	}
	s := &Socket{handler: handler, buf: make([]byte, 0x10000), oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.TpacketAuxdata{})))), filterB: prog}
	if err := attach(fd, prog); err != nil {
		unix.Close(fd)
		return nil, err
	}
	// The aux data says whether the kernel vouches for a frame's checksum.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dns capture: PACKET_AUXDATA: %w", err)
	}
	rcvbuf := c.RcvBuf
	if rcvbuf <= 0 {
		rcvbuf = 1 << 20
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("dns capture: bind: %w", err)
	}
	s.file = os.NewFile(uintptr(fd), "dnscap")
	if s.rc, err = s.file.SyscallConn(); err != nil {
		s.file.Close()
		return nil, fmt.Errorf("dns capture: %w", err)
	}
	return s, nil
}

func attach(fd int, prog []bpf.RawInstruction) error {
	f := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		f[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(f)), Filter: &f[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("dns capture: attach filter: %w", err)
	}
	return nil
}

// SetInterfaces replaces the interface restriction (uplinks come and go).
func (s *Socket) SetInterfaces(c Config) error {
	prog, err := Filter(c)
	if err != nil {
		return err
	}
	var aerr error
	if err := s.rc.Control(func(fd uintptr) { aerr = attach(int(fd), prog) }); err != nil {
		return fmt.Errorf("dns capture: %w", err)
	}
	return aerr
}

// Run handles frames until Close.
func (s *Socket) Run() error {
	var rerr error
	err := s.rc.Read(func(fd uintptr) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		rerr = s.drain(int(fd))
		return rerr != unix.EAGAIN // EAGAIN: wait for more
	})
	if s.closed.Load() {
		return ErrClosed
	}
	if err != nil {
		return fmt.Errorf("dns capture: %w", err)
	}
	return fmt.Errorf("dns capture: recv: %w", rerr)
}

// Drain handles, now and in the caller's goroutine, every frame the kernel
// has queued; frames another goroutine is handling are finished first.
func (s *Socket) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	_ = s.rc.Control(func(fd uintptr) { _ = s.drain(int(fd)) })
}

// drain reads until the queue is empty; it returns EAGAIN then, or the
// error that stopped it. nil is never returned.
func (s *Socket) drain(fd int) error {
	for {
		n, oobn, _, from, err := unix.Recvmsg(fd, s.buf, s.oob, unix.MSG_TRUNC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err == unix.EAGAIN && s.closed.Load() {
				return unix.EBADF
			}
			return err
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok {
			continue
		}
		dir := Incoming
		if ll.Pkttype == unix.PACKET_OUTGOING {
			dir = Outgoing
		}
		s.frames.Add(1)
		s.handler(Frame{Ifindex: ll.Ifindex, Dir: dir, Data: s.buf[:min(n, len(s.buf))], ChecksumTrusted: checksumTrusted(s.oob[:oobn])})
	}
}

// Frames is how many frames were handled.
func (s *Socket) Frames() uint64 { return s.frames.Load() }

// KernelDrops reads and resets the kernel's drop counter for this socket
// (frames lost because the socket buffer was full).
func (s *Socket) KernelDrops() uint64 {
	_ = s.rc.Control(func(fd uintptr) {
		if st, err := unix.GetsockoptTpacketStats(int(fd), unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
			s.drops.Add(uint64(st.Drops))
		}
	})
	return s.drops.Load()
}

// Close stops Run.
func (s *Socket) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.file.Close()
}

// Filter is the classic BPF program of c: IPv4 (not a later fragment) or
// IPv6 (no extension headers), UDP or TCP, source or destination port 53,
// on the wanted interfaces and directions, with or without the mark. It runs on SOCK_DGRAM frames,
// which start at the network header.
func Filter(c Config) ([]bpf.RawInstruction, error) {
	var a asm
	// Direction: PACKET_HOST or PACKET_OUTGOING as asked; broadcast,
	// multicast and other hosts' frames are dropped.
	a.op(bpf.LoadExtension{Num: bpf.ExtType})
	switch {
	case c.Incoming && c.Outgoing:
		a.jeq(unix.PACKET_HOST, "iface", "")
		a.jeq(unix.PACKET_OUTGOING, "iface", "drop")
	case c.Incoming:
		a.jeq(unix.PACKET_HOST, "iface", "drop")
	default:
		a.jeq(unix.PACKET_OUTGOING, "iface", "drop")
	}
	a.label("iface")
	if c.Mark != 0 {
		a.op(bpf.LoadExtension{Num: bpf.ExtMark})
		if c.Marked {
			a.jset(c.Mark, "ifaces", "drop")
		} else {
			a.jset(c.Mark, "drop", "ifaces")
		}
	}
	a.label("ifaces")
	if len(c.Ifindexes) > 0 {
		if len(c.Ifindexes) > 64 {
			return nil, fmt.Errorf("dns capture: %d interfaces, at most 64", len(c.Ifindexes))
		}
		a.op(bpf.LoadExtension{Num: bpf.ExtInterfaceIndex})
		for i, idx := range c.Ifindexes {
			miss := ""
			if i == len(c.Ifindexes)-1 {
				miss = "drop"
			}
			a.jeq(uint32(idx), "proto", miss)
		}
	}
	a.label("proto")
	a.op(bpf.LoadExtension{Num: bpf.ExtProto})
	a.jeq(unix.ETH_P_IPV6, "v6", "")
	a.jeq(unix.ETH_P_IP, "", "drop")
	// IPv4: UDP or TCP, fragment offset 0, ports after the IHL.
	a.op(bpf.LoadAbsolute{Off: 9, Size: 1})
	a.jeq(unix.IPPROTO_UDP, "v4frag", "")
	a.jeq(unix.IPPROTO_TCP, "", "drop")
	a.label("v4frag")
	a.op(bpf.LoadAbsolute{Off: 6, Size: 2})
	a.jset(0x1fff, "drop", "")
	a.op(bpf.LoadMemShift{Off: 0})
	a.op(bpf.LoadIndirect{Off: 0, Size: 2})
	a.jeq(53, "accept", "")
	a.op(bpf.LoadIndirect{Off: 2, Size: 2})
	a.jeq(53, "accept", "drop")
	// IPv6: next header UDP or TCP right after the fixed header.
	a.label("v6")
	a.op(bpf.LoadAbsolute{Off: 6, Size: 1})
	a.jeq(unix.IPPROTO_UDP, "v6ports", "")
	a.jeq(unix.IPPROTO_TCP, "", "drop")
	a.label("v6ports")
	a.op(bpf.LoadAbsolute{Off: 40, Size: 2})
	a.jeq(53, "accept", "")
	a.op(bpf.LoadAbsolute{Off: 42, Size: 2})
	a.jeq(53, "accept", "drop")
	a.label("accept")
	a.op(bpf.RetConstant{Val: 0xffff})
	a.label("drop")
	a.op(bpf.RetConstant{Val: 0})
	return a.assemble()
}

// asm is a tiny assembler with labels for conditional jumps; "" as a
// target means the next instruction.
type asm struct {
	ins    []bpf.Instruction
	jumps  map[int][2]string
	labels map[string]int
}

func (a *asm) op(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

func (a *asm) cond(c bpf.JumpTest, v uint32, t, f string) {
	if a.jumps == nil {
		a.jumps = map[int][2]string{}
	}
	a.jumps[len(a.ins)] = [2]string{t, f}
	a.ins = append(a.ins, bpf.JumpIf{Cond: c, Val: v})
}

func (a *asm) jeq(v uint32, t, f string)  { a.cond(bpf.JumpEqual, v, t, f) }
func (a *asm) jset(v uint32, t, f string) { a.cond(bpf.JumpBitsSet, v, t, f) }

func (a *asm) assemble() ([]bpf.RawInstruction, error) {
	skip := func(at int, l string) (uint8, error) {
		if l == "" {
			return 0, nil
		}
		to, ok := a.labels[l]
		if !ok || to <= at || to-at-1 > 255 {
			return 0, fmt.Errorf("dns capture filter: bad jump to %q from %d", l, at)
		}
		return uint8(to - at - 1), nil
	}
	for at, t := range a.jumps {
		j := a.ins[at].(bpf.JumpIf)
		var err error
		if j.SkipTrue, err = skip(at, t[0]); err != nil {
			return nil, err
		}
		if j.SkipFalse, err = skip(at, t[1]); err != nil {
			return nil, err
		}
		a.ins[at] = j
	}
	return bpf.Assemble(a.ins)
}

// checksumTrusted reads the frame's tpacket_auxdata: TP_STATUS_CSUM_VALID (the device checked
// the checksum) or TP_STATUS_CSUMNOTREADY (made here or on a virtual link, completed later).
func checksumTrusted(oob []byte) bool {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_PACKET && m.Header.Type == unix.PACKET_AUXDATA && len(m.Data) >= 4 {
			st := binary.NativeEndian.Uint32(m.Data)
			return st&(unix.TP_STATUS_CSUM_VALID|unix.TP_STATUS_CSUMNOTREADY) != 0
		}
	}
	return false
}
