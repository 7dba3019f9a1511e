#!/bin/bash
# Side by side: the ceiling, this relay and the two Go influxdb-relays:  bash bench/compare.sh
#
# Run as root (or with sudo) from a checkout on Debian 12. Installs wrk, nginx and curl when
# missing; runs our relay on Debian's /usr/bin/python3, the interpreter the .deb runs on (in
# bench/.venv-debian, made on first use: see RELAY_PY); takes the Go relays' binaries from
# GO_RELAY_DIR (how to build them: bench/README.md, or run this script without them). On
# 127.0.0.1:
#   1. two nginx sinks (../shared/bench/nginx_sink.sh; ports 18086/18087 or the next free);
#   2. our relay, veepee-oss/influxdb-relay and influxdata/influxdb-relay, each with both sinks
#      as outputs (ports 19096, 19097, 19098 or the next free);
#   3. ROUNDS rounds; in each, for every case of CASES and PEAK, ../shared/bench/run_http_bench.sh
#      against each target in turn: ceiling (wrk straight at one sink), ours, veepee, influxdata,
#      the order rotated by one from round to round. Before a PEAK case each relay is restarted
#      (a clean peak RSS);
#   4. prints one table of medians over the rounds (req/s, ratios, p99, relay CPU per point,
#      peak RSS of the PEAK cases, errors) and each round's req/s; stops everything on exit.
# Without the Go binaries it measures the ceiling and ours only, and says how to get them.
# Environment (defaults): ROUNDS=3  DURATION=10 WARMUP=2 (seconds per run)  CASES="1x16 100x16
#   5000x16" (lines per request x connections)  PEAK="5000x64" ("" to skip)  GO_RELAY_DIR=/tmp/go-relay
#   (binaries GO_RELAY_DIR/{veepee,influxdata}/influxdb-relay)  RELAY_PY=debian-venv (or
#   debian-apt: Debian's python3-gevent etc., exactly the .deb's dependencies; repo-venv; a path)
#   WRK_CPU=1 (wrk's CPU list, "" = unpinned)  RELAY_REV (measure that commit)  WAIT_QUIET
#   SHARED_BENCH  BENCH_WORK  SINK_PORTS  RELAY_PORTS="19096 19097 19098"
#   OURS_WORKERS="1" (our relay once per value, with `workers = N` in its config: "1 2" adds a
#   target ours2, on port 19099 or the next free, interleaved with the others; its CPU and RSS are
#   summed over the supervisor and its workers; ours / Go stays that of 1 worker)  SCANNER=c
# Quick run: DURATION=2 ROUNDS=1 bash bench/compare.sh   (~1.5 min; it checks that everything works:
#   at 5000x64 a Go relay takes 1-3 s a request, too long for 2 s runs)
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case ${1:-} in -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CASES=${CASES:-"1x16 100x16 5000x16"}
PEAK=${PEAK-5000x64}
GO_RELAY_DIR=${GO_RELAY_DIR:-/tmp/go-relay}
OURS_WORKERS=${OURS_WORKERS:-1}
OURS=()   # our targets: ours (workers = 1), oursN (workers = N)
for w in $OURS_WORKERS; do
    [[ $w =~ ^[1-9][0-9]*$ ]] || { echo "error: OURS_WORKERS=$OURS_WORKERS: want numbers of workers, e.g. \"1 2\"" >&2; exit 2; }
    if [ "$w" = 1 ]; then OURS+=(ours); else OURS+=("ours$w"); fi
done
export WRK_CPU=${WRK_CPU-1}
BENCH_RELAY_PY=debian-venv

bench_init compare wrk:wrk /usr/sbin/nginx:nginx taskset:util-linux
OUT=$WORK/results
mkdir -p "$OUT"
NOTES=()

# -- the Go relays -----------------------------------------------------------------------------
GO_TARGETS=()
for g in veepee influxdata; do
    [ -x "$GO_RELAY_DIR/$g/influxdb-relay" ] && GO_TARGETS+=("$g")
done
if [ ${#GO_TARGETS[@]} -lt 2 ]; then
    cat >&2 <<EOF
==> Go relay binaries missing: want $GO_RELAY_DIR/veepee/influxdb-relay and $GO_RELAY_DIR/influxdata/influxdb-relay.
    To build them (as root, about 90 s; installs Debian's Go and golang-*-dev packages):
      git clone --bare https://github.com/veepee-oss/influxdb-relay.git /tmp/src/veepee.git
      git clone --bare https://github.com/influxdata/influxdb-relay.git /tmp/src/influxdata.git
      git clone --bare https://github.com/census-ecosystem/opencensus-go-exporter-prometheus.git /tmp/src/ocprom.git
      $SHARED/build-go-relays.sh /tmp/src/veepee.git /tmp/src/influxdata.git /tmp/src/ocprom.git $GO_RELAY_DIR
    then run this again (or set GO_RELAY_DIR). Measuring ${GO_TARGETS[*]:+${GO_TARGETS[*]}, }the ceiling and ours only.
EOF
    NOTES+=("Go relays missing from $GO_RELAY_DIR: ${GO_TARGETS[*]:-none} measured (see bench/README.md to build them)")
fi
go_desc() {  # NAME: one line about the binary (Go version, relay version, build time)
    local bin=$GO_RELAY_DIR/$1/influxdb-relay gov ver
    gov=$(go version "$bin" 2>/dev/null | awk '{print $2}' || true)
    ver=$("$bin" -version 2>/dev/null | head -1 || true)
    printf '%s %s%s%s, built %s' "$1" "$bin" "${gov:+ ($gov)}" "${ver:+, $ver}" "$(date -u -r "$bin" +%FT%TZ)"
}

# -- ports, sinks, configs -----------------------------------------------------------------------
read -r sa sb <<<"${SINK_PORTS:-18086 18087}"
SINK_A=$(pick_port tcp "$sa"); SINK_B=$(pick_port tcp "$sb")
read -r p1 p2 p3 <<<"${RELAY_PORTS:-19096 19097 19098}"
declare -A PORT=([ceiling]=$SINK_A [ours]=$(pick_port tcp "$p1") [veepee]=$(pick_port tcp "$p2") \
    [influxdata]=$(pick_port tcp "$p3"))
declare -A PID=() PIDS=() LOG=() RUNS=() WORKERS=()
next_port=19099
for t in "${OURS[@]}"; do
    WORKERS[$t]=${t#ours}; WORKERS[$t]=${WORKERS[$t]:-1}
    if [ "$t" != ours ]; then PORT[$t]=$(pick_port tcp "$next_port"); next_port=$(( ${PORT[$t]} + 1 )); fi
done

# veepee always serves Prometheus metrics on :8088, every interface, and cannot be told otherwise.
if [[ " ${GO_TARGETS[*]} " == *" veepee "* ]] \
    && ! python3 -c 'import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("", 8088))' 2>/dev/null; then
    NOTES+=("port 8088 is taken: veepee's metrics server could not listen (it logs that and relays anyway)")
fi

start_sinks "$WORK/sink" "$SINK_A" "$SINK_B" || exit 1
PIDS[ceiling]=$SINK_PIDS
for t in "${OURS[@]}"; do
    relay_config "$WORK/$t.toml.tmp" "${PORT[$t]}" "$SINK_A" "$SINK_B"
    # workers is a top-level key: before the first table
    { [ "${WORKERS[$t]}" = 1 ] || printf 'workers = %s\n' "${WORKERS[$t]}"; cat "$WORK/$t.toml.tmp"; } > "$WORK/$t.toml"
    rm -f "$WORK/$t.toml.tmp"
done
# veepee 3.1: location is a base URL that must end in "/", the paths come from endpoints.
{
    printf '# generated by bench/compare.sh\n[[http]]\nname = "bench"\nbind-addr = "127.0.0.1:%s"\n' "${PORT[veepee]}"
    for out in a:$SINK_A b:$SINK_B; do
        printf '\n[[http.output]]\nname = "%s"\nlocation = "http://127.0.0.1:%s/"\n' "${out%%:*}" "${out#*:}"
        printf 'endpoints = {write="/write", ping="/ping", query="/query"}\ntimeout = "10s"\n'
    done
} > "$WORK/veepee.toml"
# influxdata (the original): location is the backend's write URL.
cat > "$WORK/influxdata.toml" <<EOF
# generated by bench/compare.sh
[[http]]
name = "bench"
bind-addr = "127.0.0.1:${PORT[influxdata]}"
output = [
    { name = "a", location = "http://127.0.0.1:$SINK_A/write", timeout = "10s" },
    { name = "b", location = "http://127.0.0.1:$SINK_B/write", timeout = "10s" },
]
EOF

# -- starting and stopping the relays --------------------------------------------------------------
start_target() {  # NAME
    local t=$1
    RUNS[$t]=$(( ${RUNS[$t]:-0} + 1 ))
    if [[ $t == ours* ]]; then
        start_relay "$WORK/$t.toml" "${PORT[$t]}" || { LOG[$t]=$RELAY_LOG; stop_pid "$RELAY_PID" 5; RELAY_PID=; return 1; }
        PID[$t]=$RELAY_PID; PIDS[$t]=${RELAY_PIDS[*]}; LOG[$t]=$RELAY_LOG
        RELAY_PID=   # compare.sh keeps several of ours running: each is stopped by its PID[]
        return 0
    fi
    LOG[$t]=$WORK/$t.${RUNS[$t]}.log
    "$GO_RELAY_DIR/$t/influxdb-relay" -config "$WORK/$t.toml" </dev/null >"${LOG[$t]}" 2>&1 &
    PID[$t]=$!; PIDS[$t]=$!
    wait_ping "${PORT[$t]}" "${PID[$t]}" "${LOG[$t]}" "$t influxdb-relay"
}
stop_target() {  # NAME
    if [[ $1 == ours* ]]; then stop_pid "${PID[$1]:-}" 15; else stop_pid "${PID[$1]:-}" 10; fi
    PID[$1]=
}
cleanup_add 'for t in "${OURS[@]}" veepee influxdata; do stop_target "$t"; done'
BENCH_PID=
cleanup_add 'if [ -n "$BENCH_PID" ]; then for k in $(children_of "$BENCH_PID"); do kill -TERM "$k" 2>/dev/null; done; stop_pid "$BENCH_PID" 2; fi'

# run_case TARGET ROUND KIND LINES CONNS: one run_http_bench.sh run; progress line to stderr
run_case() {
    local t=$1 r=$2 kind=$3 n=$4 c=$5 log st
    if [ "$t" != ceiling ]; then
        if [ "$kind" = fresh ]; then stop_target "$t"; fi
        if [ -z "${PID[$t]:-}" ] || ! kill -0 "${PID[$t]}" 2>/dev/null; then
            if ! start_target "$t"; then
                NOTES+=("$t did not start for round $r case ${n}x$c; log ${LOG[$t]}:")
                NOTES+=("$(tail -8 "${LOG[$t]}" | sed 's/^/    /')")
                stop_target "$t"
                return 0
            fi
        fi
    fi
    log=$OUT/${t}_${n}x${c}_r${r}${kind#run}.txt
    # shellcheck disable=SC2086
    OUT=$OUT LABEL="$t|$r|$kind" BATCHES=$n CONNS=$c DURATION=$DURATION WARMUP=$WARMUP \
        "$SHARED/run_http_bench.sh" "http://127.0.0.1:${PORT[$t]}" ${PIDS[$t]} >"$log" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" || true
    BENCH_PID=
    printf '    r%s %-10s %s\n' "$r" "$t" "$(grep -v '^#' "$log" | tail -1)" >&2
    grep -E 'pre-flight|wrk failed' "$log" >&2 || true
    if [ "$t" != ceiling ] && ! kill -0 "${PID[$t]}" 2>/dev/null; then
        wait "${PID[$t]}" 2>/dev/null && st=0 || st=$?
        NOTES+=("$t EXITED (status $st) during round $r case ${n}x$c; log ${LOG[$t]}:")
        NOTES+=("$(tail -15 "${LOG[$t]}" | sed 's/^/    /')")
        PID[$t]=
    fi
}

TARGETS=(ceiling "${OURS[@]}" "${GO_TARGETS[@]}")
ALL=()   # "LINESxCONNS KIND"
for cs in $CASES; do ALL+=("$cs run"); done
for cs in $PEAK; do ALL+=("$cs fresh"); done
for t in "${OURS[@]}" "${GO_TARGETS[@]}"; do start_target "$t" || die "$t did not start; log ${LOG[$t]}"; done
say "targets ${TARGETS[*]} on ports $(for t in "${TARGETS[@]}"; do printf '%s ' "${PORT[$t]}"; done)-> sinks :$SINK_A, :$SINK_B;" \
    "$ROUNDS round(s) of ${#ALL[@]} case(s), ${DURATION}s per run (+${WARMUP}s warm-up); work dir $WORK"
for ((r = 1; r <= ROUNDS; r++)); do
    k=$(( (r - 1) % ${#TARGETS[@]} ))
    order=("${TARGETS[@]:k}" "${TARGETS[@]:0:k}")
    say "round $r/$ROUNDS: ${order[*]}"
    for item in "${ALL[@]}"; do
        read -r cs kind <<<"$item"
        for t in "${order[@]}"; do run_case "$t" "$r" "$kind" "${cs%x*}" "${cs#*x}"; done
    done
done
for t in "${OURS[@]}" "${GO_TARGETS[@]}"; do stop_target "$t"; done

# -- the table -------------------------------------------------------------------------------------
PROBLEMS=$(for f in "$WORK"/relay.*.log; do relay_log_problems "$f"; done)
go_log_problems() {  # NAME: count and first lines of a Go relay's logs beyond its start-up lines
    local n
    n=$(cat "$WORK/$1".*.log 2>/dev/null | grep -cvE 'starting relays|Starting HTTP relay|^$' || true)
    [ "${n:-0}" = 0 ] && return 0
    echo "$1 logged $n line(s) besides start-up; first ones:"
    cat "$WORK/$1".*.log | grep -vE 'starting relays|Starting HTTP relay|^$' | head -5 | cut -c1-300 | sed 's/^/    /'
}
for t in "${GO_TARGETS[@]}"; do
    p=$(go_log_problems "$t"); [ -z "$p" ] || PROBLEMS+=${PROBLEMS:+$'\n'}$p
done

cases=()
for item in "${ALL[@]}"; do
    read -r cs kind <<<"$item"
    if [ "$kind" = fresh ]; then cases+=("$cs*"); else cases+=("$cs"); fi
done
echo
describe_setup
for t in "${GO_TARGETS[@]}"; do echo "# $(go_desc "$t")"; done
echo "# wrk on CPU ${WRK_CPU:-any} (1 thread); relays and nginx unpinned; ${DURATION}s per run after ${WARMUP}s warm-up;" \
    "each relay -> 2 nginx sinks (both get every write), ceiling = wrk -> 1 sink"
python3 "$REPO/bench/compare_table.py" "$OUT/results.tsv" "$WORK/rounds.tsv" "${TARGETS[@]}" -- "${cases[@]}"
cat <<EOF
# case = lines per request x wrk connections; * = each relay restarted just before its run (peak RSS).
# ours / Go = ours / the faster Go relay's req/s (v = veepee, i = influxdata); ours / ceil = ours / ceiling.
# relay CPU us/point = the target's CPU time / points (ceil: the nginx sink's own); peak RSS = VmHWM during the run.
# errors = wrk socket errors + timeouts + non-2xx, summed over rounds, per target (c/o/v/i; oN = oursN).
# oursN = our relay with workers = N (CPU and RSS summed over its supervisor and workers); ours2 / ours = their req/s.
# idata = influxdata/influxdb-relay, veepee = veepee-oss/influxdb-relay.
# raw wrk output, results.tsv, rounds.tsv (every run, with CPU per point) and relay logs: $WORK
EOF
for note in "${NOTES[@]}"; do echo "# $note"; done
[ -z "$PROBLEMS" ] || printf '%s\n' "$PROBLEMS" | sed 's/^/# /'
