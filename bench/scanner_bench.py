"""The line scanner alone: nanoseconds a line, pure Python vs C.

    python3 bench/scanner_bench.py [--rounds N] [--ms MS]

Runs this checkout's ``influx_relay`` (the C scanner built in place: ``python3
setup.py build_ext --inplace`` with the Python that runs this, or ``pip
install -e .``). For each body, ``prepare()`` (the relay's hot path, no
filters) and ``scan()`` (filters and UDP) of both scanners are timed in turn,
round after round, so that a busy moment of a shared machine hits both alike;
each figure is the median of the rounds. Bodies of 1, 100 and 5000 lines:

- ``plain``: Telegraf-like lines with timestamps (the body is forwarded as it came);
- ``stamped``: the same lines without timestamps (every line gets one);
- ``escaped``: tags with escaped spaces and commas (no quotes), with timestamps;
- ``quoted``: a string field with spaces and commas, with timestamps.

Not a test: it prints numbers and asserts nothing.
"""

import argparse
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from influx_relay import lineprotocol  # noqa: E402

TS = b"1700000000000000000"


def line(kind, i):
    host = b"host-%03d" % (i % 100)
    fields = b"usage_user=%d.5,usage_idle=%di,usage_system=0.25" % (i % 97, i % 13)
    if kind == "escaped":
        return b"cpu\\ load,host=%s,path=C:\\\\x\\ y,region=eu\\,west %s %d" % (
            host, fields, 1_700_000_000_000_000_000 + i)
    if kind == "quoted":
        return b'log,host=%s msg="GET /x?a=b, 200 in %d ms",code=200i %d' % (
            host, i % 1000, 1_700_000_000_000_000_000 + i)
    if kind == "stamped":
        return b"cpu,host=%s,region=eu,cpu=cpu%d %s" % (host, i % 8, fields)
    return b"cpu,host=%s,region=eu,cpu=cpu%d %s %d" % (
        host, i % 8, fields, 1_700_000_000_000_000_000 + i)


def body(kind, n):
    return b"\n".join(line(kind, i) for i in range(n)) + b"\n"


def per_call_ns(fn, body, ms):
    """Median-free single sample: ns per call of fn(body, TS), over about ``ms``."""
    calls = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn(body, TS)
        took = time.perf_counter_ns() - start
        if took >= ms * 1e6 or calls >= 1 << 20:
            return took / calls
        calls *= 2 if took < ms * 1e5 else max(2, int(ms * 1e6 / max(took, 1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7, help="rounds (medians over them)")
    ap.add_argument("--ms", type=float, default=40.0, help="time per sample, ms")
    args = ap.parse_args()

    try:
        from influx_relay import _lineprotocol as c
    except ImportError as e:
        sys.exit("the C scanner is not built (%s): python3 setup.py build_ext --inplace" % e)
    impls = [("python", lineprotocol.python_prepare, lineprotocol.python_scan),
             ("c", c.prepare, c.scan)]
    cases = [(kind, n) for n in (1, 100, 5000) for kind in ("plain", "stamped", "escaped", "quoted")]
    bodies = {case: body(*case) for case in cases}
    for (kind, n), b in bodies.items():  # the two agree before they are timed
        assert c.scan(b, TS) == lineprotocol.python_scan(b, TS), (kind, n)
        assert c.prepare(b, TS) == lineprotocol.python_prepare(b, TS), (kind, n)

    samples = {}
    for _ in range(args.rounds):
        for case in cases:
            for name, prepare, scan in impls:
                for what, fn in (("prepare", prepare), ("scan", scan)):
                    ns = per_call_ns(fn, bodies[case], args.ms)
                    samples.setdefault((case, name, what), []).append(ns / case[1])

    print("Python %s (%s), %s; C scanner %s" % (
        platform.python_version(), sys.executable, platform.machine(), c.__file__))
    print("load average at the end: %.2f %.2f %.2f; %d rounds, medians, ns a line"
          % (os.getloadavg() + (args.rounds,)))
    print()
    print("%-8s %5s %7s | %10s %8s %7s | %10s %8s %7s" % (
        "body", "lines", "bytes/l", "py prepare", "c prepare", "x", "py scan", "c scan", "x"))
    for case in cases:
        kind, n = case
        m = {k: statistics.median(samples[(case,) + k])
             for k in [("python", "prepare"), ("c", "prepare"), ("python", "scan"), ("c", "scan")]}
        print("%-8s %5d %7.0f | %10.1f %8.1f %7.1f | %10.1f %8.1f %7.1f" % (
            kind, n, len(bodies[case]) / n,
            m["python", "prepare"], m["c", "prepare"], m["python", "prepare"] / m["c", "prepare"],
            m["python", "scan"], m["c", "scan"], m["python", "scan"] / m["c", "scan"]))


if __name__ == "__main__":
    main()
