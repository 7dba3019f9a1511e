#!/bin/bash
# The suite on Debian's own python3 and Python packages, which the .deb runs on:
#   bash scripts/test-debian.sh [PYTEST ARGS...]
#
# As root on Debian 12: installs python3-gevent (22.10), python3-urllib3 (1.26),
# python3-click (8.1), python3-prometheus-client (0.16), python3-pytest,
# python3-hypothesis, python3-yaml and prometheus (promtool) when missing, then runs the
# unit and integration tests with /usr/bin/python3 from the checkout (no venv, no pip).
# The system tests need the official influxdb-client, which Debian does not package:
# scripts/test.sh runs them.
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
PY=/usr/bin/python3
# prometheus: promtool, which tests/integration/test_ops_files.py runs on the rules.
ensure_debs python3 python3-gevent python3-urllib3 python3-click python3-prometheus-client \
    python3-pytest python3-hypothesis python3-yaml prometheus
check_machine
cd "$REPO_ROOT"
say "Debian's $($PY --version): gevent $($PY -c 'import gevent; print(gevent.__version__)'), urllib3 $($PY -c 'import urllib3; print(urllib3.__version__)'), click $($PY -c 'import click; print(click.__version__)')"
[ $# -gt 0 ] || set -- tests/unit tests/integration
exec env PYTHONPATH="$REPO_ROOT" PYTHONDONTWRITEBYTECODE=1 "$PY" -m pytest -q -p no:cacheprovider "$@"
