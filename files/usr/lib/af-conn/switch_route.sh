#!/bin/sh
# Seed command line, kept for scripts that use it: make IFNAME the uplink in use.
# connmgr does the work (default route of metric 0 via that uplink's gateway).
# Usage: switch_route.sh IFNAME
if [ $# -ne 1 ]; then
	echo "usage: $0 IFNAME" >&2
	exit 2
fi
exec connmgr switch "$1"
