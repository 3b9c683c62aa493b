//go:build noiptables

package firewall

import "errors"

// iptablesBuilt is false in builds for images without fw3 (tag noiptables): go-iptables,
// its regexp and the ip set code are left out, about 330 kB of a mipsel binary.
const iptablesBuilt = false

// openIPT is not reached (Choose refuses the iptables backend in this build); it answers
// the same if it ever is.
func openIPT() (Backend, error) { return nil, errors.New(errNoIPTBackend) }

// iptablesInstalled is not asked: nothing here would use the program (and os/exec stays out).
func iptablesInstalled() bool { return false }
