package nfqueue

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxHold bounds how long a Holder keeps a packet. It leaves 100 ms
// of a 250 ms promise to scheduling: with the daemon busy (a restore of
// 65,536 addresses and its garbage collection) on a loaded machine, the
// releaser was seen waking up to 116 ms after its deadline.
const DefaultMaxHold = 150 * time.Millisecond

// HoldConfig configures a Holder.
type HoldConfig struct {
	// MaxHold is the longest a packet waits for its verdict; 0: DefaultMaxHold.
	MaxHold time.Duration
	// Backlog bounds the packets read but not yet taken by Next; a packet
	// beyond it is accepted at once and never handed on (counted). 0: 1024.
	Backlog int
	// Beat, if set, is the proof for a watchdog that the queue is served:
	// the reader calls it when a packet comes to an empty queue, and the
	// goroutine that releases late packets about every BeatEvery while
	// packets are held. Never while nothing is held: an idle holder wakes
	// nobody (its watchdog sees packets arrive on its own).
	Beat      func()
	BeatEvery time.Duration // 0: 250 ms
}

// Held is a packet read from the queue, with the time it was read.
type Held struct {
	Packet
	At time.Time
}

// HoldStats counts what the holder did.
type HoldStats struct {
	ReleasedLate uint64        `json:"released_late"` // accepted at MaxHold, before their handler's verdict
	Unhandled    uint64        `json:"unhandled"`     // accepted at once: the backlog was full
	HoldP50      time.Duration `json:"hold_p50_ns"`   // read to verdict, last 1,024 packets
	HoldP99      time.Duration `json:"hold_p99_ns"`
	HoldMax      time.Duration `json:"hold_max_ns"` // since the holder started
}

// Holder serves a queue so that no packet is held longer than MaxHold,
// whatever its handler is doing: a reader goroutine takes every packet the
// kernel queues as soon as it arrives (so none waits unseen in the socket),
// and a releaser goroutine accepts every packet whose handler has not given
// its verdict by its deadline. The handler still gets a late packet and
// judges it; its Accept is then a no-op. Only a stop of the whole process
// stops this; see Watchdog.
type Holder struct {
	q       *Queue
	maxHold time.Duration
	beat    func()
	every   time.Duration
	ch      chan Held
	kick    chan struct{} // the reader's word to the releaser that a packet came to an empty queue
	wakes   atomic.Uint64 // the releaser's wake-ups (its idle cost, for the tests)
	err     error         // why the reader stopped; set before ch is closed

	mu   sync.Mutex
	held map[uint32]time.Time // id -> read time, until its verdict
	fifo []uint32             // ids in reading order; ids no longer held are skipped
	hold [1024]time.Duration  // ring of hold times
	n    int
	max  time.Duration

	late, unhandled atomic.Uint64
	stop            chan struct{}
	stopOnce        sync.Once
	wg              sync.WaitGroup
}

// NewHolder starts serving q. Close the queue (or the Holder) to stop it.
func NewHolder(q *Queue, c HoldConfig) *Holder {
	if c.MaxHold <= 0 {
		c.MaxHold = DefaultMaxHold
	}
	if c.Backlog <= 0 {
		c.Backlog = 1024
	}
	if c.BeatEvery <= 0 {
		c.BeatEvery = 250 * time.Millisecond
	}
	h := &Holder{q: q, maxHold: c.MaxHold, beat: c.Beat, every: c.BeatEvery,
		ch: make(chan Held, c.Backlog), kick: make(chan struct{}, 1), held: map[uint32]time.Time{}, stop: make(chan struct{})}
	h.wg.Add(2)
	go h.read()
	go h.release()
	return h
}

func (h *Holder) read() {
	defer h.wg.Done()
	defer close(h.ch)
	for {
		p, err := h.q.Next()
		if err != nil {
			h.err = err
			return
		}
		now := time.Now()
		// Copy: Next reuses its buffer, and the handler may be far behind.
		p.Payload = slices.Clone(p.Payload)
		h.mu.Lock()
		first := len(h.held) == 0
		h.held[p.ID] = now
		h.fifo = append(h.fifo, p.ID)
		h.mu.Unlock()
		if first {
			if h.beat != nil {
				h.beat()
			}
			select {
			case h.kick <- struct{}{}:
			default: // the releaser has a kick to come yet
			}
		}
		select {
		case h.ch <- Held{Packet: p, At: now}:
		default:
			h.unhandled.Add(1)
			_, _ = h.Accept(p.ID)
		}
	}
}

// release accepts overdue packets, in reading order, at their deadline.
// While nothing is held it sleeps until the reader kicks it.
func (h *Holder) release() {
	defer h.wg.Done()
	timer := time.NewTimer(h.every)
	defer timer.Stop()
	var nextBeat time.Time // zero: idle until now (the reader beat when the first packet came)
	for {
		h.wakes.Add(1)
		now := time.Now()
		wake := now.Add(h.every)
		var late []uint32
		h.mu.Lock()
		for len(h.fifo) > 0 {
			id := h.fifo[0]
			at, ok := h.held[id]
			if !ok {
				h.fifo = h.fifo[1:]
				continue
			}
			if due := at.Add(h.maxHold); due.After(now) {
				if due.Before(wake) {
					wake = due
				}
				break
			}
			delete(h.held, id)
			h.fifo = h.fifo[1:]
			h.record(now.Sub(at))
			late = append(late, id)
		}
		holding := len(h.held) > 0
		h.mu.Unlock()
		for _, id := range late {
			// An error is a closed queue (which accepted everything) or an
			// id the kernel no longer holds: nothing is held either way.
			_ = h.q.Verdict(id, Accept)
			h.late.Add(1)
		}
		if !holding {
			// Idle: no timer, no beat. A packet that came meanwhile has
			// sent a kick (the reader kicks after adding to held).
			nextBeat = time.Time{}
			timer.Stop()
			select {
			case <-h.stop:
				return
			case <-h.kick:
			}
			continue
		}
		if h.beat != nil {
			if nextBeat.IsZero() {
				nextBeat = now.Add(h.every) // the reader beat when the first came
			} else if !now.Before(nextBeat) {
				h.beat()
				nextBeat = now.Add(h.every)
			}
			wake = minTime(wake, nextBeat)
		}
		timer.Reset(time.Until(wake))
		select {
		case <-h.stop:
			return
		case <-timer.C:
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// record adds a hold time (h.mu held).
func (h *Holder) record(d time.Duration) {
	h.hold[h.n%len(h.hold)] = d
	h.n++
	h.max = max(h.max, d)
}

// ErrHolderClosed is returned by Next once the holder has stopped.
var ErrHolderClosed = errors.New("nfqueue holder closed")

// Next returns the next packet to judge, in the kernel's order. Its
// Payload is the caller's. It returns the reader's error (ErrClosed after
// Close) once every packet read was handed on.
func (h *Holder) Next() (Held, error) {
	p, ok := <-h.ch
	if !ok {
		if h.err != nil {
			return Held{}, h.err
		}
		return Held{}, ErrHolderClosed
	}
	return p, nil
}

// Accept gives packet id its verdict unless the releaser already did
// (late: true, nothing sent).
func (h *Holder) Accept(id uint32) (late bool, err error) {
	h.mu.Lock()
	at, ok := h.held[id]
	if ok {
		delete(h.held, id)
		h.record(time.Since(at))
	}
	h.mu.Unlock()
	if !ok {
		return true, nil
	}
	return false, h.q.Verdict(id, Accept)
}

// Stats returns the counters.
func (h *Holder) Stats() HoldStats {
	h.mu.Lock()
	n := min(h.n, len(h.hold))
	s := slices.Clone(h.hold[:n])
	st := HoldStats{HoldMax: h.max}
	h.mu.Unlock()
	slices.Sort(s)
	if n > 0 {
		st.HoldP50, st.HoldP99 = s[min(n-1, n*50/100)], s[min(n-1, n*99/100)]
	}
	st.ReleasedLate, st.Unhandled = h.late.Load(), h.unhandled.Load()
	return st
}

// Close closes the queue (which accepts every packet still held) and
// waits for the holder's goroutines. Next returns an error afterwards.
func (h *Holder) Close() error {
	err := h.q.Close()
	h.stopOnce.Do(func() { close(h.stop) })
	h.wg.Wait()
	return err
}
