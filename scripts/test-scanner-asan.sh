#!/bin/bash
# The C line scanner under AddressSanitizer and UndefinedBehaviorSanitizer:
#   bash scripts/test-scanner-asan.sh [PYTEST ARGS...]
#
# As root on Debian 12: installs gcc, python3-dev, python3-pytest and
# python3-hypothesis when missing, builds influx_relay/_lineprotocol.c with
# -fsanitize=address,undefined in a copy of the tree (the checkout's own build is
# left alone), and runs the scanner's tests there on Debian's python3, with
# libasan preloaded and Python's allocator off (PYTHONMALLOC=malloc), so that
# every body the tests give the C scanner (exact-size buffers included, see
# tests/unit/test_lineprotocol_c.py) is guarded by ASan's redzones. Any
# out-of-bounds read or write, or undefined behaviour, stops the run with a
# report. INFLUX_RELAY_FUZZ=20000 runs that many examples per property.
set -eu
. "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
PY=/usr/bin/python3
ensure_debs gcc python3-dev python3-setuptools python3-pytest python3-hypothesis
WORK=$(mktemp -d /tmp/influx-relay-asan.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
copy_tree "$WORK"
cd "$WORK"
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
say "building the C scanner with $SAN"
CFLAGS="-O1 -g $SAN" LDFLAGS="$SAN" INFLUX_RELAY_REQUIRE_C=1 \
    "$PY" setup.py -q build_ext --inplace >build.log 2>&1 || { cat build.log; die "build failed"; }
so=$(ls influx_relay/_lineprotocol*.so)
ldd "$so" | grep -q libasan || die "$so is not linked with libasan"
# The scanner's tests unless the arguments name test paths themselves.
paths=0
for a in "$@"; do case $a in -*) ;; *) [ -e "${a%%::*}" ] && paths=1 ;; esac; done
# (Python's own scanner runs slowly under ASan: its hostile-body time bound is not checked.)
[ $paths = 1 ] || set -- tests/unit/test_lineprotocol.py tests/unit/test_lineprotocol_properties.py \
    tests/unit/test_lineprotocol_c.py \
    -k "not (test_hostile_bodies_are_scanned_in_bounded_time and python)" "$@"
say "the scanner's tests with $so"
# pytest captures stderr, and an ASan abort loses what it captured: reports go to files.
rc=0
env LD_PRELOAD="$(gcc -print-file-name=libasan.so)" PYTHONMALLOC=malloc \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$WORK/sanitizer" \
    UBSAN_OPTIONS="print_stacktrace=1:log_path=$WORK/sanitizer" \
    PYTHONPATH="$WORK" PYTHONDONTWRITEBYTECODE=1 "$PY" -m pytest -q -p no:cacheprovider "$@" || rc=$?
if ls "$WORK"/sanitizer.* >/dev/null 2>&1; then
    cat "$WORK"/sanitizer.*
    die "the sanitizers reported an error (above)"
fi
exit $rc
