#!/bin/sh
# run.sh ROOT BENCH: runs stock OpenWrt user space (ubusd, netifd with OpenWrt's dhcp.sh and
# udhcpc, mwan3track, busybox) from the root file system ROOT inside the caller's network
# namespace, for TestMwan3trackBenchmark (the DHCP server is the test's, on the router).
# ROOT is built by hand from the stock sources (see BENCHMARKS.md) and never committed; this
# script only runs it. BENCH holds the test's config/ (network, mwan3) and hotplug.d/; the
# hotplug script there appends each iface event to BENCH/events. Everything runs in a private
# mount namespace (the caller uses unshare -m), so the mounts go when the last process does.
set -eu
ROOT=$1
BENCH=$2
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --bind /dev "$ROOT/dev"
mount -t tmpfs tmpfs "$ROOT/tmp"
mount -t tmpfs tmpfs "$ROOT/var"
mount --bind "$BENCH/config" "$ROOT/etc/config"
mount --bind "$BENCH/hotplug.d" "$ROOT/etc/hotplug.d"
mkdir "$ROOT/tmp/bench"
mount --bind "$BENCH" "$ROOT/tmp/bench"
# syslogd -n and every daemon in the foreground of this process group, so the test's kill of the
# group ends them all. mwan3track is what netifd's hotplug would start for the interface; here it
# starts once wan is up.
exec chroot "$ROOT" /bin/sh -c '
	mkdir -p /var/run /var/state /var/log /var/lock
	syslogd -n -O /tmp/bench/messages &
	/sbin/ubusd &
	while ! ubus list >/dev/null 2>&1; do sleep 0.1; done
	/sbin/netifd &
	# wan is up once udhcpc has its lease and netifd has applied it.
	while ! ubus call network.interface.wan status 2>/dev/null | grep -q "\"up\": true"; do sleep 0.1; done
	echo "wan up"
	exec /usr/sbin/mwan3track wan
'
