//go:build !connmgr_testhooks

package daemon

import "context"

// startTestHooks does nothing in a production build: the hooks that make the daemon fail on
// purpose exist only in binaries built with -tags connmgr_testhooks (testhooks_on.go).
func (d *Daemon) startTestHooks(context.Context) {}
