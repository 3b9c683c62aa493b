// Package openwrtfiles holds the tests of what af-conn installs on OpenWrt from the
// repository's files/: the procd init script, the netifd hotplug hook, the uci-defaults and
// the firewall include are run under stand-ins for rc.common, procd, uci and connmgr that
// record what they are asked for, and every shell file must pass sh -n and shellcheck with
// busybox ash semantics. It has no code of its own.
package openwrtfiles
