#!/bin/sh
# Seed command line, kept for scripts that use it: set up connmgr's firewall lock-down
# (through the running daemon, or from /etc/config/connmgr and the whitelist without one).
# Usage: init_firewall.sh
exec connmgr fw init
