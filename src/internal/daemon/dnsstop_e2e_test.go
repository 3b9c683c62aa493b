package daemon_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/afero/af-conn/internal/testbed"
)

// End-to-end, both backends, hold mode: DNS does not wait on a stopped connmgr. While connmgr
// is stopped (SIGSTOP) the device's lookups are answered again within a few seconds (its
// watchdog process releases what the queue holds); after SIGCONT the answers that passed
// meanwhile are judged and their pinholes opened, and the next lookup is held and opened as
// usual. When connmgr exits its watchdog goes too.
func TestE2EDNSStopped(t *testing.T) {
	for _, backend := range []string{"nftables", "iptables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			e := newE2E(t, backend)
			line := e.waitLog(0, `msg="DNS extraction running" mode=hold .*watchdog=\d+`)
			dog, _ := strconv.Atoi(regexp.MustCompile(`watchdog=(\d+)`).FindStringSubmatch(line)[1])
			e.stopped()
			e.p.Stop(15 * time.Second)
			deadline := time.Now().Add(5 * time.Second)
			for syscall.Kill(dog, 0) == nil {
				if time.Now().After(deadline) {
					t.Fatalf("watchdog %d still running after connmgr exited", dog)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
}

// lookupRetrying asks for name's A records from the device as a stub resolver does: 1 s per
// try, again on a timeout, for up to limit. It returns the answer and the time it took.
func (e *e2e) lookupRetrying(name string, limit time.Duration) ([]string, time.Duration, error) {
	start := time.Now()
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(name), dns.TypeA)
	var m *dns.Msg
	var err error
	for time.Since(start) < limit {
		err = e.w.Device.Do(func() (err error) {
			c := &dns.Client{Timeout: time.Second}
			m, _, err = c.Exchange(q, net.JoinHostPort(testbed.DNSAddr.String(), "53"))
			return err
		})
		var ne net.Error
		if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
			break
		}
	}
	if err != nil {
		return nil, time.Since(start), fmt.Errorf("lookup %s: %w", name, err)
	}
	var addrs []string
	for _, rr := range m.Answer {
		if a, ok := rr.(*dns.A); ok {
			addrs = append(addrs, a.A.String())
		}
	}
	slices.Sort(addrs)
	return addrs, time.Since(start), nil
}

// sigstop stops connmgr and waits until every one of its threads is stopped (the signal
// takes effect as each thread next runs).
func (e *e2e) sigstop() {
	e.t.Helper()
	if err := e.p.Signal(syscall.SIGSTOP); err != nil {
		e.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		stats, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", e.p.Pid()))
		all := len(stats) > 0
		for _, f := range stats {
			b, err := os.ReadFile(f)
			// "pid (comm) S ...": the state follows the last ')'.
			if i := bytes.LastIndexByte(b, ')'); err != nil || i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
				all = false
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("connmgr's threads not all stopped 10 s after SIGSTOP")
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *e2e) stopped() {
	e.t.Helper()
	e.waitLearned()
	mark := e.p.Mark()
	e.sigstop()
	stoppedAt := time.Now()
	// Whatever happens below, connmgr runs again so that the world can be taken down.
	cont := func() { e.p.Signal(syscall.SIGCONT) }
	e.t.Cleanup(cont)
	got, took, err := e.lookupRetrying("api.afero.io", 5*time.Second)
	if err != nil {
		cont()
		e.t.Fatalf("with connmgr stopped, DNS did not answer within 5 s: %v", err)
	}
	if !slices.Equal(got, []string{"198.18.200.1", "198.18.200.2"}) {
		e.t.Fatalf("api.afero.io answered %v", got)
	}
	e.t.Logf("%s: with connmgr stopped, a lookup was answered after %v", e.backend, took.Round(time.Millisecond))
	// Nothing can open while connmgr is stopped.
	if l := e.learned(); len(l) != 0 {
		e.t.Fatalf("learned %v while connmgr was stopped", l)
	}
	time.Sleep(time.Until(stoppedAt.Add(3 * time.Second)))
	cont()
	// The answer that passed while it was stopped is judged now and opens its pinholes.
	e.waitLog(mark, `msg="connmgr is not serving its DNS queue: releasing held DNS replies until it does"`)
	e.waitLearned("198.18.200.1", "198.18.200.2")
	e.waitLog(mark, `msg="connmgr serves its DNS queue again"`)
	for _, a := range got {
		if err := e.connect(a, 5*time.Second); err != nil {
			e.t.Fatalf("connect to %s, answered while connmgr was stopped: %v", a, err)
		}
	}
	// The next lookup is held until its pinhole is in the set, as before the stop.
	if got := e.resolve("short.afero.io"); !slices.Equal(got, []string{"198.18.200.4"}) {
		e.t.Fatalf("short.afero.io answered %v", got)
	}
	if !slices.Contains(e.learned(), "198.18.200.4") {
		e.t.Fatalf("after SIGCONT, short.afero.io not in the set when its answer arrived: %v", e.learned())
	}
	e.mustDrop("198.18.200.3")
}
