// Package inns owns running a function inside another network namespace:
// sockets made there stay there. The daemon runs inside its device's
// namespace and never needs it; the OS-touching packages accept an
// optional namespace so their root tests can run against a throwaway one.
package inns

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs fn on a thread switched into ns, or directly when ns is not
// set: the zero handle (fd 0 is never a namespace handle) or netns.None().
func Do(ns netns.NsHandle, fn func() error) error {
	if ns <= 0 {
		return fn()
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter namespace: %w", err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked, so it dies with its goroutine
		// instead of serving others from the wrong namespace.
		return fmt.Errorf("leave namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}
