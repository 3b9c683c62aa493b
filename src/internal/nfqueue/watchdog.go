package nfqueue

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/afero/af-conn/internal/logline"
)

// Why a watchdog process, and why this one. A held packet stays in the
// kernel's queue instance until the socket bound to it gives a verdict; the
// kernel accepts packets on its own only when no socket is bound (bypass:
// the process died or unbound) or when the queue or the socket buffer is
// full (fail-open). A process that is stopped (SIGSTOP) or hung keeps its
// socket, so neither happens until 1,024 packets have piled up: DNS stops.
// Nothing inside the process can help then, so a second process does: it
// holds a duplicate of the queue's socket (the same socket, so the kernel
// takes its verdicts, which it refuses from any other socket) and gets a
// heartbeat from the Holder's releaser. When the heartbeats stop for the
// stall time it accepts, every WatchdogPoll, every packet the queue holds (one batch verdict up to
// the queue's last id, read from /proc/net/netfilter/nfnetlink_queue);
// when they come back it stands aside. It only ever writes to the socket:
// the copies of the packets stay in the socket's buffer, and the main
// process, once it runs again, reads and judges them like any other (their
// own verdicts then find nothing to release). This works the same for the
// nft queue expression and the xt NFQUEUE target, changes no firewall rule
// (so nothing has to be put back, and nothing races the firewall's own
// repair), and also frees the packets already held when the stall began,
// which switching the queue rule off could not.
//
// While the heartbeats come, the watchdog still backs the Holder's deadline
// up, from outside the daemon's scheduler (a daemon whose goroutines all
// compete with a big restore wakes its releaser late): while the heartbeats
// say packets are held, every WatchdogPoll it notes the queue's last id, and when the queue holds more packets than
// arrived within the last DeadlineBackstop, some packet older than that is
// still held, so it accepts every packet up to the id noted then. The
// condition guarantees the batch verdict finds a packet (an empty batch is
// an error reported to the daemon's socket).

// Watchdog defaults.
const (
	DefaultStall = time.Second           // heartbeats missing this long: stalled
	WatchdogPoll = 50 * time.Millisecond // how often the queue is looked at
	// DeadlineBackstop: the watchdog accepts packets held longer than this
	// even while the heartbeats come. It notes the queue's last id at most
	// one poll after a packet came, so a packet is released DeadlineBackstop
	// to DeadlineBackstop + WatchdogPoll after it came: 150-200 ms, when the
	// daemon's own releaser (DefaultMaxHold) has not done it.
	DeadlineBackstop = DefaultMaxHold
	// WatchdogArg is the first argument that makes a binary run RunWatchdog.
	WatchdogArg = "nfqueue-watchdog"
)

// Watchdog is the parent's handle on a watchdog process.
type Watchdog struct {
	proc  *os.Process
	beat  int // write end of the heartbeat pipe, non-blocking
	mu    sync.Mutex
	done  chan struct{}
	state *os.ProcessState
	beats atomic.Uint64
}

// StartWatchdog starts exe (a binary that calls RunWatchdog when its first
// argument is WatchdogArg) as the watchdog of q, with the given stall time
// (0: DefaultStall). The child shares the parent's stdout and stderr (its
// log) and runs in a process group of its own, so a signal to the parent's
// group (a terminal's Ctrl-Z) does not stop both. It exits when the parent
// closes the Watchdog or dies (end of file on the heartbeat pipe).
func StartWatchdog(q *Queue, exe string, stall time.Duration) (*Watchdog, error) {
	if stall <= 0 {
		stall = DefaultStall
	}
	// The child gets the socket and the pipe's read end as fds 3 and 4.
	// syscall.StartProcess takes raw fds: os/exec would put the socket's
	// shared file description into blocking mode, under the parent's poller.
	var sock int
	var derr error
	if err := q.rc.Control(func(fd uintptr) { sock, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("nfqueue %d watchdog: %w", q.num, err)
	}
	if derr != nil {
		return nil, fmt.Errorf("nfqueue %d watchdog: dup socket: %w", q.num, derr)
	}
	defer unix.Close(sock)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, fmt.Errorf("nfqueue %d watchdog: pipe: %w", q.num, err)
	}
	defer unix.Close(p[0])
	// A stopped child must never block the parent's releaser.
	if err := unix.SetNonblock(p[1], true); err != nil {
		unix.Close(p[1])
		return nil, fmt.Errorf("nfqueue %d watchdog: pipe: %w", q.num, err)
	}
	argv := []string{exe, WatchdogArg, "-queue", strconv.Itoa(int(q.num)), "-stall", stall.String()}
	pid, err := syscall.ForkExec(exe, argv, &syscall.ProcAttr{
		Env:   os.Environ(),
		Files: []uintptr{0, 1, 2, uintptr(sock), uintptr(p[0])},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		unix.Close(p[1])
		return nil, fmt.Errorf("nfqueue %d watchdog: start %s: %w", q.num, exe, err)
	}
	proc, err := os.FindProcess(pid)
	if err != nil { // never on Unix
		unix.Close(p[1])
		return nil, err
	}
	w := &Watchdog{proc: proc, beat: p[1], done: make(chan struct{})}
	go func() {
		st, _ := proc.Wait()
		w.mu.Lock()
		w.state = st
		w.mu.Unlock()
		close(w.done)
	}()
	return w, nil
}

// Beat tells the watchdog the queue is served, and whether packets are
// held (then the watchdog watches their age). It never blocks.
func (w *Watchdog) Beat(holding bool) {
	b := []byte{beatIdle}
	if holding {
		b[0] = beatHolding
	}
	if _, err := unix.Write(w.beat, b); err == nil {
		w.beats.Add(1)
	}
}

// Heartbeat bytes.
const (
	beatIdle    = 1
	beatHolding = 2
)

// Pid is the watchdog's process id.
func (w *Watchdog) Pid() int { return w.proc.Pid }

// Exited is closed when the watchdog process has exited.
func (w *Watchdog) Exited() <-chan struct{} { return w.done }

// Close ends the watchdog: the end of its heartbeat pipe tells it to go;
// it is killed if it has not within two seconds.
func (w *Watchdog) Close() error {
	w.mu.Lock()
	if w.beat >= 0 {
		unix.Close(w.beat)
		w.beat = -1
	}
	w.mu.Unlock()
	select {
	case <-w.done:
	case <-time.After(2 * time.Second):
		_ = w.proc.Kill()
		<-w.done
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != nil && !w.state.Success() {
		return fmt.Errorf("nfqueue watchdog: %s", w.state)
	}
	return nil
}

// RunWatchdog is the watchdog process's main (args after WatchdogArg):
// fd 3 is the queue's socket, fd 4 the heartbeat pipe. It logs to stderr.
func RunWatchdog(args []string, stderr io.Writer) int {
	log := logline.New(stderr, nil).With("component", "dns-watchdog")
	fs := flag.NewFlagSet(WatchdogArg, flag.ContinueOnError)
	fs.SetOutput(stderr)
	num := fs.Uint("queue", 0, "queue number")
	stall := fs.Duration("stall", DefaultStall, "heartbeats missing this long mean the daemon is stalled")
	if err := fs.Parse(args); err != nil || *num > 0xffff || *stall <= 0 {
		log.Error("bad arguments", "args", args)
		return 2
	}
	const sockFD, beatFD = 3, 4
	sa, err := unix.Getsockname(sockFD)
	nl, ok := sa.(*unix.SockaddrNetlink)
	if err != nil || !ok {
		log.Error("fd 3 is not the queue's netlink socket", "err", err)
		return 2
	}
	// A tiny, idle process: keep its heap (and so its memory) small.
	debug.SetGCPercent(10)
	runtime.GOMAXPROCS(1)
	d := &dog{num: uint16(*num), portid: nl.Pid, sock: sockFD, log: log, buf: make([]byte, 16<<10)}
	// One thread that sleeps in poll(2) until a heartbeat comes or a
	// timeout: no timers, no ticker, so an idle watchdog costs a wake-up
	// (and a look at the queue) per heartbeat. It looks at the queue every
	// WatchdogPoll while packets are held or the daemon is stalled.
	last := time.Now()
	holding := false
	var since time.Time // start of the current stall
	buf := make([]byte, 64)
	fds := []unix.PollFd{{Fd: beatFD, Events: unix.POLLIN}}
	for {
		quiet := time.Since(last)
		wait := *stall - quiet
		if holding || !since.IsZero() || wait < 0 {
			wait = min(max(wait, 0), WatchdogPoll)
			if !since.IsZero() || wait == 0 {
				wait = WatchdogPoll
			}
		}
		n, err := unix.Poll(fds, int(wait.Milliseconds())+1)
		if err != nil && err != unix.EINTR {
			log.Error("waiting for heartbeats", "err", err)
			return 1
		}
		if n > 0 {
			r, err := unix.Read(beatFD, buf)
			if err == unix.EINTR || err == unix.EAGAIN {
				continue
			}
			if r <= 0 {
				// The parent closed the pipe or died: whatever is still
				// held would be dropped with the queue.
				d.release()
				return 0
			}
			last, holding = time.Now(), buf[r-1] == beatHolding
		}
		quiet = time.Since(last)
		switch {
		case quiet < *stall && since.IsZero():
			// Looked at on every heartbeat too: a daemon too busy to read
			// a reply cannot say it holds one.
			held := d.backstop(time.Now())
			if n > 0 {
				holding = holding || held // a beat tells of a packet the daemon has read
			} else {
				holding = held
			}
		case quiet >= *stall:
			if since.IsZero() {
				since = time.Now().Add(-quiet)
				log.Warn("connmgr is not serving its DNS queue: releasing held DNS replies until it does", "queue", d.num, "silent", quiet.Round(time.Millisecond))
			}
			d.release()
		default:
			log.Info("connmgr serves its DNS queue again", "queue", d.num, "stalled", time.Since(since).Round(time.Millisecond), "released", d.released)
			since, d.released = time.Time{}, 0
		}
	}
}

// dog is the watchdog's view of the queue.
type dog struct {
	num      uint16
	portid   uint32
	sock     int
	log      *logline.Logger
	released uint64 // packets accepted in this stall
	warned   bool
	seen     []idAt    // the queue's last id at each poll, oldest first
	late     uint64    // batches sent by the backstop
	logged   time.Time // when the backstop last logged
	proc     int       // /proc/net/netfilter/nfnetlink_queue, open; 0: not yet
	buf      []byte
}

// queue reads the queue's line of /proc/net/netfilter/nfnetlink_queue.
// The file stays open; a read at offset 0 makes the kernel print it anew.
func (d *dog) queue() (QueueInfo, error) {
	if d.proc <= 0 {
		fd, err := unix.Open("/proc/net/netfilter/nfnetlink_queue", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return QueueInfo{}, fmt.Errorf("nfnetlink_queue: %w", err)
		}
		d.proc = fd
	}
	n, err := unix.Pread(d.proc, d.buf, 0)
	if err != nil {
		return QueueInfo{}, fmt.Errorf("nfnetlink_queue: %w", err)
	}
	return FindQueue(d.buf[:n], d.num, d.portid)
}

type idAt struct {
	at time.Time
	id uint32
}

// backstop accepts the packets held longer than DeadlineBackstop. It says
// whether the queue holds packets.
func (d *dog) backstop(now time.Time) bool {
	q, err := d.queue()
	if err != nil {
		d.seen = d.seen[:0]
		return false
	}
	d.seen = append(d.seen, idAt{now, q.LastID})
	// The newest note at least DeadlineBackstop old.
	old := -1
	for i, s := range d.seen {
		if now.Sub(s.at) >= DeadlineBackstop {
			old = i
		}
	}
	if old < 0 {
		return q.Total > 0
	}
	d.seen = d.seen[old:]
	then := d.seen[0].id
	if arrived := q.LastID - then; q.Total > arrived {
		d.batch(then)
		d.late++
		if now.Sub(d.logged) >= 10*time.Second { // a long restore would fill the log
			d.log.Warn("DNS replies held too long by connmgr: released", "queue", d.num, "older_than", DeadlineBackstop, "times", d.late)
			d.logged = now
		}
	}
	return q.Total > 0
}

// release accepts every packet the queue holds. A batch verdict for an
// empty queue is an error the kernel reports to the socket's reader (the
// parent), so the queue is looked at first.
func (d *dog) release() {
	q, err := d.queue()
	if errors.Is(err, ErrNoQueue) {
		return // unbound: the kernel holds nothing for this socket
	}
	if err != nil {
		if !d.warned {
			d.log.Warn("cannot read the queue's state; releasing blind", "err", err)
			d.warned = true
		}
		// Blind: up to half the id space past 0 and, next time, beyond.
		d.batch(1 << 30)
		d.batch(3 << 30)
		return
	}
	if q.Total == 0 {
		return
	}
	d.batch(q.LastID)
	d.released += uint64(q.Total)
}

func (d *dog) batch(id uint32) {
	msg := verdictMessage(d.num, id, Accept, true)
	if err := unix.Sendto(d.sock, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		d.log.Error("releasing held DNS replies", "err", err)
	}
}

// QueueInfo is one line of /proc/net/netfilter/nfnetlink_queue.
type QueueInfo struct {
	Num, PortID uint32
	Total       uint32 // packets held now
	LastID      uint32 // id of the last packet queued (id_sequence)
}

// ErrNoQueue: the queue is not bound by the given socket.
var ErrNoQueue = errors.New("queue not bound by this socket")

// FindQueue finds queue num bound by portid in the text of
// /proc/net/netfilter/nfnetlink_queue, whose lines are
// "num portid total copy_mode copy_range dropped user_dropped id_sequence 1".
// It allocates nothing on success: the watchdog calls it 20 times a second.
func FindQueue(b []byte, num uint16, portid uint32) (QueueInfo, error) {
	for line := 1; len(b) > 0; line++ {
		l := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		var v [8]uint32
		for i := range v {
			l = bytes.TrimLeft(l, " \t")
			n := 0
			for n < len(l) && l[n] != ' ' && l[n] != '\t' {
				n++
			}
			if n == 0 {
				return QueueInfo{}, fmt.Errorf("nfnetlink_queue line %d: %d fields, want at least 8", line, i)
			}
			x, ok := parseUint32(l[:n])
			if !ok {
				return QueueInfo{}, fmt.Errorf("nfnetlink_queue line %d field %d: %q is not a 32-bit count", line, i+1, l[:n])
			}
			v[i], l = x, l[n:]
		}
		if v[0] == uint32(num) && v[1] == portid {
			return QueueInfo{Num: v[0], PortID: v[1], Total: v[2], LastID: v[7]}, nil
		}
	}
	return QueueInfo{}, fmt.Errorf("nfnetlink_queue: queue %d, port id %d: %w", num, portid, ErrNoQueue)
}

func parseUint32(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var x uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		x = x*10 + uint64(c-'0')
	}
	return uint32(x), x <= 0xffffffff
}
