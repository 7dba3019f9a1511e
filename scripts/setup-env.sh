# Shared set-up for scripts/test.sh and scripts/quickstart.sh; source it, don't run it.
#
#   . scripts/setup-env.sh
#   setup_env            # Debian packages (when missing) + .venv with the relay installed
#
# On a fresh Debian 12 / Ubuntu machine this runs `apt-get update` once and installs
# InfluxDB 1.x (influxd), curl and python3-venv (and HAProxy with SETUP_TEST_PACKAGES=1,
# as scripts/test.sh sets); when all of them are already there it
# does not touch apt at all. The virtualenv .venv (made with the machine's python3) gets
# requirements-dev.txt and the relay itself (`pip install -e .`, which builds the C line
# scanner in place); pip runs again only when requirements*.txt, setup.py or the C source
# changed since the last run.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$REPO_ROOT/.venv"
INFLUXD=/usr/bin/influxd
HAPROXY=/usr/sbin/haproxy

say() { printf '==> %s\n' "$*" >&2; }
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
    # The load balancer of tests/system/test_haproxy.py: for the tests only.
    [ "${SETUP_TEST_PACKAGES:-0}" = 0 ] || [ -x "$HAPROXY" ] || pkgs+=(haproxy)
    # The C line scanner, which the tests test (`pip install -e .` builds it; without
    # a compiler the relay falls back to its pure-Python scanner).
    if [ "${SETUP_TEST_PACKAGES:-0}" != 0 ]; then
        command -v gcc >/dev/null 2>&1 || pkgs+=(gcc)
        _python_headers || pkgs+=(python3-dev)
    fi
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    if ! command -v python3 >/dev/null 2>&1; then
        pkgs+=(python3 python3-venv)
    elif [ ! -x "$VENV/bin/python" ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        pkgs+=(python3-venv)   # Debian's python3 makes no venv with pip without it
    fi
    echo "${pkgs[@]}"
}

# apt_install PKG...: apt-get update, then install them (as root, or through sudo).
apt_install() {
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: $*"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here; install by hand: $*"
    say "installing Debian packages: $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
        && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
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

_requirements_stamp() {
    (cd "$REPO_ROOT" && cat requirements.txt requirements-dev.txt setup.py \
        influx_relay/_lineprotocol.c 2>/dev/null \
        && python3 --version 2>&1) | sha256sum | cut -d' ' -f1
}

make_venv() {
    local stamp_file="$VENV/.influx-relay-setup" stamp
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
        say "creating virtualenv $VENV with $(command -v python3) ($(python3 --version 2>&1))"
        rm -rf "$VENV"
        python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"
    fi
    stamp=$(_requirements_stamp)
    if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] \
        && "$VENV/bin/python" -c 'import influx_relay' 2>/dev/null; then
        return 0   # nothing changed since the last install
    fi
    say "installing requirements-dev.txt and the relay into $VENV"
    (cd "$REPO_ROOT" \
        && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt \
        && "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e .) \
        || die "pip install failed"
    echo "$stamp" > "$stamp_file"
}

setup_env() {
    install_packages
    make_venv
}
