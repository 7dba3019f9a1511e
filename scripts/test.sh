#!/bin/bash
# Set up (once) and run the whole test suite:  bash scripts/test.sh [PYTEST ARGS...]
#
# Run from anywhere as root (or with sudo) on Debian 12 / Ubuntu. Installs InfluxDB 1.x,
# curl, python3-venv and what the tests drive (HAProxy, Prometheus and promtool, the
# `influx` CLI, collectd) when they are missing, makes .venv with the relay and
# requirements-dev.txt (see scripts/setup-env.sh; each step shows its progress), then
# runs `python -m pytest tests -q` plus your arguments, e.g.
#   bash scripts/test.sh tests/system -x
# The system tests start their own influxd and relay processes on free 127.0.0.1 ports.
# Exit status is pytest's.
set -eu
SETUP_TEST_PACKAGES=1
. "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
setup_env
check_machine
cd "$REPO_ROOT"
# `tests` unless the arguments name test paths themselves (tests/system, tests/unit/x.py::t).
paths=0
for a in "$@"; do case $a in -*) ;; *) [ -e "${a%%::*}" ] && paths=1 ;; esac; done
[ $paths = 1 ] || set -- tests "$@"
exec "$VENV/bin/python" -m pytest -q "$@"
