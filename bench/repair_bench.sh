#!/bin/bash
# Repair copy speed (issue 13): a range copied from one influxd to another, next to direct writes.
#   bash bench/repair_bench.sh
#
# Run as root (or with sudo) from a checkout on Debian 12. Installs influxdb, influxdb-client and
# curl when missing, uses the repo's .venv (made like scripts/test.sh makes it when absent). All
# on 127.0.0.1:
#   1. starts two influxd (../shared/bench/influxd_pair.sh; HTTP 8086/7086 or the next free ports
#      whose RPC port P+10002 is free too; their UDP listeners off),
#   2. REPEAT times, each in new databases (bench/repair_bench.py, run with the relay's
#      interpreter on this tree or RELAY_REV): ../shared/bench/send_points.py writes POINTS
#      points (lp_gen.py shapes, unique timestamps) in POSTs of BATCH lines over one connection
#      straight to influxd A, then the same points straight to influxd B; then
#      influx_relay.repair.copy_range copies the whole range from A to B, as the relay's repair
#      does (its outputs, /query chunked, batches of BATCH through B's /write), no rate limit
#      unless RATE; B's count(*) is checked;
#   3. prints one row per run and the medians: points/s of each, and repair / direct to B.
# Stops both influxd on exit, also on failure or Ctrl-C, and deletes their data (logs stay).
# Environment (defaults): POINTS=200000 BATCH=5000 REPEAT=3 RATE=0 (points/s, the
#   repair-rate-limit)  INFLUX_PORTS="8086 7086"  SHARED_BENCH  BENCH_WORK  RELAY_REV  RELAY_PY
#   WAIT_QUIET (see bench/README.md).
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case ${1:-} in -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

POINTS=${POINTS:-200000}
BATCH=${BATCH:-5000}
REPEAT=${REPEAT:-3}
RATE=${RATE:-0}

bench_init repair_bench /usr/bin/influxd:influxdb influx:influxdb-client timeout:coreutils
read -r ia ib <<<"${INFLUX_PORTS:-8086 7086}"
P1=$(pick_port tcp "$ia" 10002:tcp); _TAKEN="$_TAKEN$((P1 + 10002)) "
P2=$(pick_port tcp "$ib" 10002:tcp); _TAKEN="$_TAKEN$((P2 + 10002)) "

cleanup_add "\"$SHARED/influxd_pair.sh\" stop \"$WORK/influxd\" >&2; rm -rf \"$WORK\"/influxd/*/{data,wal,meta}"
UDP=0 "$SHARED/influxd_pair.sh" start "$WORK/influxd" "$P1" "$P2" >&2
DRIVER_PID=
cleanup_add '[ -z "$DRIVER_PID" ] || stop_pid "$DRIVER_PID" 2'
say "influxd A 127.0.0.1:$P1 -> B 127.0.0.1:$P2; $POINTS points x $REPEAT runs; code $RELAY_SRC; work dir $WORK"

results=$WORK/results.jsonl
(cd "$RELAY_SRC" && PYTHONPATH=$RELAY_SRC${PYTHONPATH:+:$PYTHONPATH} exec timeout -k 5 1800 "$PY" \
    "$REPO/bench/repair_bench.py" --a "$P1" --b "$P2" --shared "$SHARED" --points "$POINTS" \
    --batch "$BATCH" --repeat "$REPEAT" --rate "$RATE") >"$results" 2>"$WORK/driver.err" &
DRIVER_PID=$!
st=0; wait "$DRIVER_PID" || st=$?
DRIVER_PID=
[ $st = 0 ] || { tail -20 "$WORK/driver.err" >&2; die "bench/repair_bench.py failed (status $st)"; }

echo
describe_setup
echo "# $POINTS points per run (lp_gen.py shapes: 5 measurements, Telegraf-like), $BATCH lines per POST or batch," \
     "one connection; influxd $(influxd version 2>/dev/null | awk '{print $2}') x2; repair rate limit: ${RATE} (0 = none)"
python3 - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hdr = "%-4s %15s %15s %13s %9s %13s %11s %9s %9s"
print(hdr % ("run", "direct_A_pts/s", "direct_B_pts/s", "repair_pts/s", "repair_s", "repair/dirB",
             "repair_cpu%", "rss_MB", "complete"))
for r in rows:
    print(hdr % (r["run"], r["direct_a_pts_s"], r["direct_b_pts_s"], r["repair_pts_s"], r["repair_s"],
                 "%.0f%%" % (100.0 * r["repair_pts_s"] / r["direct_b_pts_s"]),
                 "%.0f" % (100.0 * r["repair_cpu_s"] / r["repair_s"]), r["rss_peak_mb"],
                 "yes" if r["complete"] else "NO: %s (%s on B)" % (r["reason"], r["on_b"])))
med = {k: statistics.median(r[k] for r in rows) for k in ("direct_a_pts_s", "direct_b_pts_s", "repair_pts_s")}
print("median direct to A %.0f points/s, direct to B %.0f points/s, repair A -> B %.0f points/s (%d run(s))"
      % (med["direct_a_pts_s"], med["direct_b_pts_s"], med["repair_pts_s"], len(rows)))
print("repair / direct write to B: %.0f%%" % (100.0 * med["repair_pts_s"] / med["direct_b_pts_s"]))
EOF
echo "# direct_*: send_points.py's points/s (the client's, until its last answer); repair_pts/s: points copied /"
echo "# time of copy_range (read from A's /query and written to B, both sequential on one connection each);"
echo "# repair_cpu%: the copying process's CPU over that time (100 = one core); rss_MB: its peak RSS. Raw: $WORK"
