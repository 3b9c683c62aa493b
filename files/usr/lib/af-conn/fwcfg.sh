#!/bin/sh
# Seed command lines, kept for scripts that use them; connmgr does the work (through the
# running daemon, or directly on the kernel sets when no daemon answers).
# Usage: fwcfg.sh add|del|add_forwarding|del_forwarding IP COMMENT [check_fw]
#        fwcfg.sh restart
exec connmgr fw "$@"
