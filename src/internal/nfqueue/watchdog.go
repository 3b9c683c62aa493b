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
// takes its verdicts, which it refuses from any other socket) and accepts,
// in one batch verdict up to an id read from
// /proc/net/netfilter/nfnetlink_queue, the packets the daemon leaves held
// too long. It only ever writes to the socket: the copies of the packets
// stay in the socket's buffer, and the main process, once it runs again,
// reads and judges them like any other (their own verdicts then find
// nothing to release). This works the same for the nft queue expression
// and the xt NFQUEUE target, changes no firewall rule (so nothing has to be
// put back, and nothing races the firewall's own repair), and also frees
// the packets already held when a stall began.
//
// Idle costs nothing, in either process: while nothing is held the Holder
// sends no heartbeat, and the watchdog sleeps in epoll_wait(2) with the
// queue's socket registered edge-triggered, so the kernel wakes it when a
// packet is queued (a copy lands in the socket) whatever the daemon does.
// It then looks at the queue every WatchdogPoll until it holds nothing:
// - a packet held longer than DeadlineBackstop is accepted (the daemon's
//   own releaser is late: a daemon whose goroutines all compete with a big
//   restore wakes it late). Each look notes the queue's last id; when the
//   queue holds more packets than arrived since a note DeadlineBackstop
//   old, one older than that is held, so every packet up to the noted id
//   is accepted (the condition guarantees the batch verdict finds a packet:
//   an empty batch is an error reported to the daemon's socket);
// - the daemon must say it serves the queue: its Holder beats when a packet
//   comes to an empty queue and every BeatEvery while it holds packets.
//   With no beat for the stall time since packets came (or since the last
//   beat while the queue holds packets) the daemon is stalled: from then
//   on every packet is accepted as soon as it is seen, until a beat comes.
// Edge-triggered, the socket wakes the watchdog only for new data, never
// for the copies a stopped daemon leaves unread.

// Watchdog defaults.
const (
	DefaultStall = time.Second           // heartbeats missing this long while packets are held: stalled
	WatchdogPoll = 50 * time.Millisecond // how often the queue is looked at while it holds packets
	// IdleLook: how often an idle watchdog looks at the queue anyway: a
	// daemon stopped after it read a packet and before it beat leaves no
	// wake-up. Such a packet is released IdleLook + DeadlineBackstop to
	// IdleLook + DeadlineBackstop + WatchdogPoll after it came.
	IdleLook = 2 * time.Second
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

// Beat tells the watchdog the queue is served. It never blocks.
func (w *Watchdog) Beat() {
	if _, err := unix.Write(w.beat, []byte{1}); err == nil {
		w.beats.Add(1)
	}
}

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
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err == nil {
		err = unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, beatFD, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: beatFD})
	}
	if err != nil {
		log.Error("epoll", "err", err)
		return 1
	}
	// The socket is registered while the watchdog is idle (armed): the
	// wake-up that a packet came. While watching, the looks every
	// WatchdogPoll see what comes, and a flood wakes nobody.
	armed := false
	arm := func(on bool) {
		op := unix.EPOLL_CTL_DEL
		if on {
			op = unix.EPOLL_CTL_ADD
		}
		if on == armed {
			return
		}
		if err := unix.EpollCtl(ep, op, sockFD, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: sockFD}); err != nil {
			log.Error("epoll on the queue's socket", "err", err)
			return // idle then looks every IdleLook
		}
		armed = on
	}
	arm(true)
	if _, err := d.queue(); err != nil { // the first note of the queue's last id
		log.Warn("cannot read the queue's state", "err", err)
	}
	// One thread, no timers, no ticker: it sleeps in epoll_wait until a
	// packet comes, a heartbeat comes or a timeout.
	var (
		watching  bool      // packets may be held: look every WatchdogPoll
		watchFrom time.Time // when the current watch began
		served    bool      // a heartbeat came since the current watch began
		lastBeat  time.Time
		nextLook  time.Time
		since     time.Time // start of the current stall
	)
	buf := make([]byte, 64)
	events := make([]unix.EpollEvent, 2)
	for {
		wait := IdleLook
		if watching {
			wait = max(time.Until(nextLook), 0)
		}
		n, err := unix.EpollWait(ep, events, int((wait+time.Millisecond-1)/time.Millisecond))
		if err != nil && err != unix.EINTR {
			log.Error("waiting for packets and heartbeats", "err", err)
			return 1
		}
		now := time.Now()
		came := n == 0 // a timeout: look at the queue
		beat := false
		for _, ev := range events[:max(n, 0)] {
			if ev.Fd == sockFD {
				came = true
				continue
			}
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
			lastBeat, beat = now, true
			if !since.IsZero() {
				log.Info("connmgr serves its DNS queue again", "queue", d.num, "stalled", now.Sub(since).Round(time.Millisecond), "released", d.released)
				since, d.released = time.Time{}, 0
			}
		}
		if !watching {
			// A heartbeat while idle says a packet came too: the daemon
			// read it (often before the socket's wake-up got here, and
			// epoll reports a socket only while it has data).
			if !came && !beat {
				continue
			}
			prev := d.lastID
			q, err := d.queue()
			if err == nil && q.Total == 0 && q.LastID == prev {
				continue // no packet came (an error report to the daemon, or the timeout)
			}
			// A beat read now came after the packet that woke the
			// watchdog: the daemon read it.
			watching, watchFrom, nextLook, served = true, now, now, beat
			arm(false)
		}
		served = served || beat
		if now.Before(nextLook) {
			continue
		}
		nextLook = now.Add(WatchdogPoll)
		// The daemon beats when a packet comes to its empty queue and then
		// every BeatEvery while it holds packets.
		ref := watchFrom
		if served {
			ref = lastBeat
		}
		if since.IsZero() && now.Sub(ref) >= *stall {
			since = ref
			log.Warn("connmgr is not serving its DNS queue: releasing held DNS replies until it does", "queue", d.num, "silent", now.Sub(ref).Round(time.Millisecond))
		}
		var held bool
		if !since.IsZero() {
			held = d.release()
		} else {
			held = d.backstop(now)
		}
		// Idle again once nothing is held and the daemon has said it
		// serves the queue since packets came (or is known stalled).
		if held || (since.IsZero() && !served) {
			continue
		}
		arm(true)
		if q, err := d.queue(); err == nil && q.Total > 0 { // came before the socket was armed
			arm(false)
			continue
		}
		watching = false
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
	lastID   uint32 // the queue's last id when last looked at
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
	q, err := FindQueue(d.buf[:n], d.num, d.portid)
	if err == nil {
		d.lastID = q.LastID
	}
	return q, err
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
// parent), so the queue is looked at first. It says whether packets may
// still be held (blind: the queue's state cannot be read).
func (d *dog) release() bool {
	q, err := d.queue()
	if errors.Is(err, ErrNoQueue) {
		return false // unbound: the kernel holds nothing for this socket
	}
	if err != nil {
		if !d.warned {
			d.log.Warn("cannot read the queue's state; releasing blind", "err", err)
			d.warned = true
		}
		// Blind: up to half the id space past 0 and, next time, beyond.
		d.batch(1 << 30)
		d.batch(3 << 30)
		return true
	}
	if q.Total == 0 {
		return false
	}
	d.batch(q.LastID)
	d.released += uint64(q.Total)
	return false
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
