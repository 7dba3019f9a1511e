"""What counting a request costs: plain integers vs prometheus_client objects.

    python3 bench/metrics_overhead.py

Under gevent (the relay monkey-patches threading, so prometheus_client's locks
are gevent locks). Prints nanoseconds per request for the bookkeeping one
/write does on the hot path: a request counter, an output result counter and
a latency histogram observation.
"""

from gevent import monkey

monkey.patch_all()

import bisect  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import timeit  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from prometheus_client import CollectorRegistry, Counter, Histogram  # noqa: E402

from influx_relay.metrics import LATENCY_BUCKETS, OutputMetrics  # noqa: E402

registry = CollectorRegistry()
requests = Counter("requests", "", ["listener", "path", "status"], registry=registry)
writes = Counter("writes", "", ["listener", "output", "result"], registry=registry)
latency = Histogram("latency", "", ["listener", "output"], registry=registry,
                    buckets=LATENCY_BUCKETS)
bound = (requests.labels("l", "/write", "204"), writes.labels("l", "o", "ok"),
         latency.labels("l", "o"))
counts = {}
output = OutputMetrics()


def plain_ints():
    key = ("/write", "204")
    counts[key] = counts.get(key, 0) + 1
    output.direct("ok", 0.0123)


def prometheus_labels():
    requests.labels("l", "/write", "204").inc()
    writes.labels("l", "o", "ok").inc()
    latency.labels("l", "o").observe(0.0123)


def prometheus_bound_children():
    bound[0].inc()
    bound[1].inc()
    bound[2].observe(0.0123)


def main(n=200000):
    assert bisect  # the plain path uses it inside OutputMetrics.direct
    for f in (plain_ints, prometheus_labels, prometheus_bound_children):
        t = min(timeit.repeat(f, number=n, repeat=5)) / n
        print("%-28s %6.0f ns per request" % (f.__name__, t * 1e9))


if __name__ == "__main__":
    main()
