#!/bin/bash
# Issue 4's whole table in one command, from a clean checkout (as root, Debian 12):
#   bash bench/all.sh [> results.txt]
# Runs, one after the other: http_bench.sh (1/100/5000 lines x 16 conns, 5000 x 64 peak RSS,
# each next to the nginx ceiling), udp_bench.sh (10k/20k/30k datagrams/s, with the OS-default
# read buffer and with READ_BUFFER, default 4 MiB), replay_bench.sh (backlog replay, RSS of a
# full memory buffer) and e2e_influx.sh (relay -> two real influxd vs one influxd), printing
# each script's table. Knobs pass through (DURATION, RELAY_REV, WAIT_QUIET, ...); about 5 min.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
status=0
run() {
    printf '\n===== %s\n' "$*"
    "$@" || { status=1; printf '(%s failed)\n' "$*"; }
}
run bash "$here/http_bench.sh"
run bash "$here/udp_bench.sh"
run env READ_BUFFER="${READ_BUFFER:-4194304}" bash "$here/udp_bench.sh"
run bash "$here/replay_bench.sh"
run bash "$here/e2e_influx.sh"
exit $status
