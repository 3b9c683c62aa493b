package ubus_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/ubus"
	"github.com/afero/af-conn/internal/ubus/ubustest"
)

// Generous: the machine is shared; nothing here waits unless it fails.
const patience = 20 * time.Second

func startServer(t *testing.T) *ubustest.Server {
	t.Helper()
	srv, err := ubustest.NewServer(filepath.Join(t.TempDir(), "ubus.sock"), &ubustest.Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func dial(t *testing.T, path string) *ubus.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	c, err := ubus.Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

func echoObject(name string) *ubus.Object {
	return &ubus.Object{Name: name, Methods: []ubus.Method{
		{Name: "echo", Args: []ubus.Arg{{Name: "value", Type: ubus.TypeString}},
			Handler: func(ctx context.Context, r *ubus.Request) (ubus.Table, error) {
				return ubus.Table{{Name: "args", Value: r.Args}, {Name: "user", Value: r.User}}, nil
			}},
		{Name: "fail", Handler: func(ctx context.Context, r *ubus.Request) (ubus.Table, error) {
			return nil, fmt.Errorf("refused: %w", ubus.StatusPermissionDenied)
		}},
		{Name: "panic", Handler: func(ctx context.Context, r *ubus.Request) (ubus.Table, error) {
			panic("boom")
		}},
		{Name: "types", Args: []ubus.Arg{{Name: "b", Type: ubus.TypeBool}, {Name: "i", Type: ubus.TypeInt32},
			{Name: "t", Type: ubus.TypeTable}, {Name: "a", Type: ubus.TypeArray}},
			Handler: func(ctx context.Context, r *ubus.Request) (ubus.Table, error) { return nil, nil }},
	}}
}

func TestCallsThroughUbusd(t *testing.T) {
	srv := startServer(t)
	pub, caller := dial(t, srv.Path()), dial(t, srv.Path())
	ctx := tctx(t)
	obj := echoObject("echo.test")
	if _, err := pub.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.AddObject(ctx, echoObject("echo.test")); !errors.Is(err, ubus.StatusInvalidArgument) {
		t.Errorf("second object with the same path: %v", err)
	}

	infos, err := caller.Lookup(ctx, "echo.*")
	if err != nil || len(infos) != 1 {
		t.Fatalf("lookup: %v %v", infos, err)
	}
	wantSig := ubus.Table{
		{Name: "echo", Value: ubus.Table{{Name: "value", Value: int32(ubus.TypeString)}}},
		{Name: "fail", Value: ubus.Table{}},
		{Name: "panic", Value: ubus.Table{}},
		{Name: "types", Value: ubus.Table{{Name: "b", Value: int32(7)}, {Name: "i", Value: int32(5)},
			{Name: "t", Value: int32(2)}, {Name: "a", Value: int32(1)}}},
	}
	if !reflect.DeepEqual(infos[0].Signature, wantSig) {
		t.Errorf("signature %#v", infos[0].Signature)
	}

	args := ubus.Table{{Name: "value", Value: "x"}, {Name: "n", Value: int64(1) << 40}}
	got, err := caller.Call(ctx, "echo.test", "echo", args)
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := got.Table("args"); !reflect.DeepEqual(a, args) {
		t.Errorf("echoed %#v", got)
	}
	if u, _ := got.String("user"); u == "" {
		t.Errorf("no caller user in %#v", got)
	}
	for method, want := range map[string]ubus.Status{
		"fail": ubus.StatusPermissionDenied, "panic": ubus.StatusUnknownError, "nosuch": ubus.StatusMethodNotFound} {
		if _, err := caller.Call(ctx, "echo.test", method, nil); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", method, err, want)
		}
	}
	if _, err := caller.Call(ctx, "nosuch", "echo", nil); !errors.Is(err, ubus.StatusNotFound) {
		t.Errorf("missing object: %v", err)
	}

	if err := pub.RemoveObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	if _, err := caller.Call(ctx, "echo.test", "echo", nil); !errors.Is(err, ubus.StatusNotFound) {
		t.Errorf("after remove: %v", err)
	}
}

type eventLog struct {
	mu  sync.Mutex
	got []string
	ch  chan struct{}
}

func newEventLog() *eventLog { return &eventLog{ch: make(chan struct{}, 100)} }

func (l *eventLog) handle(name string, data ubus.Table) {
	js, _ := ubus.FormatJSON(data, false)
	l.mu.Lock()
	l.got = append(l.got, name+" "+string(js))
	l.mu.Unlock()
	l.ch <- struct{}{}
}

func (l *eventLog) wait(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.After(patience)
	for {
		l.mu.Lock()
		got := append([]string(nil), l.got...)
		l.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-l.ch:
		case <-deadline:
			t.Fatalf("waited for %d events, have %q", n, got)
		}
	}
}

func TestEventsThroughUbusd(t *testing.T) {
	srv := startServer(t)
	lis, snd := dial(t, srv.Path()), dial(t, srv.Path())
	ctx := tctx(t)
	log := newEventLog()
	if err := lis.Listen(ctx, log.handle, "foo*", "bar.baz", "ubus.object.add"); err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{"foo", "foo.a", "bar.baz", "bar.bazz", "bar", "other"} {
		if err := snd.Send(ctx, ev, ubus.Table{{Name: "ev", Value: ev}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := snd.Send(ctx, "ubus.fake", nil); !errors.Is(err, ubus.StatusPermissionDenied) {
		t.Errorf("sending a ubus.* event: %v", err)
	}
	// A marker event proves the unmatched ones were not merely late.
	if err := snd.Send(ctx, "foo.end", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := snd.AddObject(ctx, echoObject("late")); err != nil {
		t.Fatal(err)
	}
	got := log.wait(t, 5)
	want := []string{`foo {"ev":"foo"}`, `foo.a {"ev":"foo.a"}`, `bar.baz {"ev":"bar.baz"}`, `foo.end {}`}
	if !reflect.DeepEqual(got[:4], want) || len(got) != 5 || got[4][:16] != "ubus.object.add " {
		t.Errorf("events %q", got)
	}
}

func TestSubscribeNotify(t *testing.T) {
	srv := startServer(t)
	pub, sub := dial(t, srv.Path()), dial(t, srv.Path())
	ctx := tctx(t)
	active := make(chan bool, 4)
	obj := echoObject("pub")
	obj.OnSubscribers = func(a bool) { active <- a }
	if _, err := pub.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	// No subscribers: Notify sends nothing and succeeds.
	if err := pub.Notify(obj, "early", nil); err != nil {
		t.Fatal(err)
	}
	log := newEventLog()
	removed := make(chan struct{})
	if err := sub.Subscribe(ctx, "pub", log.handle, func() { close(removed) }); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-active:
		if !a || !pub.HasSubscribers(obj) {
			t.Fatalf("active %v", a)
		}
	case <-time.After(patience):
		t.Fatal("publisher not told about its subscriber")
	}
	if err := pub.Notify(obj, "state", ubus.Table{{Name: "n", Value: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := log.wait(t, 1); !reflect.DeepEqual(got, []string{`state {"n":1}`}) {
		t.Errorf("notifications %q", got)
	}
	if err := pub.RemoveObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	select {
	case <-removed:
	case <-time.After(patience):
		t.Fatal("subscriber not told the object went away")
	}
}

func TestConnEndFailsPendingCalls(t *testing.T) {
	srv := startServer(t)
	pub, caller := dial(t, srv.Path()), dial(t, srv.Path())
	ctx := tctx(t)
	started := make(chan struct{})
	obj := &ubus.Object{Name: "slow", Methods: []ubus.Method{{Name: "wait",
		Handler: func(ctx context.Context, r *ubus.Request) (ubus.Table, error) {
			close(started)
			<-ctx.Done() // ends when pub's connection ends
			return nil, ctx.Err()
		}}}}
	if _, err := pub.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := caller.Call(ctx, "slow", "wait", nil); errc <- err }()
	<-started
	srv.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ubus.StatusConnectionFailed) {
			t.Errorf("pending call ended with %v", err)
		}
	case <-time.After(patience):
		t.Fatal("pending call not failed when ubusd went away")
	}
	<-pub.Done()
	if _, err := caller.Call(ctx, "slow", "wait", nil); !errors.Is(err, ubus.ErrClosed) {
		t.Errorf("call on a dead connection: %v", err)
	}
}

// waitObject polls a fresh connection until path is published; it returns
// how long that took.
func waitObject(t testing.TB, path, obj string) time.Duration {
	start := time.Now()
	for time.Since(start) < patience {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := ubus.Dial(ctx, path)
		if err == nil {
			_, err = c.LookupID(ctx, obj)
			c.Close()
		}
		cancel()
		if err == nil {
			return time.Since(start)
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("object %s not back within %v", obj, patience)
	return 0
}

func TestClientReconnects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ubus.sock")
	// The client starts before ubusd: it must keep trying.
	cl := ubus.NewClient(path)
	cl.Logf = t.Logf
	obj := echoObject("connmgr.test")
	log := newEventLog()
	ctx := tctx(t)
	if err := cl.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	if err := cl.Listen(ctx, log.handle, "hello.*"); err != nil {
		t.Fatal(err)
	}
	connects := make(chan struct{}, 10)
	cl.OnConnect(func(context.Context, *ubus.Conn) { connects <- struct{}{} })
	if _, err := cl.Call(ctx, "x", "y", nil); !errors.Is(err, ubus.ErrNotConnected) {
		t.Errorf("call while disconnected: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- cl.Run(runCtx) }()
	defer func() { stop(); <-done }()

	for round := 0; round < 3; round++ {
		srv, err := ubustest.NewServer(path, &ubustest.Options{Logf: t.Logf})
		if err != nil {
			t.Fatal(err)
		}
		took := waitObject(t, path, "connmgr.test")
		t.Logf("round %d: object published %v after ubusd started", round, took)
		<-connects
		snd := dial(t, path)
		if err := snd.Send(ctx, "hello.world", ubus.Table{{Name: "round", Value: round}}); err != nil {
			t.Fatal(err)
		}
		log.wait(t, round+1)
		if _, err := snd.Call(ctx, "connmgr.test", "echo", nil); err != nil {
			t.Fatal(err)
		}
		srv.Close()
	}
}

// BenchmarkRestartRecovery reports how long a Client's object is missing
// after ubusd restarts: from the new ubusd's start to the object being
// found by another client.
func BenchmarkRestartRecovery(b *testing.B) {
	path := filepath.Join(b.TempDir(), "ubus.sock")
	srv, err := ubustest.NewServer(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	cl := ubus.NewClient(path)
	if err := cl.AddObject(context.Background(), echoObject("connmgr")); err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- cl.Run(ctx) }()
	defer func() { stop(); <-done; srv.Close() }()
	waitObject(b, path, "connmgr")
	var total, worst time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		srv.Close()
		if srv, err = ubustest.NewServer(path, nil); err != nil {
			b.Fatal(err)
		}
		d := waitObject(b, path, "connmgr")
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N)/1000, "ms-gone/restart")
	b.ReportMetric(float64(worst.Microseconds())/1000, "ms-gone-worst")
}
