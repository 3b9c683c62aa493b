//go:build connmgr_testhooks

package daemon

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// startTestHooks, in test builds only (-tags connmgr_testhooks), makes SIGUSR2 panic on the
// loop goroutine, so the end-to-end tests can check what a crash leaves behind. A production
// build has no such hook (testhooks_off.go): SIGUSR2 keeps its default action there.
func (d *Daemon) startTestHooks(ctx context.Context) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR2)
	go func() {
		defer signal.Stop(ch)
		select {
		case <-ch:
			d.post(panicEvent{})
		case <-ctx.Done():
		}
	}()
}

type panicEvent struct{}

func (panicEvent) apply(*Daemon) { panic("connmgr test hook: panic on the event loop (SIGUSR2)") }
