#!/bin/bash
# See the relay do its job on this machine:  bash scripts/quickstart.sh [--no-wait]
#
# On Debian 12 / Ubuntu, as root (or with sudo): installs InfluxDB 1.x, curl and
# python3-venv when missing and makes .venv with the relay (what it needs to run,
# not the test tools: scripts/test.sh adds those), then
#   1. starts two InfluxDB servers in a temporary directory, on 127.0.0.1:8086 and
#      127.0.0.1:7086 (the next free ports when those are taken), with database "quickstart",
#   2. starts `influx-relay run` on 127.0.0.1:9096 with both servers as outputs,
#   3. writes a point through the relay with curl and shows it in both servers,
#   4. leaves the relay running in the foreground: Ctrl-C stops it and both servers,
#      and prints the commands to run the relay yourself and to run the tests.
# --no-wait stops everything after step 3 (exit status 0 when the point reached both).
set -eu
WAIT=1
for arg in "$@"; do
    case $arg in
        --no-wait) WAIT=0 ;;
        -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

. "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
setup_env

WORK=$(mktemp -d "${TMPDIR:-/tmp}/influx-relay-quickstart.XXXXXX")
PIDS=()
cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
# The exact commands to go on with (influx-relay is in .venv/bin, not on PATH).
next_steps() {
    local r=$REPO_ROOT
    [ "$PWD" != "$REPO_ROOT" ] || r=.
    cat >&2 <<EOF

Next, from $REPO_ROOT:
    cp sample.toml relay.toml                  # then edit its [[http]] outputs
    $r/.venv/bin/influx-relay check --config relay.toml
    $r/.venv/bin/influx-relay run --config relay.toml
  influx-relay is in $VENV/bin, not on PATH; \`. $r/.venv/bin/activate\` puts it
  there for this shell. The README's "Running it" has other ways (pipx, the .deb).
    bash $r/scripts/test.sh                      # the tests (installs what they need)
EOF
}
trap cleanup EXIT
trap 'echo; say "stopping the relay and both InfluxDB servers"; next_steps; exit 0' INT TERM

port_free() {  # TCP port $1 on 127.0.0.1 can be bound now
    python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null
}
pick_port() {  # $1, or the next free port above it that none of the others ($2...) uses
    local p=$1; shift
    while ! port_free "$p" || [[ " $* " == *" $p "* ]]; do p=$((p + 1)); done
    echo "$p"
}
wait_ping() {  # port, what, pid, log
    for _ in $(seq 200); do
        [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ping")" = 204 ] && return 0
        kill -0 "$3" 2>/dev/null || break
        sleep 0.05
    done
    echo "error: $2 did not come up on 127.0.0.1:$1; last lines of $4:" >&2
    tail -20 "$4" >&2
    exit 1
}

taken=()
start_influxd() {  # name, wanted HTTP port; sets PORT
    local name=$1 port rpc d
    port=$(pick_port "$2" "${taken[@]}"); taken+=("$port")
    rpc=$(pick_port $((port + 10002)) "${taken[@]}"); taken+=("$rpc")
    d="$WORK/$name"; mkdir -p "$d"
    cat > "$d/influxdb.conf" <<EOF
reporting-enabled = false
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$d/meta"
[data]
  dir = "$d/data"
  wal-dir = "$d/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
[continuous_queries]
  enabled = false
EOF
    "$INFLUXD" run -config "$d/influxdb.conf" </dev/null >"$d/influxd.log" 2>&1 &
    PIDS+=($!)
    wait_ping "$port" "influxd $name" $! "$d/influxd.log"
    curl -s -m 5 -o /dev/null -XPOST "http://127.0.0.1:$port/query" \
        --data-urlencode 'q=CREATE DATABASE quickstart'
    say "InfluxDB $name: http://127.0.0.1:$port (data in $d), database \"quickstart\" created"
    PORT=$port
}

start_influxd one 8086; P1=$PORT
start_influxd two 7086; P2=$PORT
RELAY=$(pick_port 9096 "${taken[@]}")

cat > "$WORK/relay.toml" <<EOF
# One HTTP listener; every write goes to both InfluxDB servers.
[[http]]
name = "quickstart"
bind-addr = "127.0.0.1:$RELAY"
output = [
    { name = "one", location = "http://127.0.0.1:$P1/write", timeout = "10s" },
    { name = "two", location = "http://127.0.0.1:$P2/write", timeout = "10s" },
]
EOF
say "relay config $WORK/relay.toml:"
sed 's/^/    /' "$WORK/relay.toml" >&2
"$VENV/bin/influx-relay" run --config "$WORK/relay.toml" </dev/null 2>"$WORK/relay.log" &
RELAY_PID=$!
PIDS=("$RELAY_PID" "${PIDS[@]}")   # stop the relay first
wait_ping "$RELAY" "influx-relay" "$RELAY_PID" "$WORK/relay.log"
say "influx-relay: http://127.0.0.1:$RELAY (pid $RELAY_PID)"

echo
LINE='cpu,host=quickstart,region=eu usage_idle=93.5,usage_user=4.25'
echo "\$ curl -i -XPOST 'http://127.0.0.1:$RELAY/write?db=quickstart' --data-binary '$LINE'"
status=$(curl -s -m 10 -o "$WORK/write.out" -w '%{http_code}' -XPOST \
    "http://127.0.0.1:$RELAY/write?db=quickstart" --data-binary "$LINE")
echo "HTTP $status $(cat "$WORK/write.out")"
[ "$status" = 204 ] || { echo "error: the relay did not accept the write; its log:" >&2; cat "$WORK/relay.log" >&2; exit 1; }

show_rows() {  # port; prints the rows of cpu, returns 1 while there are none
    curl -s -m 5 -G "http://127.0.0.1:$1/query" --data-urlencode db=quickstart \
        --data-urlencode 'q=SELECT * FROM cpu' --data-urlencode epoch=ns \
    | python3 -c 'import json, sys
series = json.load(sys.stdin)["results"][0].get("series") or sys.exit(1)
for s in series:
    print("    " + "  ".join("%-20s" % c for c in s["columns"]))
    for row in s["values"]:
        print("    " + "  ".join("%-20s" % v for v in row))'
}
ok=1
for port in "$P1" "$P2"; do
    echo
    echo "\$ curl -G 'http://127.0.0.1:$port/query' --data-urlencode db=quickstart --data-urlencode 'q=SELECT * FROM cpu'"
    found=0
    for _ in $(seq 50); do show_rows "$port" 2>/dev/null && { found=1; break; }; sleep 0.1; done
    [ $found = 1 ] || { echo "    (no rows: the write did not reach 127.0.0.1:$port)"; ok=0; }
done
echo
if [ $ok = 1 ]; then
    say "the point reached both servers, with the same timestamp (the relay stamped it)"
else
    echo "error: the point is missing from a server; relay log:" >&2; cat "$WORK/relay.log" >&2
    exit 1
fi

if [ $WAIT = 0 ]; then
    say "--no-wait: stopping the relay and both InfluxDB servers"
    next_steps
    exit 0
fi
cat <<EOF

The relay is running on http://127.0.0.1:$RELAY. In another terminal, write through it:
    curl -i -XPOST 'http://127.0.0.1:$RELAY/write?db=quickstart' --data-binary 'cpu,host=me usage_idle=50'
and read from either server (queries go to the databases, not to the relay):
    curl -G 'http://127.0.0.1:$P1/query?db=quickstart' --data-urlencode 'q=SELECT * FROM cpu'
    curl -G 'http://127.0.0.1:$P2/query?db=quickstart' --data-urlencode 'q=SELECT * FROM cpu'
Press Ctrl-C to stop the relay and both servers. The relay's log follows.

EOF
tail -n +1 -f "$WORK/relay.log" --pid "$RELAY_PID" >&2 &
PIDS+=($!)
wait "$RELAY_PID" && status=0 || status=$?
say "the relay exited (status $status); its log is above"
exit 1
