package nfqueue

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/testbed"
)

const port = 9999

// world is a namespace with a UDP receiver on 127.0.0.1:port, a sender,
// and OUTPUT rule queueing that traffic to queue num (with bypass).
type world struct {
	ns *testbed.NS
	rx *net.UDPConn
	tx *net.UDPConn
}

func newWorld(t *testing.T, num uint16, bypass bool) *world {
	t.Helper()
	w := &world{ns: testbed.NewNS(t, "ns")}
	rule := []string{"iptables", "-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", fmt.Sprint(port), "-j", "NFQUEUE", "--queue-num", fmt.Sprint(num)}
	if bypass {
		rule = append(rule, "--queue-bypass")
	}
	w.ns.MustRun(t, rule...)
	var err error
	w.ns.MustDo(t, func() {
		if w.rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}); err != nil {
			return
		}
		w.tx, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.rx.Close(); w.tx.Close() })
	return w
}

func (w *world) open(t *testing.T, c Config) *Queue {
	t.Helper()
	var q *Queue
	var err error
	w.ns.MustDo(t, func() { q, err = Open(c) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func (w *world) send(t *testing.T, s string) {
	t.Helper()
	if _, err := w.tx.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// recv waits up to d for a datagram; "" on timeout.
func (w *world) recv(t *testing.T, d time.Duration) string {
	t.Helper()
	buf := make([]byte, 2048)
	w.rx.SetReadDeadline(time.Now().Add(d))
	n, err := w.rx.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

// next waits for a queued packet, failing after a generous timeout.
func next(t *testing.T, q *Queue) Packet {
	t.Helper()
	type res struct {
		p   Packet
		err error
	}
	c := make(chan res, 1)
	go func() {
		p, err := q.Next()
		p.Payload = append([]byte(nil), p.Payload...)
		c <- res{p, err}
	}()
	select {
	case r := <-c:
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.p
	case <-time.After(20 * time.Second):
		q.Close()
		t.Fatal("no packet queued within 20s")
	}
	return Packet{}
}

func udpPayload(p Packet) []byte {
	if len(p.Payload) < 28 {
		return nil
	}
	return p.Payload[28:]
}

func TestQueueHoldThenAccept(t *testing.T) {
	w := newWorld(t, 7, true)
	q := w.open(t, Config{Num: 7, FailOpen: true, GSO: true})
	w.send(t, "hello")
	p := next(t, q)
	if !bytes.Equal(udpPayload(p), []byte("hello")) || p.HWProto != 0x0800 || p.Hook != HookLocalOut || p.OutDev != 1 {
		t.Fatalf("packet %+v", p)
	}
	// Held: nothing arrives until the verdict.
	if got := w.recv(t, 300*time.Millisecond); got != "" {
		t.Fatalf("received %q before the verdict", got)
	}
	if err := q.Verdict(p.ID, Accept); err != nil {
		t.Fatal(err)
	}
	if got := w.recv(t, 10*time.Second); got != "hello" {
		t.Fatalf("after accept got %q", got)
	}
}

func TestQueueDrop(t *testing.T) {
	w := newWorld(t, 8, true)
	q := w.open(t, Config{Num: 8})
	w.send(t, "dropme")
	p := next(t, q)
	if err := q.Verdict(p.ID, Drop); err != nil {
		t.Fatal(err)
	}
	w.send(t, "second")
	p = next(t, q)
	if err := q.Verdict(p.ID, Accept); err != nil {
		t.Fatal(err)
	}
	if got := w.recv(t, 10*time.Second); got != "second" {
		t.Fatalf("got %q, want only the second", got)
	}
}

func TestQueueBatchVerdict(t *testing.T) {
	w := newWorld(t, 9, true)
	q := w.open(t, Config{Num: 9})
	var last uint32
	for i := 0; i < 3; i++ {
		w.send(t, fmt.Sprint("m", i))
		last = next(t, q).ID
	}
	if err := q.VerdictBatch(last, Accept); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if got := w.recv(t, 10*time.Second); got != fmt.Sprint("m", i) {
			t.Fatalf("packet %d: %q", i, got)
		}
	}
}

// With --queue-bypass and nobody bound, packets pass.
func TestBypassWithoutListener(t *testing.T) {
	w := newWorld(t, 10, true)
	w.send(t, "free")
	if got := w.recv(t, 10*time.Second); got != "free" {
		t.Fatalf("got %q", got)
	}
	// After a queue was bound and closed, bypass works again.
	q := w.open(t, Config{Num: 10})
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	w.send(t, "again")
	if got := w.recv(t, 10*time.Second); got != "again" {
		t.Fatalf("after close got %q", got)
	}
}

// Fail-open: when the queue is full, the kernel accepts instead of
// dropping.
func TestFailOpenWhenFull(t *testing.T) {
	w := newWorld(t, 11, true)
	q := w.open(t, Config{Num: 11, MaxLen: 1, FailOpen: true})
	w.send(t, "held")
	p := next(t, q)
	w.send(t, "overflow")
	if got := w.recv(t, 10*time.Second); got != "overflow" {
		t.Fatalf("got %q, want the overflow packet to pass", got)
	}
	if err := q.Verdict(p.ID, Accept); err != nil {
		t.Fatal(err)
	}
	if got := w.recv(t, 10*time.Second); got != "held" {
		t.Fatalf("got %q", got)
	}
}

// Without fail-open a full queue drops: the test shows the flag matters.
func TestFullQueueDropsWithoutFailOpen(t *testing.T) {
	w := newWorld(t, 12, true)
	q := w.open(t, Config{Num: 12, MaxLen: 1})
	w.send(t, "held")
	p := next(t, q)
	w.send(t, "overflow")
	if got := w.recv(t, 500*time.Millisecond); got != "" {
		t.Fatalf("got %q, want a drop", got)
	}
	q.Verdict(p.ID, Accept)
	if got := w.recv(t, 10*time.Second); got != "held" {
		t.Fatalf("got %q", got)
	}
}

// Close accepts packets still held instead of letting the kernel drop them.
func TestCloseReleasesHeld(t *testing.T) {
	w := newWorld(t, 13, true)
	q := w.open(t, Config{Num: 13})
	w.send(t, "a")
	next(t, q)
	w.send(t, "b") // queued, not read yet
	time.Sleep(50 * time.Millisecond)
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{w.recv(t, 10*time.Second): true, w.recv(t, 10*time.Second): true}
	if !got["a"] || !got["b"] {
		t.Fatalf("got %v", got)
	}
	if _, err := q.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

func TestBindBusy(t *testing.T) {
	w := newWorld(t, 14, true)
	w.open(t, Config{Num: 14})
	var err error
	w.ns.MustDo(t, func() {
		var q *Queue
		if q, err = Open(Config{Num: 14}); err == nil {
			q.Close()
		}
	})
	// The kernel answers EPERM for a queue bound by another socket.
	if !errors.Is(err, syscall.EPERM) {
		t.Fatalf("second bind: %v, want EPERM", err)
	}
}

func TestVerdictUnknownIDCounted(t *testing.T) {
	w := newWorld(t, 15, true)
	q := w.open(t, Config{Num: 15})
	if err := q.Verdict(123456, Accept); err != nil {
		t.Fatal(err)
	}
	w.send(t, "x")
	p := next(t, q)
	q.Verdict(p.ID, Accept)
	if s := q.Stats(); s.VerdictErrors != 1 || s.Packets != 1 {
		t.Fatalf("stats %+v", s)
	}
}
