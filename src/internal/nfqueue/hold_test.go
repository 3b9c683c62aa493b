package nfqueue

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The watchdog tests run this test binary as the watchdog process.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == WatchdogArg {
		os.Exit(RunWatchdog(os.Args[2:], os.Stderr))
	}
	os.Exit(m.Run())
}

func (w *world) holder(t *testing.T, q *Queue, c HoldConfig) *Holder {
	t.Helper()
	h := NewHolder(q, c)
	t.Cleanup(func() { h.Close() })
	return h
}

func nextHeld(t *testing.T, h *Holder) Held {
	t.Helper()
	c := make(chan Held, 1)
	go func() {
		p, err := h.Next()
		if err != nil {
			t.Error(err)
		}
		c <- p
	}()
	select {
	case p := <-c:
		return p
	case <-time.After(20 * time.Second):
		t.Fatal("no packet handed on within 20s")
	}
	return Held{}
}

// A packet whose handler never gives its verdict is accepted at MaxHold;
// the handler still gets it, and its late Accept sends nothing.
func TestHolderReleasesLate(t *testing.T) {
	w := newWorld(t, 16, true)
	q := w.open(t, Config{Num: 16, FailOpen: true})
	h := w.holder(t, q, HoldConfig{MaxHold: 100 * time.Millisecond})
	w.send(t, "stuck")
	// Nobody calls Next: the handler is stuck elsewhere.
	if got := w.recv(t, 10*time.Second); got != "stuck" {
		t.Fatalf("got %q, want the held packet released", got)
	}
	p := nextHeld(t, h)
	if string(udpPayload(p.Packet)) != "stuck" {
		t.Fatalf("handed on %q", udpPayload(p.Packet))
	}
	if late, err := h.Accept(p.ID); !late || err != nil {
		t.Fatalf("Accept after the deadline: late %v, err %v", late, err)
	}
	// A packet judged in time is released by its handler, not counted.
	w.send(t, "prompt")
	p = nextHeld(t, h)
	if late, err := h.Accept(p.ID); late || err != nil {
		t.Fatalf("Accept in time: late %v, err %v", late, err)
	}
	if got := w.recv(t, 10*time.Second); got != "prompt" {
		t.Fatalf("got %q", got)
	}
	st := h.Stats()
	if st.ReleasedLate != 1 || st.Unhandled != 0 || st.HoldMax < 100*time.Millisecond {
		t.Fatalf("stats %+v", st)
	}
	if s := q.Stats(); s.VerdictErrors != 0 {
		t.Fatalf("a verdict was sent twice: %+v", s)
	}
}

// Packets beyond the backlog are accepted at once and counted.
func TestHolderBacklogFull(t *testing.T) {
	w := newWorld(t, 17, true)
	q := w.open(t, Config{Num: 17, FailOpen: true})
	h := w.holder(t, q, HoldConfig{MaxHold: time.Hour, Backlog: 1})
	w.send(t, "first")
	w.send(t, "second")
	if got := w.recv(t, 10*time.Second); got != "second" {
		t.Fatalf("got %q, want the packet beyond the backlog", got)
	}
	p := nextHeld(t, h)
	h.Accept(p.ID)
	if got := w.recv(t, 10*time.Second); got != "first" {
		t.Fatalf("got %q", got)
	}
	if st := h.Stats(); st.Unhandled != 1 || st.ReleasedLate != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// An idle holder wakes nobody: no heartbeat, no wake-up of its releaser.
// While it holds a packet, the releaser beats every BeatEvery; once the
// packet is released it stops.
func TestHolderBeatsOnlyWhileHolding(t *testing.T) {
	w := newWorld(t, 18, true)
	q := w.open(t, Config{Num: 18})
	var beats atomic.Int64
	h := w.holder(t, q, HoldConfig{Beat: func() { beats.Add(1) }, BeatEvery: 10 * time.Millisecond, MaxHold: 300 * time.Millisecond})
	time.Sleep(50 * time.Millisecond) // the releaser's first look
	wakes := h.wakes.Load()
	time.Sleep(500 * time.Millisecond)
	if b, n := beats.Load(), h.wakes.Load()-wakes; b != 0 || n != 0 {
		t.Fatalf("idle for 500 ms: %d heartbeats, %d wake-ups of the releaser; want none", b, n)
	}
	// Nobody calls Next: the packet is held until MaxHold.
	w.send(t, "held")
	if got := w.recv(t, 10*time.Second); got != "held" {
		t.Fatalf("got %q", got)
	}
	if b := beats.Load(); b < 5 {
		t.Fatalf("%d heartbeats while a packet was held for 300 ms, want one every 10 ms", b)
	}
	time.Sleep(50 * time.Millisecond)
	b, wakes := beats.Load(), h.wakes.Load()
	time.Sleep(500 * time.Millisecond)
	if b, n := beats.Load()-b, h.wakes.Load()-wakes; b != 0 || n != 0 {
		t.Fatalf("idle again: %d heartbeats, %d wake-ups of the releaser in 500 ms; want none", b, n)
	}
}

func (w *world) watchdog(t *testing.T, q *Queue, stall time.Duration) *Watchdog {
	t.Helper()
	var d *Watchdog
	var err error
	w.ns.MustDo(t, func() { d, err = StartWatchdog(q, os.Args[0], stall) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// While the process serving the queue does nothing at all (no reads, no
// verdicts, no heartbeats: as if stopped), the watchdog process releases
// what the queue holds; the copies are still there to be read afterwards.
// With heartbeats it leaves the queue alone.
func TestWatchdogReleasesStalledQueue(t *testing.T) {
	w := newWorld(t, 19, true)
	q := w.open(t, Config{Num: 19, FailOpen: true})
	d := w.watchdog(t, q, 300*time.Millisecond)
	start := time.Now()
	w.send(t, "one")
	w.send(t, "two")
	for _, want := range []string{"one", "two"} {
		if got := w.recv(t, 10*time.Second); got != want {
			t.Fatalf("got %q, want %q released by the watchdog", got, want)
		}
	}
	t.Logf("released after %v", time.Since(start))
	// Once the process serves the queue again it reads both copies.
	for _, want := range []string{"one", "two"} {
		if p := next(t, q); string(udpPayload(p)) != want {
			t.Fatalf("read %q, want %q", udpPayload(p), want)
		}
	}
	// Heartbeats: the watchdog leaves a packet judged in time alone...
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
				d.Beat()
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	w.send(t, "three")
	p := next(t, q)
	if got := w.recv(t, 100*time.Millisecond); got != "" {
		t.Fatalf("got %q while the queue was served", got)
	}
	if err := q.Verdict(p.ID, Accept); err != nil {
		t.Fatal(err)
	}
	if got := w.recv(t, 10*time.Second); got != "three" {
		t.Fatalf("got %q", got)
	}
	// ... and releases one held past DeadlineBackstop (the daemon's own
	// releaser is late).
	w.send(t, "four")
	start = time.Now()
	next(t, q)
	if got := w.recv(t, 10*time.Second); got != "four" {
		t.Fatalf("got %q, want the packet held too long released", got)
	}
	if took := time.Since(start); took < DeadlineBackstop {
		t.Fatalf("released after %v, before the backstop (%v)", took, DeadlineBackstop)
	}
	// No verdict found nothing: the watchdog never sent an empty batch.
	w.send(t, "five")
	p = next(t, q)
	q.Verdict(p.ID, Accept)
	if got := w.recv(t, 10*time.Second); got != "five" {
		t.Fatalf("got %q", got)
	}
	time.Sleep(3 * WatchdogPoll)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// Read what the kernel reported meanwhile (an error ack is read with
	// the next packet).
	w.send(t, "six")
	p = next(t, q)
	q.Verdict(p.ID, Accept)
	if s := q.Stats(); s.VerdictErrors != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Idle, neither the holder nor its watchdog process wakes up: no
// heartbeats, and the watchdog's threads are not switched in. A packet that
// comes wakes the watchdog, which leaves it alone while its handler judges
// it in time, also long after the last heartbeat (it does not take a
// daemon silent while idle for stalled).
func TestWatchdogIdleIsQuiet(t *testing.T) {
	w := newWorld(t, 21, true)
	q := w.open(t, Config{Num: 21, FailOpen: true})
	d := w.watchdog(t, q, 300*time.Millisecond)
	h := w.holder(t, q, HoldConfig{Beat: d.Beat})
	go func() {
		for {
			p, err := h.Next()
			if err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond) // in time: MaxHold and the backstop are 150 ms
			h.Accept(p.ID)
		}
	}()
	quiet := func(when string) {
		t.Helper()
		time.Sleep(time.Second) // settle (the watchdog's start, the last packet)
		b, r := d.beats.Load(), reads(t, d.Pid())
		time.Sleep(3 * time.Second)
		// Each wake-up of the watchdog reads: the queue's state, or the
		// heartbeat pipe. Idle, it looks once every IdleLook (2 s); with
		// heartbeats every 250 ms it read 8 times a second.
		if b, r := d.beats.Load()-b, reads(t, d.Pid())-r; b != 0 || r > 2 {
			t.Fatalf("%s for 3 s: %d heartbeats, %d reads by the watchdog; want none and at most 2", when, b, r)
		}
	}
	quiet("idle")
	for i := range 3 {
		w.send(t, "x")
		start := time.Now()
		if got := w.recv(t, 10*time.Second); got != "x" {
			t.Fatalf("got %q", got)
		}
		if took := time.Since(start); took < 90*time.Millisecond {
			t.Fatalf("packet %d released after %v, before its handler's verdict", i, took)
		}
		time.Sleep(time.Second) // idle for longer than the stall time
	}
	quiet("idle again")
}

// reads is how many read system calls process pid made (syscr).
func reads(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "syscr: "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("/proc/%d/io: %q", pid, l)
			}
			return n
		}
	}
	t.Fatalf("/proc/%d/io: no syscr", pid)
	return 0
}

// Closing the heartbeat pipe (the parent closes the gate, or dies) ends
// the watchdog, and the queue goes on working.
func TestWatchdogExitsWithPipe(t *testing.T) {
	w := newWorld(t, 20, true)
	q := w.open(t, Config{Num: 20})
	d := w.watchdog(t, q, time.Second)
	pid := d.Pid()
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("watchdog %d still there: %v", pid, err)
	}
	w.send(t, "x")
	p := next(t, q)
	q.Verdict(p.ID, Accept)
	if got := w.recv(t, 10*time.Second); got != "x" {
		t.Fatalf("got %q", got)
	}
}

func TestFindQueue(t *testing.T) {
	const proc = "    0   1234     0 2 65535     0     0        0  1\n" +
		"   27 -4000     3 2 65535     0     0       42  1\n" +
		"   27   777     5 2 65535     0     0     9001  1\n"
	q, err := FindQueue([]byte(strings.ReplaceAll(proc, "-4000", "4000")), 27, 777)
	if err != nil || q != (QueueInfo{Num: 27, PortID: 777, Total: 5, LastID: 9001}) {
		t.Fatalf("%+v %v", q, err)
	}
	if _, err := FindQueue([]byte(strings.ReplaceAll(proc, "-4000", "4000")), 28, 777); !errors.Is(err, ErrNoQueue) {
		t.Fatalf("missing queue: %v", err)
	}
	for _, bad := range []string{proc, "27 777 5\n", "27 777 5 2 65535 0 0 99999999999 1\n"} {
		if _, err := FindQueue([]byte(bad), 27, 777); err == nil || errors.Is(err, ErrNoQueue) || !strings.Contains(err.Error(), "line") {
			t.Errorf("%q: %v, want an error naming the line", bad, err)
		}
	}
}

func FuzzFindQueue(f *testing.F) {
	f.Add([]byte("   27   777     5 2 65535     0     0     9001  1\n"), uint16(27), uint32(777))
	f.Fuzz(func(t *testing.T, b []byte, num uint16, portid uint32) {
		q, err := FindQueue(b, num, portid)
		if err == nil && (q.Num != uint32(num) || q.PortID != portid) {
			t.Fatalf("found %+v for %d/%d", q, num, portid)
		}
	})
}
