package ubus_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afero/af-conn/internal/ubus"
)

// MaxCalls handlers at once are served; a call beyond them is refused at once with
// StatusTimeout and a "busy" text; once one returns, calls are served again.
func TestCallsBeyondMaxCallsRefused(t *testing.T) {
	srv := startServer(t)
	pub, caller := dial(t, srv.Path()), dial(t, srv.Path())
	ctx := tctx(t)
	release := make(chan struct{})
	entered := make(chan struct{}, ubus.MaxCalls+1)
	obj := &ubus.Object{Name: "slow", Methods: []ubus.Method{
		{Name: "wait", Handler: func(ctx context.Context, _ *ubus.Request) (ubus.Table, error) {
			entered <- struct{}{}
			<-release
			return nil, nil
		}},
		{Name: "quick", Handler: func(context.Context, *ubus.Request) (ubus.Table, error) { return nil, nil }},
	}}
	if _, err := pub.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range ubus.MaxCalls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := caller.Call(ctx, "slow", "wait", nil); err != nil {
				t.Errorf("a call within the bound: %v", err)
			}
		}()
	}
	for range ubus.MaxCalls {
		<-entered
	}
	start := time.Now()
	_, err := caller.Call(ctx, "slow", "quick", nil)
	if !errors.Is(err, ubus.StatusTimeout) {
		t.Fatalf("call beyond the bound: %v, want %v", err, ubus.StatusTimeout)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("refusal took %v", took)
	}
	close(release)
	wg.Wait()
	if _, err := caller.Call(ctx, "slow", "quick", nil); err != nil {
		t.Fatalf("after the busy handlers returned: %v", err)
	}
}

func TestLogLimiter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := ubus.LogLimiter{Window: 10 * time.Second, Burst: 2}
	for _, step := range []struct {
		at      time.Duration
		ok      bool
		dropped int
	}{
		{0, true, 0}, {time.Second, true, 0}, {2 * time.Second, false, 0}, {3 * time.Second, false, 0},
		{10 * time.Second, true, 2}, {11 * time.Second, true, 0}, {12 * time.Second, false, 0},
		{25 * time.Second, true, 1},
	} {
		ok, dropped := l.Allow(t0.Add(step.at))
		if ok != step.ok || dropped != step.dropped {
			t.Errorf("at %v: %v %d, want %v %d", step.at, ok, dropped, step.ok, step.dropped)
		}
	}
	var zero ubus.LogLimiter
	n := 0
	for range 1000 {
		if ok, _ := zero.Allow(t0); ok {
			n++
		}
	}
	if n != 5 {
		t.Errorf("zero value let %d of 1000 through in one window, want 5", n)
	}
}

// An INVOKE over MaxInvokeLen is skipped unread (no handler runs, nothing of it is decoded):
// megabyte calls from many clients at once cost the daemon no memory. The connection stays in
// step and answers the next call.
func TestOversizedInvokeSkipped(t *testing.T) {
	srv := startServer(t)
	pub, caller := dial(t, srv.Path()), dial(t, srv.Path())
	ctx := tctx(t)
	var ran atomic.Int32
	obj := &ubus.Object{Name: "small", Methods: []ubus.Method{
		{Name: "echo", Handler: func(context.Context, *ubus.Request) (ubus.Table, error) {
			ran.Add(1)
			return ubus.Table{{Name: "ok", Value: true}}, nil
		}},
	}}
	if _, err := pub.AddObject(ctx, obj); err != nil {
		t.Fatal(err)
	}
	big := ubus.Table{{Name: "pad", Value: strings.Repeat("x", ubus.MaxInvokeLen)}}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := caller.Call(short, "small", "echo", big); err == nil {
		t.Fatal("an oversized call was answered")
	}
	if n := ran.Load(); n != 0 {
		t.Fatalf("the handler ran %d times for an oversized call", n)
	}
	fit := ubus.Table{{Name: "pad", Value: strings.Repeat("x", ubus.MaxInvokeLen/2)}}
	if _, err := caller.Call(ctx, "small", "echo", fit); err != nil {
		t.Fatalf("a call within the bound after the skipped one: %v", err)
	}
	if n := ran.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1", n)
	}
}
