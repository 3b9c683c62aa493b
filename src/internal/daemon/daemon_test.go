package daemon

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/logline"
)

// recorder is a component that writes down what the loop asked of it.
type recorder struct {
	name string
	mu   *sync.Mutex
	log  *[]string
}

func (r recorder) note(s string) {
	r.mu.Lock()
	*r.log = append(*r.log, r.name+":"+s)
	r.mu.Unlock()
}
func (r recorder) start(context.Context) error { r.note("start"); return nil }
func (r recorder) reload(old, cur *Loaded) {
	r.note("reload " + old.Config.Main.EchoHost + "->" + cur.Config.Main.EchoHost)
}
func (r recorder) stop()                { r.note("stop") }
func (r recorder) fillStatus(s *Status) { s.Uplinks = append(s.Uplinks, UplinkStatus{Network: r.name}) }

func writeConnmgr(t *testing.T, dir, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "connmgr"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func newTestDaemon(t *testing.T, dir string) (*Daemon, *[]string, *sync.Mutex, *strings.Builder) {
	t.Helper()
	var logBuf strings.Builder
	var mu sync.Mutex
	var calls []string
	d, err := New(Options{
		UCIDir: dir, WhitelistPath: filepath.Join(dir, "whitelist"),
		Logger: logline.New(&lockedWriter{w: &logBuf, mu: &mu}, nil),
		Clock:  newFakeClock(),
	})
	if err != nil {
		t.Fatal(err)
	}
	d.components = []component{recorder{"a", &mu, &calls}, recorder{"b", &mu, &calls}}
	return d, &calls, &mu, &logBuf
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestLifecycleReloadAndDo(t *testing.T) {
	dir := t.TempDir()
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption echo_host 'one.example'\n")
	d, calls, mu, logBuf := newTestDaemon(t, dir)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()

	// Do runs on the loop: the status it reads includes every component's part.
	var st Status
	if err := d.Do(ctx, func() { st = d.Status() }); err != nil {
		t.Fatal(err)
	}
	if len(st.Uplinks) != 2 || st.Firewall.Mode != "enabled" || st.NetworkType != -1 {
		t.Errorf("status = %+v", st)
	}

	// A good reload reaches every component with old and new configuration.
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption echo_host 'two.example'\n")
	errc := make(chan error, 1)
	d.post(reloadEvent{done: errc})
	if err := <-errc; err != nil {
		t.Fatalf("reload: %v", err)
	}
	// A bad one changes nothing and says why.
	writeConnmgr(t, dir, "config connmgr 'main'\n\toption echo_port '70000'\n")
	d.post(reloadEvent{done: errc})
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "echo_port") {
		t.Fatalf("bad reload: err = %v, want one naming echo_port", err)
	}
	d.Do(ctx, func() {
		if got := d.cur.Config.Main.EchoHost; got != "two.example" {
			t.Errorf("after a bad reload the config is %q, want the last good two.example", got)
		}
		if d.counters.Reloads != 1 {
			t.Errorf("reloads = %d, want 1", d.counters.Reloads)
		}
	})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	mu.Lock()
	defer mu.Unlock()
	want := "a:start b:start a:reload one.example->two.example b:reload one.example->two.example b:stop a:stop"
	if got := strings.Join(*calls, " "); got != want {
		t.Errorf("calls = %s\nwant    %s", got, want)
	}
	if !strings.Contains(logBuf.String(), "reload failed; keeping the running configuration") {
		t.Errorf("log does not say the bad reload was refused:\n%s", logBuf.String())
	}
	if !strings.Contains(logBuf.String(), "whitelist missing") {
		t.Errorf("log does not warn about the missing whitelist:\n%s", logBuf.String())
	}
}

func TestAfterPostsOnTheClock(t *testing.T) {
	dir := t.TempDir()
	d, _, _, _ := newTestDaemon(t, dir)
	c := d.clock.(*fakeClock)
	fired := make(chan struct{}, 1)
	d.after(3*time.Second, funcEvent{f: func() { fired <- struct{}{} }, done: make(chan struct{})})
	c.Advance(2 * time.Second)
	select {
	case ev := <-d.events:
		t.Fatalf("event %T posted before its time", ev)
	default:
	}
	c.Advance(time.Second)
	select {
	case ev := <-d.events:
		ev.apply(d)
	case <-time.After(5 * time.Second):
		t.Fatal("timer event not posted")
	}
	<-fired
}

// A failed start leaves what the started components changed (the firewall lock-down) in
// place, as a crash does: it is often procd's respawn after a crash, which has just adopted
// the lock-down (README "What a fault leaves behind").
func TestStartFailureLeavesWhatStarted(t *testing.T) {
	dir := t.TempDir()
	d, calls, mu, _ := newTestDaemon(t, dir)
	d.components = append(d.components[:1], failing{}, d.components[1])
	err := d.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("Run = %v, want the start error", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(*calls, " "); got != "a:start" {
		t.Errorf("calls = %s, want a:start (no stop)", got)
	}
}

type failing struct{}

func (failing) start(context.Context) error { return errBoom }
func (failing) reload(_, _ *Loaded)         {}
func (failing) stop()                       {}
func (failing) fillStatus(*Status)          {}

var errBoom = &testErr{"boom"}

type testErr struct{ s string }

func (e *testErr) Error() string { return e.s }

type prefRecorder struct {
	recorder
	got *[]int
}

func (p prefRecorder) preferenceChanged(v int) { *p.got = append(*p.got, v) }
func (p prefRecorder) notice(n Notice)         { p.note("notice " + n.Name) }

func TestPreferenceAndNotices(t *testing.T) {
	d, calls, mu, _ := newTestDaemon(t, t.TempDir())
	var got []int
	d.components = append(d.components, prefRecorder{recorder{"p", mu, calls}, &got})
	for _, v := range []int{1, 1, -2, 3, -1} {
		d.SetPreferredNetworkType(v)
	}
	if fmt.Sprint(got) != "[1 -1]" || d.PreferredNetworkType() != -1 {
		t.Errorf("preference changes seen = %v, now %d; want [1 -1], -1", got, d.PreferredNetworkType())
	}
	if err := d.SetPreferredNetworkType(7); err == nil {
		t.Error("7 accepted as a network type")
	}
	d.announce(Notice{Name: "connmgr.network"})
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(*calls, " ") != "p:notice connmgr.network" {
		t.Errorf("calls = %v", *calls)
	}
}
