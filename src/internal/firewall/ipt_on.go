//go:build !noiptables

package firewall

import "os/exec"

// iptablesBuilt says this connmgr has the iptables backend: every build but the one for
// images without fw3 (build tag noiptables, chosen by FIREWALL in the Makefile and by
// GO_PKG_TAGS in the feed Makefile).
const iptablesBuilt = true

func openIPT() (Backend, error) { return NewIPT() }

func iptablesInstalled() bool {
	_, err := exec.LookPath("iptables")
	return err == nil
}
