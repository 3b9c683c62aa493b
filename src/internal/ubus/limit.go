package ubus

import (
	"sync"
	"time"
)

// MaxCalls bounds the method handlers running at once on one connection. An INVOKE beyond it
// is answered at once with StatusTimeout and {"error": "busy: ..."}, on the reader goroutine,
// so a flood of calls costs neither a goroutine nor memory per call, and the reader reads the
// next call only once the refusal is written (ubusd holds the rest). A daemon's methods are
// quick (they run on its loop), so 16 at once is far more than any honest client needs.
const MaxCalls = 16

// LogLimiter lets through at most Burst notes per Window and counts the rest, so a flood
// cannot flood the log: the next note let through says how many were left out before it.
// The zero value lets through 5 notes per 10 s. Safe for concurrent use.
type LogLimiter struct {
	Window time.Duration
	Burst  int

	mu      sync.Mutex
	start   time.Time // of the current window
	n       int       // notes let through in it
	dropped int       // notes left out since the last one let through
}

// Allow reports whether a note at now may be logged and, if so, how many were left out
// before it.
func (l *LogLimiter) Allow(now time.Time) (ok bool, dropped int) {
	window, burst := l.Window, l.Burst
	if window <= 0 {
		window = 10 * time.Second
	}
	if burst <= 0 {
		burst = 5
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= window {
		l.start, l.n = now, 0
	}
	if l.n >= burst {
		l.dropped++
		return false, 0
	}
	l.n++
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}
