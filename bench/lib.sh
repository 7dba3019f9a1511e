# Shared helpers for bench/*.sh; source it, don't run it.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   bench_init http_bench wrk nginx curl    # Debian packages it needs, then the Python env
#
# After bench_init: REPO (the checkout), SHARED (../shared/bench or $SHARED_BENCH), PY (a
# Python with the relay's requirements), WORK (a fresh directory for configs, logs and raw
# results; $BENCH_WORK to choose it). start_relay / stop_relay run the relay from the checkout
# (PYTHONPATH=$REPO, so the code under test is this tree, whatever .venv has installed), or
# from commit $RELAY_REV when that is set.
# Everything listens on 127.0.0.1 only. cleanup_add registers a command for the EXIT trap.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${SHARED_BENCH:-$(dirname "$REPO")/shared/bench}
# apt_install and setup_env (the test suite's .venv) come from there.
# shellcheck disable=SC1091
. "$REPO/scripts/setup-env.sh"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# -- cleanup ---------------------------------------------------------------------------------

_CLEANUP=()
cleanup_add() { _CLEANUP+=("$*"); }
_run_cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # last registered first: load generators, then the relay, then the sinks
    for ((i = ${#_CLEANUP[@]} - 1; i >= 0; i--)); do eval "${_CLEANUP[$i]}" || true; done
    exit $rc
}

# Stop a process we started (TERM, then KILL after $2 seconds, default 15), and its children.
stop_pid() {
    local pid=$1 grace=${2:-15} kids
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(children_of "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq $((grace * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    # shellcheck disable=SC2086
    [ -z "$kids" ] || kill -KILL $kids 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

children_of() {  # direct children of a pid (no procps needed)
    cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep . || true
}

# -- set-up ----------------------------------------------------------------------------------

# Install the Debian packages that are missing (as root, or through sudo): "cmd:package" pairs.
ensure_packages() {
    local want=() pair cmd pkg
    for pair in "$@"; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        if [ "${cmd:0:1}" = / ]; then [ -x "$cmd" ] && continue
        else command -v "$cmd" >/dev/null 2>&1 && continue; fi
        [[ " ${want[*]} " == *" $pkg "* ]] || want+=("$pkg")
    done
    [ ${#want[@]} -eq 0 ] || apt_install "${want[@]}"
}

_py_ok() {  # $1 can import what the relay needs
    "$1" -c 'import sys, gevent, urllib3, click
if sys.version_info < (3, 11): import tomli' >/dev/null 2>&1
}

# PY: the repo's .venv when it works; else .venv made the way scripts/setup-env.sh makes it
# (the test suite's venv); else the machine's python3 when it has the requirements.
setup_python() {
    if _py_ok "$REPO/.venv/bin/python"; then PY=$REPO/.venv/bin/python; return 0; fi
    if [ -f "$REPO/scripts/setup-env.sh" ]; then
        # shellcheck disable=SC1091
        . "$REPO/scripts/setup-env.sh"
        if type setup_env >/dev/null 2>&1; then
            say "making $REPO/.venv with scripts/setup-env.sh"
            ( setup_env ) || die "scripts/setup-env.sh failed"
            _py_ok "$REPO/.venv/bin/python" && { PY=$REPO/.venv/bin/python; return 0; }
        fi
    fi
    if _py_ok python3; then PY=$(command -v python3); return 0; fi
    say "making $REPO/.venv with requirements.txt"
    python3 -m venv "$REPO/.venv" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$REPO/.venv/bin/python" -m pip install -q --disable-pip-version-check -r "$REPO/requirements.txt" \
        || die "pip install -r requirements.txt failed"
    _py_ok "$REPO/.venv/bin/python" || die "$REPO/.venv still cannot import gevent/urllib3/click"
    PY=$REPO/.venv/bin/python
}

# relay_python KIND: set PY to the interpreter the relay runs on, and PY_DESC to a description.
#   repo-venv    the repo's .venv (the machine's python3, as the tests use; setup_python above)
#   debian-venv  bench/.venv-debian: a venv of Debian's /usr/bin/python3 (the interpreter the
#                .deb runs on) with requirements.txt from PyPI; made on first use, remade when
#                requirements.txt changes
#   debian-apt   /usr/bin/python3 with Debian's python3-gevent, -urllib3, -click and
#                -prometheus-client: exactly the .deb's dependencies (installed when missing)
#   /path        that interpreter (it must import gevent, urllib3 and click)
DEBIAN_VENV=$REPO/bench/.venv-debian
relay_python() {
    local kind=$1 stamp
    case $kind in
    repo-venv)
        setup_python ;;
    debian-venv)
        [ -x /usr/bin/python3 ] || apt_install python3
        /usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_install python3-venv
        stamp=$(sha256sum < "$REPO/requirements.txt" | cut -c1-16)
        if ! _py_ok "$DEBIAN_VENV/bin/python" || [ "$(cat "$DEBIAN_VENV/.stamp" 2>/dev/null)" != "$stamp" ]; then
            say "making $DEBIAN_VENV: /usr/bin/python3 -m venv, pip install -r requirements.txt"
            rm -rf "$DEBIAN_VENV"
            /usr/bin/python3 -m venv "$DEBIAN_VENV" || die "/usr/bin/python3 -m venv failed"
            "$DEBIAN_VENV/bin/python" -m pip install -q --disable-pip-version-check \
                -r "$REPO/requirements.txt" >"$DEBIAN_VENV.pip.log" 2>&1 \
                || { tail -20 "$DEBIAN_VENV.pip.log" >&2; die "pip install into $DEBIAN_VENV failed"; }
            echo "$stamp" > "$DEBIAN_VENV/.stamp"
        fi
        PY=$DEBIAN_VENV/bin/python ;;
    debian-apt)
        ensure_debs python3 python3-gevent python3-urllib3 python3-click python3-prometheus-client
        PY=/usr/bin/python3 ;;
    /*)
        PY=$kind ;;
    *)
        die "RELAY_PY=$kind: expected repo-venv, debian-venv, debian-apt or /path/to/python" ;;
    esac
    _py_ok "$PY" || die "$PY cannot import gevent, urllib3 and click (RELAY_PY=$kind)"
    PY_DESC="$kind: $PY -> $(readlink -f "$PY") ($("$PY" -c 'import sys; print(sys.version.split()[0])'))"
}

# bench_init NAME [cmd:package...]
# The relay's interpreter: RELAY_PY (see relay_python), default $BENCH_RELAY_PY or repo-venv.
bench_init() {
    local name=$1; shift
    [ -d "$SHARED" ] || die "shared bench harness not found at $SHARED (set SHARED_BENCH)"
    ensure_packages python3:python3 curl:curl "$@"
    if [ "${RELAY_PY:-${BENCH_RELAY_PY:-repo-venv}}" = repo-venv ]; then
        python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || [ -x "$REPO/.venv/bin/python" ] \
            || ensure_packages /nonexistent-python3-venv:python3-venv
    fi
    relay_python "${RELAY_PY:-${BENCH_RELAY_PY:-repo-venv}}"
    [ -z "${WAIT_QUIET:-}" ] || wait_quiet "$WAIT_QUIET"
    LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg)
    WORK=${BENCH_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/influx-relay-$name.XXXXXX")}
    mkdir -p "$WORK"
    # RELAY_REV=HEAD (any commit): measure that commit, exported to $WORK/src, not the working
    # tree (which others may be editing while the benchmark runs).
    RELAY_SRC=$REPO
    if [ -n "${RELAY_REV:-}" ]; then
        mkdir -p "$WORK/src"
        # setup.py too: it builds the C line scanner (prepare_scanner)
        if git -C "$REPO" cat-file -e "$RELAY_REV:setup.py" 2>/dev/null; then
            git -C "$REPO" archive "$RELAY_REV" influx_relay setup.py | tar -x -C "$WORK/src" \
                || die "cannot export influx_relay/ and setup.py at $RELAY_REV"
        else
            git -C "$REPO" archive "$RELAY_REV" influx_relay | tar -x -C "$WORK/src" \
                || die "cannot export influx_relay/ at $RELAY_REV"
        fi
        RELAY_SRC=$WORK/src
    fi
    prepare_scanner
    trap _run_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# prepare_scanner: which line scanner the relay runs with, SCANNER=c (the default) or python.
#   c       the C extension (influx_relay/_lineprotocol.c), built for $PY with
#           `INFLUX_RELAY_REQUIRE_C=1 $PY setup.py build_ext --inplace` in the tree that is run
#           (log: $WORK/build_ext.log), installing gcc and python3-dev when missing. A RELAY_REV
#           export is built in place; the working tree is first copied to $WORK/src (others'
#           checkout is not written to), so RELAY_SRC is then that copy. A commit without the C
#           scanner runs its pure-Python one (the header says so).
#   python  INFLUX_RELAY_PURE_PYTHON=1 in the relay's environment: the pure-Python scanner.
# Sets SCANNER_DESC ("c", "python (...)") for the header; dies if SCANNER=c does not give "c".
prepare_scanner() {
    local suffix inc
    SCANNER=${SCANNER:-c}
    case $SCANNER in
    python)
        export INFLUX_RELAY_PURE_PYTHON=1 ;;
    c)
        unset INFLUX_RELAY_PURE_PYTHON
        if [ ! -f "$RELAY_SRC/influx_relay/_lineprotocol.c" ]; then
            SCANNER_NOTE="no C scanner at this commit"
        else
            if [ "$RELAY_SRC" = "$REPO" ]; then
                mkdir -p "$WORK/src"
                tar -C "$REPO" -c --exclude=__pycache__ --exclude='*.so' --exclude=build \
                    influx_relay setup.py | tar -x -C "$WORK/src" \
                    || die "cannot copy the working tree to $WORK/src"
                RELAY_SRC=$WORK/src
                say "working tree copied to $RELAY_SRC (to build the C scanner there)"
            fi
            command -v gcc >/dev/null 2>&1 || apt_install gcc
            inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
            [ -f "$inc/Python.h" ] || apt_install python3-dev
            [ -f "$inc/Python.h" ] || die "no Python.h in $inc for $PY (python3-dev is for /usr/bin/python3 only)"
            "$PY" -c 'import setuptools' >/dev/null 2>&1 \
                || "$PY" -m pip install -q --disable-pip-version-check setuptools >"$WORK/build_ext.log" 2>&1 \
                || die "$PY has no setuptools and pip could not install it; see $WORK/build_ext.log"
            say "building the C line scanner for $PY in $RELAY_SRC (log $WORK/build_ext.log)"
            (cd "$RELAY_SRC" && INFLUX_RELAY_REQUIRE_C=1 "$PY" setup.py -q build_ext --inplace) \
                >>"$WORK/build_ext.log" 2>&1 \
                || { tail -20 "$WORK/build_ext.log" >&2; die "the C line scanner did not build; see $WORK/build_ext.log"; }
            suffix=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
            [ -f "$RELAY_SRC/influx_relay/_lineprotocol$suffix" ] \
                || die "no influx_relay/_lineprotocol$suffix after build_ext; see $WORK/build_ext.log"
        fi ;;
    *)
        die "SCANNER=$SCANNER: expected c or python" ;;
    esac
    SCANNER_DESC=$(cd "$RELAY_SRC" && PYTHONPATH=$RELAY_SRC${PYTHONPATH:+:$PYTHONPATH} "$PY" -c '
from influx_relay import lineprotocol as l
impl = getattr(l, "IMPLEMENTATION", None)
why = getattr(l, "PYTHON_REASON", None)
print(impl if impl and not why else "%s (%s)" % (impl or "python", why or "no IMPLEMENTATION"))') \
        || die "cannot import influx_relay.lineprotocol from $RELAY_SRC with $PY"
    [ -z "${SCANNER_NOTE:-}" ] || SCANNER_DESC="python ($SCANNER_NOTE)"
    case $SCANNER:$SCANNER_DESC in
    c:c|python:python*) ;;
    c:python\ \(no\ C\ scanner*) say "scanner: $SCANNER_DESC" ;;
    *) die "SCANNER=$SCANNER but the relay's scanner is: $SCANNER_DESC" ;;
    esac
}

wait_quiet() {  # LOAD: wait (5 min at most) until the 1-minute load average is below LOAD
    local l
    for _ in $(seq 60); do
        l=$(cut -d' ' -f1 /proc/loadavg)
        awk -v l="$l" -v m="$1" 'BEGIN{exit !(l < m)}' && return 0
        say "load average $l >= $1: waiting for a quieter machine (WAIT_QUIET)"
        sleep 5
    done
    say "load average still $(cut -d' ' -f1 /proc/loadavg) after 5 min; measuring anyway"
}

describe_setup() {  # one comment line: what is measured, where
    local rev dirty
    if [ -n "${RELAY_REV:-}" ]; then
        rev=$(git -C "$REPO" rev-parse --short "$RELAY_REV^{commit}" 2>/dev/null || echo "$RELAY_REV"); dirty=
    else
        rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
        dirty=$(git -C "$REPO" status --porcelain -- influx_relay 2>/dev/null | grep -q . && echo '+dirty' || true)
    fi
    printf '# %s  influx-relay %s%s  %s  scanner %s  gevent %s  urllib3 %s\n' "$(date -u +%FT%TZ)" "$rev" "$dirty" \
        "$("$PY" -c 'import platform; print("python", platform.python_version())')" "${SCANNER_DESC:-?}" \
        "$("$PY" -c 'import gevent; print(gevent.__version__)')" \
        "$("$PY" -c 'import urllib3; print(urllib3.__version__)')"
    printf '# relay interpreter (RELAY_PY=%s), line scanner (SCANNER=%s): %s\n' "${PY_DESC:-$PY}" \
        "${SCANNER:-c}" "${SCANNER_DESC:-?}"
    printf '# %s cores (%s), %s MB RAM, kernel %s\n' "$(nproc)" \
        "$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)" \
        "$(awk '/^MemTotal/{printf "%d", $2/1024}' /proc/meminfo)" "$(uname -r)"
    # other work on the machine skews everything: say how busy it was before we started
    printf '# load average (1/5/15 min) before the run: %s, now: %s\n' "${LOADAVG_START:-?}" \
        "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# -- ports -----------------------------------------------------------------------------------

port_free() {  # port_free tcp|udp PORT: it can be bound on 127.0.0.1 now
    python3 -c 'import socket, sys
kind = socket.SOCK_STREAM if sys.argv[1] == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
if kind == socket.SOCK_STREAM: s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[2])))' "$1" "$2" 2>/dev/null
}

_TAKEN=" "
# pick_port PROTO WANTED [OFFSET:PROTO...]: WANTED or the next port above it that is free
# (and whose PORT+OFFSET companions are free too), not already handed out by this script.
pick_port() {
    local proto=$1 p=$2 ok extra off; shift 2
    for _ in $(seq 200); do
        ok=1
        [[ $_TAKEN == *" $p "* ]] && ok=0
        [ $ok = 1 ] && ! port_free "$proto" "$p" && ok=0
        for extra in "$@"; do
            [ $ok = 1 ] || break
            off=${extra%%:*}
            port_free "${extra#*:}" $((p + off)) || ok=0
        done
        if [ $ok = 1 ]; then _TAKEN="$_TAKEN$p "; echo "$p"; return 0; fi
        p=$((p + 1))
    done
    die "no free $proto port found from $2 on"
}

wait_ping() {  # PORT PID LOG WHAT: wait (10 s at most) for 204 on /ping
    for _ in $(seq 200); do
        [ "$(curl -s -m 1 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ping")" = 204 ] && return 0
        [ -z "$2" ] || kill -0 "$2" 2>/dev/null || break
        sleep 0.05
    done
    echo "error: $4 did not answer /ping on 127.0.0.1:$1; last lines of $3:" >&2
    tail -20 "$3" >&2
    return 1
}

# -- sinks -----------------------------------------------------------------------------------

# start_sinks DIR PORT...: one nginx sink (../shared/bench/nginx_sink.sh) serving every PORT,
# stopped on exit; waits for each port's /ping. Sets SINK_PIDS (its worker).
start_sinks() {
    local dir=$1 p; shift
    "$SHARED/nginx_sink.sh" start "$dir" "$@" >&2
    cleanup_add "\"$SHARED/nginx_sink.sh\" stop \"$dir\" >&2"
    SINK_PIDS=$(children_of "$(cat "$dir/nginx.pid")")
    for p in "$@"; do wait_ping "$p" "" "$dir/logs/error.log" "nginx sink" || return 1; done
}

# relay_config FILE PORT SINK_PORT...: our relay on 127.0.0.1:PORT with outputs a, b, ... (one
# per sink, defaults otherwise).
relay_config() {
    local file=$1 port=$2 name=a p; shift 2
    {
        printf '# generated by bench/%s\n[[http]]\nname = "bench"\nbind-addr = "127.0.0.1:%s"\n' \
            "$(basename "$0")" "$port"
        for p in "$@"; do
            printf '\n[[http.output]]\nname = "%s"\nlocation = "http://127.0.0.1:%s/"\n' "$name" "$p"
            name=$(echo "$name" | tr 'a-y' 'b-z')
        done
    } > "$file"
}

# -- the relay -------------------------------------------------------------------------------

RELAY_PID=
RELAY_RUNS=0
# start_relay CONFIG [HTTP_PORT]: run the checkout's relay; sets RELAY_PID and RELAY_PIDS (the
# relay and any worker processes it forked), logs to $WORK/relay.N.log (RELAY_LOG).
start_relay() {
    local conf=$1 port=${2:-}
    RELAY_RUNS=$((RELAY_RUNS + 1))
    RELAY_LOG=$WORK/relay.$RELAY_RUNS.log
    if [ "${RELAY_COPIES:-1}" -gt 1 ]; then  # an experiment: see bench/reuseport_relay.py
        (cd "$RELAY_SRC" && PYTHONPATH=$RELAY_SRC${PYTHONPATH:+:$PYTHONPATH} \
            exec "$PY" "$REPO/bench/reuseport_relay.py" "$RELAY_COPIES" "$conf") </dev/null >"$RELAY_LOG" 2>&1 &
    else
        (cd "$RELAY_SRC" && PYTHONPATH=$RELAY_SRC${PYTHONPATH:+:$PYTHONPATH} exec "$PY" -m influx_relay run --config "$conf") \
            </dev/null >"$RELAY_LOG" 2>&1 &
    fi
    RELAY_PID=$!
    if [ -n "$port" ]; then
        wait_ping "$port" "$RELAY_PID" "$RELAY_LOG" "influx-relay" || return 1
    else
        sleep 1
        kill -0 "$RELAY_PID" 2>/dev/null || { tail -20 "$RELAY_LOG" >&2; return 1; }
    fi
    sleep 0.3
    # workers = N: the supervisor answers nothing itself; wait (15 s at most) until it says all N
    # are serving, so that RELAY_PIDS has every worker (CPU and RSS are summed over them).
    local want
    want=$(awk -F= '/^\[/ {exit} $1 ~ /^ *workers *$/ {gsub(/[ "]/, "", $2); print $2}' "$conf")
    if [ -n "$want" ] && [ "$want" != 1 ]; then
        for _ in $(seq 150); do
            grep -q 'workers serving' "$RELAY_LOG" && break
            kill -0 "$RELAY_PID" 2>/dev/null || break
            sleep 0.1
        done
        grep -q 'workers serving' "$RELAY_LOG" || { tail -20 "$RELAY_LOG" >&2; return 1; }
    fi
    # shellcheck disable=SC2207
    RELAY_PIDS=("$RELAY_PID" $(children_of "$RELAY_PID"))
}
stop_relay() {
    [ -n "$RELAY_PID" ] || return 0
    stop_pid "$RELAY_PID" 15
    RELAY_PID=
}

relay_log_problems() {  # LOG: one line about tracebacks/errors in the relay's log, if any
    local tb er wa
    [ -f "$1" ] || return 0
    tb=$(grep -c '^Traceback' "$1" || true)
    er=$(grep -ciE '\b(error|critical)\b' "$1" || true)
    wa=$(grep -ci '\bwarning\b' "$1" || true)
    if [ "${tb:-0}" != 0 ] || [ "${er:-0}" != 0 ] || [ "${wa:-0}" != 0 ]; then
        echo "relay log $1: $tb traceback(s), $er error line(s), $wa warning line(s); first ones:"
        grep -m 5 -iE '^Traceback|\b(error|critical|warning)\b' "$1" | cut -c1-300 | sed 's/^/    /'
    fi
}

proc_cpu_ticks() {  # utime+stime of the given pids, in clock ticks
    local t=0 p f
    for p in "$@"; do
        [ -r /proc/"$p"/stat ] || continue
        f=$(sed 's/^.*) //' /proc/"$p"/stat)
        # shellcheck disable=SC2086
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    echo $t
}
proc_rss_mb() {  # FIELD (VmRSS|VmHWM) PIDs: sum in MB
    local field=$1 s=0 p v; shift
    for p in "$@"; do
        v=$(awk -v f="$field:" '$1 == f {print $2}' /proc/"$p"/status 2>/dev/null); s=$((s + ${v:-0}))
    done
    awk -v k=$s 'BEGIN{printf "%.1f", k/1024}'
}

median() {  # numbers on stdin -> median (or "-")
    sort -g | awk '{a[NR]=$1} END{if (!NR) {print "-"; exit}
        m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; print m}'
}
