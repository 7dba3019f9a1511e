#!/bin/bash
# HTTP write throughput of the relay next to its ceiling, in one table:  bash bench/http_bench.sh
#
# Run as root (or with sudo) from a checkout on Debian 12. Installs wrk, nginx and curl when
# missing, uses the repo's .venv (made like scripts/test.sh makes it when absent), then, all on
# 127.0.0.1:
#   1. starts two nginx sinks (../shared/bench/nginx_sink.sh; ports 18086/18087 or the next free),
#   2. starts this checkout's relay (port 19096 or the next free) with both sinks as outputs,
#   3. runs ../shared/bench/run_http_bench.sh against the relay for every BATCHES x CONNS case,
#      passing the relay's PID(s) for CPU% and peak RSS,
#   4. restarts the relay before each PEAK case (a clean RSS peak) and runs it,
#   5. stops the relay and runs the same cases straight at one sink (the ceiling),
#   6. prints one table; stops the relay and the sinks on exit, also on failure or Ctrl-C.
# Environment (defaults): DURATION=10 WARMUP=2 (seconds per case) BATCHES="1 100 5000" CONNS=16
#   PEAK="5000x64" ("" to skip)  WRK_CPU=1 (wrk's CPU list, "" = unpinned)  SHARED_BENCH
#   (default ../shared/bench next to the repo)  BENCH_WORK (where configs, logs and raw wrk
#   output go; default a new /tmp/influx-relay-http_bench.XXXXXX, kept)  RELAY_PORT SINK_PORTS
#   RELAY_REV (measure that commit instead of the working tree)  WAIT_QUIET (see bench/README.md)
#   RELAY_COPIES=1 (N > 1: an experiment, N relay processes sharing the port with SO_REUSEPORT;
#   see bench/reuseport_relay.py)
# Quick run: DURATION=3 WARMUP=1 bash bench/http_bench.sh
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case ${1:-} in -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
BATCHES=${BATCHES:-"1 100 5000"}
CONNS=${CONNS:-16}
PEAK=${PEAK-5000x64}
export WRK_CPU=${WRK_CPU-1}

bench_init http_bench wrk:wrk /usr/sbin/nginx:nginx taskset:util-linux
OUT=$WORK/results
mkdir -p "$OUT"

read -r sa sb <<<"${SINK_PORTS:-18086 18087}"
SINK_A=$(pick_port tcp "$sa"); SINK_B=$(pick_port tcp "$sb")
RELAY_PORT=$(pick_port tcp "${RELAY_PORT:-19096}")

start_sinks "$WORK/sink" "$SINK_A" "$SINK_B" || exit 1
relay_config "$WORK/relay.toml" "$RELAY_PORT" "$SINK_A" "$SINK_B"
cleanup_add stop_relay
BENCH_PID=
cleanup_add 'if [ -n "$BENCH_PID" ]; then for k in $(children_of "$BENCH_PID"); do kill -TERM "$k" 2>/dev/null; done; stop_pid "$BENCH_PID" 2; fi'

NOTES=()
# run_case LABEL LINES CONNS URL [PID...]: one run_http_bench.sh case; progress line to stderr
run_case() {
    local label=$1 n=$2 c=$3 url=$4 log; shift 4
    log=$OUT/${label}_${n}x${c}.txt
    OUT=$OUT LABEL=$label BATCHES=$n CONNS=$c DURATION=$DURATION WARMUP=$WARMUP \
        "$SHARED/run_http_bench.sh" "$url" "$@" >"$log" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || true
    BENCH_PID=
    printf '    %-8s %s\n' "$label" "$(grep -v '^#' "$log" | tail -1)" >&2
    grep -E 'pre-flight|wrk failed' "$log" >&2 || true
}

# Relay cases: first the long-lived relay, then a fresh relay for each PEAK case.
relay_case() {  # LABEL N C
    if [ -z "$RELAY_PID" ] || ! kill -0 "$RELAY_PID" 2>/dev/null; then
        if ! start_relay "$WORK/relay.toml" "$RELAY_PORT"; then
            NOTES+=("relay did not start for case $2x$3; log $RELAY_LOG:")
            NOTES+=("$(tail -8 "$RELAY_LOG" | sed 's/^/    /')")
            stop_relay
            return 0
        fi
    fi
    run_case "$1" "$2" "$3" "http://127.0.0.1:$RELAY_PORT" "${RELAY_PIDS[@]}"
    if ! kill -0 "$RELAY_PID" 2>/dev/null; then
        wait "$RELAY_PID" 2>/dev/null && st=0 || st=$?
        NOTES+=("relay EXITED (status $st) during case $2x$3; log $RELAY_LOG:")
        NOTES+=("$(tail -15 "$RELAY_LOG" | sed 's/^/    /')")
        RELAY_PID=
    fi
}

CASES=()
for n in $BATCHES; do for c in $CONNS; do CASES+=("${n}x${c}"); done; done
say "relay $RELAY_SRC on 127.0.0.1:$RELAY_PORT -> sinks 127.0.0.1:$SINK_A, :$SINK_B; ${DURATION}s per case (+${WARMUP}s warm-up), work dir $WORK"
for cs in "${CASES[@]}"; do relay_case relay "${cs%x*}" "${cs#*x}"; done
for cs in $PEAK; do
    stop_relay
    say "fresh relay for $cs"
    relay_case relay-fresh "${cs%x*}" "${cs#*x}"
done
FINAL_RSS=$( [ -n "$RELAY_PID" ] && proc_rss_mb VmRSS "${RELAY_PIDS[@]}" || echo '-')
stop_relay
PROBLEMS=$(for f in "$WORK"/relay.*.log; do relay_log_problems "$f"; done)

say "ceiling: wrk straight at the sink on 127.0.0.1:$SINK_A"
# shellcheck disable=SC2086
for cs in "${CASES[@]}" $PEAK; do run_case ceiling "${cs%x*}" "${cs#*x}" "http://127.0.0.1:$SINK_A" $SINK_PIDS; done

# -- the table ---------------------------------------------------------------------------------
tsv=$OUT/results.tsv
row() {  # LABEL N C -> the tsv fields of that case (empty if it produced none)
    awk -F'\t' -v l="$1" -v n="$2" -v c="$3" '$1 == l && $3 == n && $4 == c' "$tsv" | tail -1
}
echo
describe_setup
echo "# wrk on CPU ${WRK_CPU:-any} (1 thread), relay and nginx unpinned; ${DURATION}s per case after ${WARMUP}s warm-up;" \
     "relay -> 2 nginx sinks, ceiling = wrk -> 1 sink"
printf '%-10s %9s %11s %8s %8s %6s %7s %6s %8s | %9s %11s %8s\n' case 'req/s' 'points/s' 'p50_ms' 'p99_ms' \
    errors '%ceil' 'cpu%' 'rss_MB' 'ceil_rq/s' 'ceil_pts/s' 'ceil_p99'
fmt() { awk -v v="$1" -v f="$2" 'BEGIN{ if (v == "-" || v == "") print "-"; else printf f, v }'; }
print_row() {  # NAME LABEL N C
    local rq=- pt=- p50=- p99=- er=- cpu=- rss=- krq=- kpt=- kp99=- r k pct
    r=$(row "$2" "$3" "$4"); k=$(row ceiling "$3" "$4")
    [ -z "$r" ] || IFS=$'\t' read -r _ _ _ _ rq pt p50 p99 _ er cpu rss _ <<<"$r"
    [ -z "$k" ] || IFS=$'\t' read -r _ _ _ _ krq kpt _ kp99 _ _ _ _ _ <<<"$k"
    [ -n "$r" ] || er="no result"
    pct=$(awk -v a="$rq" -v b="$krq" 'BEGIN{ if (a+0 > 0 && b+0 > 0) printf "%.1f", 100*a/b; else print "-" }')
    printf '%-10s %9s %11s %8s %8s %6s %7s %6s %8s | %9s %11s %8s\n' "$1" "$(fmt "$rq" %.0f)" "$(fmt "$pt" %.0f)" \
        "$(fmt "$p50" %.2f)" "$(fmt "$p99" %.2f)" "$er" "$pct" "$cpu" "$rss" \
        "$(fmt "$krq" %.0f)" "$(fmt "$kpt" %.0f)" "$(fmt "$kp99" %.2f)"
}
for cs in "${CASES[@]}"; do print_row "$cs" relay "${cs%x*}" "${cs#*x}"; done
for cs in $PEAK; do print_row "$cs*" relay-fresh "${cs%x*}" "${cs#*x}"; done
echo "# case = lines per request x wrk connections; * = relay restarted just before (clean peak RSS)."
echo "# %ceil = relay req/s / ceiling req/s; cpu% = relay CPU (100 = one core); rss_MB = relay peak RSS in the case;"
echo "# errors = wrk socket errors + timeouts + non-2xx answers; relay RSS at the end of its last run: ${FINAL_RSS} MB"
echo "# raw wrk output, results.tsv and relay logs: $WORK"
for note in "${NOTES[@]}"; do echo "# $note"; done
[ -z "$PROBLEMS" ] || printf '%s\n' "$PROBLEMS" | sed 's/^/# /'
