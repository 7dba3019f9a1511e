#!/bin/bash
# Soak: 10+ minutes of steady writes through the relay while influxd b flaps; prints RSS,
# open fds and greenlets every 30 s, then checks delivery (lost must be 0). See bench/soak.py.
#
#   bash bench/soak.sh                          # 10 minutes, memory buffers
#   bash bench/soak.sh --minutes 30 --buffer disk --seed 7
#   bash bench/soak.sh --help
#
# Sets up the same .venv as the tests (scripts/setup-env.sh: influxd, python3-venv) and runs
# the relay installed there (this checkout, editable). Exit status 1 if a point was lost.
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/../scripts/setup-env.sh"
setup_env
exec "$VENV/bin/python" "$REPO_ROOT/bench/soak.py" "$@"
