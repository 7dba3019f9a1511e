#!/bin/bash
# Lint and type-check:  bash scripts/lint.sh
#
# ruff (pyflakes' checks: unused and undefined names; imports in order) on the package,
# the tests, the benchmarks and the scripts, then mypy on the package, which checks the
# joins between its layers (Response, Request, Output.send, the RetryBuffer protocol, the
# backends' post()) and every call to them. Settings: pyproject.toml. Uses the .venv that
# scripts/test.sh makes (with requirements-dev.txt). Exit status: non-zero on any finding.
set -eu
SETUP_TEST_PACKAGES=1
. "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
setup_env
cd "$REPO_ROOT"
say "ruff check"
"$VENV/bin/ruff" check influx_relay tests bench scripts
say "mypy (the package's joins)"
"$VENV/bin/mypy"
