"""Prometheus metrics: ``GET /metrics`` on every HTTP listener.

The data path only bumps plain integers (a dict entry or an attribute per
request, never per point): :class:`ListenerStats` for an HTTP listener,
:class:`OutputMetrics` for an HTTP output, the counters already kept by the UDP
listener and outputs, and :class:`~.output.OutputStats`. At scrape time
:class:`RelayCollector` walks the relay's current listeners and outputs and
turns those numbers into metric families. prometheus_client's own ``Counter``
objects were measured at about 10 times the cost per request under gevent
(see ``bench/metrics_overhead.py``), so the relay does not use them.

A broken metrics path never breaks the data path: the collector logs and
skips what it cannot read, and ``/metrics`` answers 500 rather than raising.
"""

import bisect
import gc
import logging
import time

from greenlet import greenlet

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from . import __version__, workers

log = logging.getLogger(__name__)

PREFIX = "influx_relay_"

#: Upper bounds (seconds) of the direct write latency histogram's buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Results of a direct write to a backend, plus "buffered": queued for a retry.
WRITE_RESULTS = ("ok", "rejected", "failed", "buffered")
RETRY_RESULTS = ("ok", "rejected", "failed")
DROP_REASONS = ("full", "rejected", "expired", "flushed")


class ListenerStats(object):
    """Counters of one HTTP listener, bumped once per request."""

    __slots__ = ("requests", "points", "bytes")

    def __init__(self):
        self.requests = {}  # (path, status text "204") -> count
        self.points = 0
        self.bytes = 0


class OutputMetrics(object):
    """Counters of one HTTP output, bumped once per write (or retried batch)."""

    __slots__ = ("writes", "retries", "latency_buckets", "latency_sum", "up")

    def __init__(self):
        self.writes = dict.fromkeys(WRITE_RESULTS, 0)
        self.retries = dict.fromkeys(RETRY_RESULTS, 0)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.up = True  # until a write to it fails

    def direct(self, result, seconds):
        """A direct write ended with ``result`` ("ok", "rejected" or "failed")."""
        self.writes[result] += 1
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class RequestCounter(object):
    """WSGI middleware counting requests by path and status.

    Paths the app does not route are counted as "other", so a scanner cannot
    grow the label set.
    """

    def __init__(self, app, stats):
        self.app = app
        self.stats = stats

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path not in self.app.routes:
            path = "other"
        requests = self.stats.requests

        def counted(status, headers, exc_info=None):
            key = (path, status[:3])
            requests[key] = requests.get(key, 0) + 1
            return start_response(status, headers, exc_info)

        return self.app(environ, counted)


class Metrics(object):
    """The metrics of one relay: a registry of its own, not the global one."""

    def __init__(self, relay):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RelayCollector(relay))
        self.listeners = {}  # HTTP listener name -> ListenerStats, kept across reloads
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload_ok = 1
        self.last_reload_time = 0.0
        for collector in (ProcessCollector, PlatformCollector):
            try:
                collector(registry=self.registry)
            except Exception:  # pragma: no cover - a platform without /proc, say
                log.debug("metrics: %s unavailable", collector.__name__, exc_info=True)

    def listener_stats(self, name):
        stats = self.listeners.get(name)
        if stats is None:
            stats = self.listeners[name] = ListenerStats()
        return stats

    def forget_listeners(self, keep):
        for name in list(self.listeners):
            if name not in keep:
                del self.listeners[name]

    def reloaded(self, ok):
        self.reloads["ok" if ok else "failed"] += 1
        self.last_reload_ok = int(ok)
        self.last_reload_time = time.time()

    def serve(self, environ, start_response):
        """The WSGI handler of ``GET /metrics``."""
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed",
                           [("Allow", "GET, HEAD"), ("Content-Type", "text/plain"),
                            ("Content-Length", "19")])
            return [b"method not allowed\n"]
        try:
            body = generate_latest(self.registry)
        except Exception:
            log.exception("metrics: cannot render /metrics")
            start_response("500 Internal Server Error",
                           [("Content-Type", "text/plain"), ("Content-Length", "24")])
            return [b"metrics are unavailable\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(body)))])
        return [body] if method == "GET" else []


class RelayCollector(object):
    """Reads the relay's counters at scrape time (a custom prometheus_client collector)."""

    def __init__(self, relay):
        self.relay = relay

    def collect(self):
        families = []
        for part in (self._relay, self._http, self._outputs, self._udp):
            try:
                families.extend(part())
            except Exception:
                log.exception("metrics: collecting %s failed", part.__name__.strip("_"))
        return families

    # Each part builds its families completely before returning any, so a
    # failure halfway never yields a family with half its samples.

    def _relay(self):
        metrics = self.relay.metrics
        info = GaugeMetricFamily(PREFIX + "info", "The relay's version.", labels=["version"])
        info.add_metric([__version__], 1)
        reloads = CounterMetricFamily(PREFIX + "config_reloads",
                                      "Config reloads (SIGHUP) by result.", labels=["result"])
        for result, n in metrics.reloads.items():
            reloads.add_metric([result], n)
        last_ok = GaugeMetricFamily(PREFIX + "config_last_reload_successful",
                                    "1 if the last reload succeeded (or none was tried), else 0.")
        last_ok.add_metric([], metrics.last_reload_ok)
        greenlets = GaugeMetricFamily(
            PREFIX + "greenlets",
            "Greenlets alive in the relay process (counted at scrape time): one that only "
            "grows is a leak.")
        greenlets.add_metric([], count_greenlets())
        idle = GaugeMetricFamily(
            PREFIX + "idle_workers",
            "Greenlets kept to run the next backend requests, waiting (at most %d)."
            % workers.MAX_IDLE)
        idle.add_metric([], workers.idle())
        return [info, reloads, last_ok, greenlets, idle]

    def _http(self):
        requests = CounterMetricFamily(
            PREFIX + "http_requests", "HTTP requests answered, by listener, path and status.",
            labels=["listener", "path", "status"])
        points = CounterMetricFamily(
            PREFIX + "http_points_received",
            "Points accepted in /write requests (before fan-out), by listener.",
            labels=["listener"])
        size = CounterMetricFamily(
            PREFIX + "http_bytes_received",
            "Bytes of line protocol accepted in /write requests (decoded), by listener.",
            labels=["listener"])
        for listener in self.relay.http:
            name = listener.name
            stats = listener.app.stats
            for (path, status), n in list(stats.requests.items()):
                requests.add_metric([name, path, status], n)
            points.add_metric([name], stats.points)
            size.add_metric([name], stats.bytes)
        return [requests, points, size]

    def _outputs(self):
        labels = ["listener", "output"]
        writes = CounterMetricFamily(
            PREFIX + "output_writes",
            "Writes per output by result: direct writes ok/rejected (4xx)/failed "
            "(5xx or no answer), and writes queued in the retry buffer (buffered).",
            labels=labels + ["result"])
        latency = HistogramMetricFamily(
            PREFIX + "output_write_duration_seconds",
            "Time a direct write to the backend took, answered or not.", labels=labels)
        retries = CounterMetricFamily(
            PREFIX + "output_retries",
            "Batches of buffered writes sent again, by result.", labels=labels + ["result"])
        drops = CounterMetricFamily(
            PREFIX + "output_dropped_writes",
            "Buffered (or to-be-buffered) writes dropped, by reason: full buffer, "
            "rejected by the backend on retry, older than buffer-max-age, flushed by an admin.",
            labels=labels + ["reason"])
        up = GaugeMetricFamily(
            PREFIX + "backend_up",
            "1 if the backend's last direct or retried write was answered (2xx or 4xx), "
            "0 if it failed.", labels=labels)
        buffering = GaugeMetricFamily(
            PREFIX + "output_buffer_backlog",
            "1 while the output's writes queue behind a backlog, else 0.", labels=labels)
        buffered_bytes = GaugeMetricFamily(
            PREFIX + "output_buffer_bytes", "Bytes held in the retry buffer.", labels=labels)
        buffered_writes = GaugeMetricFamily(
            PREFIX + "output_buffer_writes", "Writes held in the retry buffer.", labels=labels)
        oldest = GaugeMetricFamily(
            PREFIX + "output_buffer_oldest_age_seconds",
            "Age of the oldest write in the retry buffer (0 when empty).", labels=labels)
        limit = GaugeMetricFamily(
            PREFIX + "output_buffer_limit_bytes", "Size limit of the retry buffer.",
            labels=labels)
        coalesced = CounterMetricFamily(
            PREFIX + "output_coalesced_requests",
            "Requests that carried several concurrent writes merged into one; split: "
            "those the backend refused (4xx), whose writes were sent again one by one.",
            labels=labels + ["result"])
        coalesced_writes = CounterMetricFamily(
            PREFIX + "output_coalesced_writes",
            "Direct writes that went to the backend merged with others.", labels=labels)
        for listener in self.relay.http:
            for output in listener.app.fanout.outputs:
                key = [listener.name, output.name]
                m = output.metrics
                for result, n in m.writes.items():
                    writes.add_metric(key + [result], n)
                for result, n in m.retries.items():
                    retries.add_metric(key + [result], n)
                cumulative, buckets = 0, []
                for bound, n in zip(LATENCY_BUCKETS + (float("inf"),), m.latency_buckets):
                    cumulative += n
                    buckets.append((_bound(bound), cumulative))
                latency.add_metric(key, buckets, m.latency_sum)
                up.add_metric(key, 1 if m.up else 0)
                stats = output.stats
                for reason in DROP_REASONS:
                    drops.add_metric(key + [reason], getattr(stats, "dropped_" + reason))
                status = output.status()
                buffering.add_metric(key, 1 if status.get("backlog") else 0)
                if status.get("buffer", True) is not None:
                    buffered_bytes.add_metric(key, status.get("buffered_bytes", 0))
                    buffered_writes.add_metric(key, status.get("buffered_writes", 0))
                    oldest.add_metric(key, status.get("oldest_age_seconds", 0))
                    limit.add_metric(key, status.get("limit_bytes", 0))
                coalescer = getattr(output.backend, "coalescer", None)
                if coalescer is not None:
                    c = coalescer.stats
                    coalesced.add_metric(key + ["sent"], c.requests)
                    coalesced.add_metric(key + ["split"], c.split)
                    coalesced_writes.add_metric(key, c.writes)
        return [writes, latency, retries, drops, up, buffering, buffered_bytes,
                buffered_writes, oldest, limit, coalesced, coalesced_writes]

    def _udp(self):
        received = CounterMetricFamily(
            PREFIX + "udp_packets_received", "Datagrams received, by listener.",
            labels=["listener"])
        malformed = CounterMetricFamily(
            PREFIX + "udp_packets_malformed",
            "Datagrams dropped because they were not line protocol, by listener.",
            labels=["listener"])
        sent = CounterMetricFamily(
            PREFIX + "udp_packets_sent", "Datagrams sent, by listener and output.",
            labels=["listener", "output"])
        dropped = CounterMetricFamily(
            PREFIX + "udp_dropped",
            "Lines longer than the output's mtu and datagrams that could not be sent, "
            "by listener and output.", labels=["listener", "output"])
        for listener in self.relay.udp:
            received.add_metric([listener.name], getattr(listener, "received", 0))
            malformed.add_metric([listener.name], listener.malformed)
            for output in listener.outputs:
                sent.add_metric([listener.name, output.name], output.sent)
                dropped.add_metric([listener.name, output.name], output.dropped)
        return [received, malformed, sent, dropped]


def count_greenlets():
    """Greenlets not yet finished, the hub and the main one included, but not
    the workers waiting for a job (see :mod:`.workers`).

    gevent keeps no registry of its greenlets, so this walks the objects the
    garbage collector tracks: about 8 ms per 100,000 objects, only when
    /metrics is scraped, never on the data path.
    """
    alive = sum(1 for o in gc.get_objects() if isinstance(o, greenlet) and not o.dead)
    return alive - workers.idle()


def _bound(value):
    """A bucket bound as the exposition format writes it ("0.005", "+Inf")."""
    if value == float("inf"):
        return "+Inf"
    return repr(float(value))
