package nfqueue

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config configures a queue.
type Config struct {
	Num       uint16 // queue number, as in the NFQUEUE rule
	MaxLen    uint32 // packets the kernel holds for us; 0: kernel default (1024)
	CopyRange uint32 // bytes of each packet copied to us; 0: 65535
	// FailOpen makes the kernel accept packets instead of dropping them
	// when the queue is full or our socket buffer overflows.
	FailOpen bool
	// GSO lets the kernel hand us GSO packets unsegmented.
	GSO bool
	// RcvBuf is the socket receive buffer; 0: 1 MiB.
	RcvBuf int
}

func (c Config) copyRange() uint32 {
	if c.CopyRange == 0 || c.CopyRange > 0xffff {
		return 0xffff
	}
	return c.CopyRange
}

// Stats counts events that are not packets.
type Stats struct {
	Packets       uint64 // packets received
	Overruns      uint64 // ENOBUFS: the kernel could not deliver (fail-open accepted them)
	VerdictErrors uint64 // verdicts the kernel refused (unknown id)
}

// Queue is one bound netfilter queue. Next is meant for one goroutine;
// Verdict and VerdictBatch may be called from any goroutine.
type Queue struct {
	num  uint16
	file *os.File
	rc   syscall.RawConn
	seq  atomic.Uint32

	rmu     sync.Mutex // guards the reading side below
	rbuf    []byte
	pending []item
	scratch []item
	lastID  atomic.Uint32

	packets, overruns, verdictErrs atomic.Uint64
	closed                         atomic.Bool
	closeOnce                      sync.Once
}

// ErrClosed is returned by Next after Close.
var ErrClosed = errors.New("nfqueue closed")

// Open binds queue c.Num and configures it. It fails with EPERM when
// another socket has the queue bound, or without CAP_NET_ADMIN.
func Open(c Config) (*Queue, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("nfqueue %d: netlink socket: %w", c.Num, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("nfqueue %d: bind netlink: %w", c.Num, err)
	}
	rcvbuf := c.RcvBuf
	if rcvbuf <= 0 {
		rcvbuf = 1 << 20
	}
	// FORCE passes the rmem_max limit (we are root); fall back if not.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	file := os.NewFile(uintptr(fd), fmt.Sprintf("nfqueue-%d", c.Num))
	rc, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("nfqueue %d: %w", c.Num, err)
	}
	q := &Queue{num: c.Num, file: file, rc: rc, rbuf: make([]byte, 0xffff+4096)}
	if err := q.request(configMessage(q.nextSeq(), c.Num, cmdBind, c)); err != nil {
		file.Close()
		return nil, fmt.Errorf("nfqueue %d: bind: %w", c.Num, err)
	}
	return q, nil
}

// Num is the queue number.
func (q *Queue) Num() uint16 { return q.num }

func (q *Queue) nextSeq() uint32 { return q.seq.Add(1) }

// request sends a message with NLM_F_ACK and waits for its ack; packets
// arriving meanwhile are kept for Next.
func (q *Queue) request(msg []byte) error {
	seq := native.Uint32(msg[8:])
	q.rmu.Lock()
	defer q.rmu.Unlock()
	if err := q.send(msg); err != nil {
		return err
	}
	if err := q.file.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return err
	}
	defer q.file.SetReadDeadline(time.Time{})
	for {
		items, err := q.recvItems(nil)
		if err != nil {
			return err
		}
		var ackErr error
		acked := false
		for _, it := range items {
			if it.ack && it.seq == seq {
				acked = true
				if it.errno != 0 {
					ackErr = it.errno
				}
				continue
			}
			q.keep(it)
		}
		if acked {
			return ackErr
		}
	}
}

func (q *Queue) keep(it item) {
	switch {
	case it.packet:
		// Copy: the receive buffer is reused by the next read.
		it.pkt.Payload = append([]byte(nil), it.pkt.Payload...)
		q.pending = append(q.pending, it)
	case it.ack && it.errno != 0:
		q.verdictErrs.Add(1)
	}
}

func (q *Queue) send(msg []byte) error {
	var serr error
	err := q.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

// recvItems reads one datagram and decodes it. ENOBUFS is counted and
// reading goes on.
func (q *Queue) recvItems(out []item) ([]item, error) {
	for {
		var n, flags int
		var rerr error
		err := q.rc.Read(func(fd uintptr) bool {
			n, _, flags, _, rerr = unix.Recvmsg(int(fd), q.rbuf, nil, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			if q.closed.Load() {
				return nil, ErrClosed
			}
			return nil, fmt.Errorf("nfqueue %d: %w", q.num, err)
		}
		if rerr == unix.ENOBUFS {
			q.overruns.Add(1)
			continue
		}
		if rerr != nil {
			return nil, fmt.Errorf("nfqueue %d: recv: %w", q.num, rerr)
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, fmt.Errorf("nfqueue %d: message of more than %d bytes truncated", q.num, len(q.rbuf))
		}
		return parseMessages(q.rbuf[:n], out)
	}
}

// Next returns the next queued packet. Its Payload is valid until the next
// call of Next. Every packet must get a verdict; until then the kernel
// holds it (and holds it against MaxLen).
func (q *Queue) Next() (Packet, error) {
	q.rmu.Lock()
	defer q.rmu.Unlock()
	for {
		if len(q.pending) > 0 {
			it := q.pending[0]
			q.pending = q.pending[1:]
			q.noteID(it.pkt.ID)
			return it.pkt, nil
		}
		items, err := q.recvItems(q.scratch[:0])
		if err != nil {
			return Packet{}, err
		}
		q.scratch = items
		for _, it := range items {
			if it.packet {
				q.pending = append(q.pending, it)
			} else if it.ack && it.errno != 0 {
				q.verdictErrs.Add(1)
			}
		}
	}
}

func (q *Queue) noteID(id uint32) {
	q.packets.Add(1)
	q.lastID.Store(id)
}

// Verdict gives packet id its verdict.
func (q *Queue) Verdict(id uint32, v Verdict) error {
	if err := q.send(verdictMessage(q.num, id, v, false)); err != nil {
		return fmt.Errorf("nfqueue %d: verdict for %d: %w", q.num, id, err)
	}
	return nil
}

// VerdictBatch gives every held packet with an id up to id (in the
// kernel's wrap-around order) the same verdict in one message.
func (q *Queue) VerdictBatch(id uint32, v Verdict) error {
	if err := q.send(verdictMessage(q.num, id, v, true)); err != nil {
		return fmt.Errorf("nfqueue %d: batch verdict up to %d: %w", q.num, id, err)
	}
	return nil
}

// Stats returns the counters.
func (q *Queue) Stats() Stats {
	return Stats{Packets: q.packets.Load(), Overruns: q.overruns.Load(), VerdictErrors: q.verdictErrs.Load()}
}

// Close accepts every packet still held (the kernel would drop them when
// the queue goes away), unbinds the queue and closes the socket. Next
// returns ErrClosed afterwards.
func (q *Queue) Close() error {
	var err error
	q.closeOnce.Do(func() {
		// Ids are per queue and increase by one per packet, starting at 1:
		// half the id space past the last one seen covers every packet the
		// kernel still holds.
		_ = q.VerdictBatch(q.lastID.Load()+1<<30, Accept)
		_ = q.send(configMessage(q.nextSeq(), q.num, cmdUnbind, Config{}))
		q.closed.Store(true)
		err = q.file.Close()
	})
	return err
}
