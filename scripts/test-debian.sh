#!/bin/bash
# The suite on Debian's own python3 and Python packages, which the .deb runs on:
#   bash scripts/test-debian.sh [PYTEST ARGS...]
#
# As root on Debian 12: installs python3-gevent (22.10), python3-urllib3 (1.26),
# python3-click (8.1), python3-prometheus-client (0.16), python3-pytest,
# python3-hypothesis, python3-yaml and prometheus (promtool) when missing, then runs the
# unit and integration tests with /usr/bin/python3 (no venv, no pip).
# The system tests need the official influxdb-client, which Debian does not package:
# scripts/test.sh runs them.
#
# The C line scanner is built for that python3 (gcc and python3-dev, as the .deb
# is), in a copy of the tree in a temporary directory where the tests then run: an
# in-place build in the checkout belongs to .venv's Python, and would be stale
# or foreign here.
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
PY=/usr/bin/python3
# prometheus: promtool, which tests/integration/test_ops_files.py runs on the rules;
# python3-snappy: real snappy blocks for tests/unit/test_ledger.py.
ensure_debs python3 python3-gevent python3-urllib3 python3-click python3-prometheus-client \
    python3-pytest python3-hypothesis python3-yaml python3-snappy prometheus python3-setuptools \
    python3-dev gcc
check_machine
WORK=$(mktemp -d /tmp/influx-relay-debian.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
copy_tree "$WORK"
cd "$WORK"
(INFLUX_RELAY_REQUIRE_C=1 "$PY" setup.py -q build_ext --inplace >build.log 2>&1) ||
    { cat build.log; die "the C line scanner did not build with $PY"; }
say "Debian's $($PY --version): gevent $($PY -c 'import gevent; print(gevent.__version__)'), urllib3 $($PY -c 'import urllib3; print(urllib3.__version__)'), click $($PY -c 'import click; print(click.__version__)'); line scanner: $(PYTHONPATH="$WORK" $PY -c 'from influx_relay import lineprotocol as l; print(l.IMPLEMENTATION)')"
[ $# -gt 0 ] || set -- tests/unit tests/integration
rc=0
env PYTHONPATH="$WORK" PYTHONDONTWRITEBYTECODE=1 "$PY" -m pytest -q -p no:cacheprovider "$@" || rc=$?
exit $rc
