# Shared set-up for scripts/test.sh and scripts/quickstart.sh; source it, don't run it.
#
#   . scripts/setup-env.sh
#   setup_env            # Debian packages (when missing) + .venv with the relay installed
#
# On a fresh Debian 12 / Ubuntu machine this runs `apt-get update` once and installs
# InfluxDB 1.x (influxd), curl and python3-venv; with SETUP_TEST_PACKAGES=1, as
# scripts/test.sh sets, also what the tests drive: HAProxy, Prometheus (and promtool),
# the `influx` CLI and collectd. When all of them are there it does not touch apt at all.
# The virtualenv .venv (made with the machine's python3) gets requirements.txt and the
# relay itself (`pip install -e .`), and with SETUP_TEST_PACKAGES=1 requirements-dev.txt
# too; pip runs again only when those files, setup.py or the C source changed since
# the last run (`pip install -e .` builds the C line scanner in place when gcc and
# python3-dev are there, which SETUP_TEST_PACKAGES=1 installs; without them the relay
# runs its pure-Python scanner).
#
# Each step prints one line saying what it does, the tool's own progress (packages
# fetched and set up, Python packages collected) and how long it took. A failed step
# prints the last lines of its log and what to check (a proxy, a private CA, a mirror).

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO_ROOT/.venv"
INFLUXD=/usr/bin/influxd
HAPROXY=/usr/sbin/haproxy
SETUP_START=${SETUP_START:-$(date +%s)}

say() { printf '==> [%ss] %s\n' "$(($(date +%s) - SETUP_START))" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# copy_tree DEST: the checkout as git sees it (tracked and new files, nothing
# ignored, uncommitted edits included) copied into DEST.
copy_tree() {
    mkdir -p "$1"
    (cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
        tar --null -T - -cf -) | tar -xf - -C "$1"
}

# Whether python3 has its C headers (to build the C line scanner).
_python_headers() {
    python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        >/dev/null 2>&1
}

# Debian packages the scripts need, for each thing that is missing.
_missing_packages() {
    local pkgs=()
    [ -x "$INFLUXD" ] || pkgs+=(influxdb)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    if ! command -v python3 >/dev/null 2>&1; then
        pkgs+=(python3 python3-venv)
    elif [ ! -x "$VENV/bin/python" ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        pkgs+=(python3-venv)   # Debian's python3 makes no venv with pip without it
    fi
    if [ "${SETUP_TEST_PACKAGES:-0}" != 0 ]; then
        # What the system tests drive: the load balancer of test_haproxy.py, and the
        # clients of test_clients.py (Prometheus remote write, `influx -import`,
        # collectd); promtool checks the alerting rules.
        [ -x "$HAPROXY" ] || pkgs+=(haproxy)
        [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || pkgs+=(prometheus)
        [ -x /usr/bin/influx ] || pkgs+=(influxdb-client)
        [ -x /usr/sbin/collectd ] || pkgs+=(collectd-core)
        # The C line scanner, which the tests test (`pip install -e .` builds it).
        command -v gcc >/dev/null 2>&1 || pkgs+=(gcc)
        _python_headers || pkgs+=(python3-dev)
    fi
    echo "${pkgs[@]}"
}

# _step LOG HINT FILTER CMD...: run CMD with its output appended to LOG, showing
# the lines FILTER (a sed -E script) prints as they come, then how long it took.
# On failure: the last lines of LOG and the hint HINT names (see _hint), then exit 1.
_step() {
    local log=$1 hint=$2 filter=$3 start rc
    shift 3
    start=$(date +%s)
    { "$@" 2>&1; echo "$?" >"$log.rc"; } | tee -a "$log" | sed -n -u -E "$filter" >&2
    rc=$(cat "$log.rc" 2>/dev/null || echo 1)
    rm -f "$log.rc"
    if [ "$rc" = 0 ]; then
        printf '    done in %ss\n' "$(($(date +%s) - start))" >&2
        return 0
    fi
    printf '\nerror: `%s` failed (exit status %s) after %ss; the last lines of %s:\n' \
        "$*" "$rc" "$(($(date +%s) - start))" "$log" >&2
    tail -n 25 "$log" | sed 's/^/    /' >&2
    _hint "$hint" "$log" >&2
    exit 1
}

# What to check when apt or pip cannot fetch, by what its log says.
_hint() {
    local kind=$1 log=$2
    echo
    if [ "$kind" = venv ]; then
        echo "On Debian and Ubuntu, python3 -m venv needs the python3-venv package."
        return 0
    elif [ "$kind" = apt ]; then
        if grep -qiE 'Could not resolve|Temporary failure resolving|Failed to fetch|Connection (timed out|refused)|Unable to connect' "$log"; then
            echo "apt could not reach its mirror."
        fi
        cat <<'EOF'
If this machine reaches the internet through a proxy, tell apt:
    echo 'Acquire::http::Proxy "http://PROXY:PORT/";' > /etc/apt/apt.conf.d/80proxy
(or export http_proxy=http://PROXY:PORT/ before running this). The mirrors are in
/etc/apt/sources.list and /etc/apt/sources.list.d/; `apt-get update` shows which fails.
EOF
    else
        if grep -qiE 'CERTIFICATE_VERIFY_FAILED|SSLError|certificate verify failed' "$log"; then
            echo "pip does not trust the server's certificate (a private CA, or a proxy that inspects TLS?)."
        elif grep -qiE 'ProxyError|Could not resolve|Name or service not known|Temporary failure in name resolution|Connection (refused|timed out)|Max retries exceeded|No matching distribution' "$log"; then
            echo "pip could not reach its package index."
        fi
        cat <<'EOF'
Behind a proxy:          export https_proxy=http://PROXY:PORT/
A private CA:            export PIP_CERT=/path/to/ca-bundle.pem
A mirror of PyPI:        export PIP_INDEX_URL=https://MIRROR/simple
then run this again (pip's whole output is in the log named above).
EOF
    fi
}

# apt's own progress, shortened: one line per package fetched and per package set up
# (errors are in the log's tail, printed on failure).
_APT_FILTER='s/^Get:[0-9]+ [^ ]+ [^ ]+ ([^ ]+ )?([^ ]+) [^ ]+ ([^ ]+) (\[[^]]*\])$/    fetched \2 \3 \4/p
s/^Setting up ([^ ]+) \(([^)]*)\).*/    set up \1 \2/p'
# pip's: one line per distribution collected, and what was installed.
_PIP_FILTER='s/^(Collecting [^ ]+).*/    \1/p
s/^ *(Downloading [^ ]+ \([^)]*\)).*/      \1/p
s/^(Successfully installed .*)/    \1/p'

_log_dir() {
    local d="$REPO_ROOT/.setup-logs"
    mkdir -p "$d" 2>/dev/null || d=${TMPDIR:-/tmp}
    echo "$d"
}

# apt_install PKG...: apt-get update, then install them (as root, or through sudo).
apt_install() {
    local sudo=() log
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here; install by hand: $*"
    log="$(_log_dir)/apt.log"
    : >"$log"
    say "apt-get update (the package lists, for: $*)"
    _step "$log" apt '/^Err:/s/^/    /p' \
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    say "apt-get install $* (and what they depend on)"
    _step "$log" apt "$_APT_FILTER" \
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "$@"
}

install_packages() {
    local pkgs
    pkgs=$(_missing_packages)
    [ -n "$pkgs" ] || return 0
    # shellcheck disable=SC2086
    apt_install $pkgs
    pkgs=$(_missing_packages)
    [ -z "$pkgs" ] || die "still missing after apt-get install: $pkgs"
}

# ensure_debs PKG...: install those of the Debian packages that are missing.
ensure_debs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
}

_stamp() {  # FILE...: a hash of those files, of the python that installs them and of
    # whether the C scanner can be built (gcc and Python.h), so that it is once they come
    (cd "$REPO_ROOT" && cat "$@" 2>/dev/null && python3 --version 2>&1 &&
        command -v gcc 2>&1; _python_headers && echo python-headers) | sha256sum | cut -d' ' -f1
}

# _pip_install STAMP_FILE WHAT PIP_ARGS...: pip install PIP_ARGS into .venv unless the
# stamp says the same files were installed already.
_pip_install() {
    local stamp_file=$1 what=$2 stamp=$3 log
    shift 3
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
        return 0
    fi
    log="$(_log_dir)/pip.log"
    : >"$log"
    say "pip install $what into $VENV"
    (cd "$REPO_ROOT" && _step "$log" pip "$_PIP_FILTER" \
        "$VENV/bin/python" -m pip install --disable-pip-version-check --progress-bar off "$@") \
        || exit 1
    echo "$stamp" >"$stamp_file"
}

make_venv() {
    local log
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
        say "creating virtualenv $VENV with $(command -v python3) ($(python3 --version 2>&1))"
        rm -rf "$VENV"
        log="$(_log_dir)/venv.log"
        : >"$log"
        _step "$log" venv 'd' python3 -m venv "$VENV"
    fi
    # What the relay needs, and the relay itself (editable: the checkout is what runs).
    [ -x "$VENV/bin/influx-relay" ] && (cd / && "$VENV/bin/python" -c 'import influx_relay') 2>/dev/null \
        || rm -f "$VENV/.influx-relay-setup"
    _pip_install "$VENV/.influx-relay-setup" "the relay and requirements.txt" \
        "$(_stamp requirements.txt setup.py influx_relay/_lineprotocol.c)" -r requirements.txt -e .
    # What the tests need besides (pytest, hypothesis, the InfluxDB clients).
    if [ "${SETUP_TEST_PACKAGES:-0}" != 0 ]; then
        _pip_install "$VENV/.influx-relay-setup-dev" "requirements-dev.txt (the test tools)" \
            "$(_stamp requirements.txt requirements-dev.txt setup.py)" -r requirements-dev.txt
    fi
}

# check_machine: what the tests need of the machine itself, each missing thing in one line
# (a fresh debootstrap root, say, has no /etc/hosts: "localhost" does not resolve there).
check_machine() {
    local problems=0
    if ! getent hosts localhost >/dev/null 2>&1; then
        printf 'error: "localhost" does not resolve on this machine; the tests need it: add a line "127.0.0.1 localhost" to /etc/hosts\n' >&2
        problems=1
    fi
    if ! python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); s.close()' 2>/dev/null; then
        printf 'error: cannot bind 127.0.0.1 (no loopback interface up?); the tests listen there: ip link set lo up\n' >&2
        problems=1
    fi
    if [ ! -e /proc/self/fd ]; then
        printf 'error: /proc is not mounted; the tests read process figures from it: mount -t proc proc /proc\n' >&2
        problems=1
    fi
    [ $problems = 0 ] || exit 1
}

setup_env() {
    install_packages
    make_venv
}
