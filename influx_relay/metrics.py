"""Prometheus metrics: ``GET /metrics`` on every HTTP listener.

The data path only bumps plain integers (a dict entry or an attribute per
request, never per point): each HTTP listener's
:class:`~.http_listener.ListenerStats`, each HTTP output's
:class:`~.output.OutputCounters`, the counters the UDP listener and outputs
keep. At scrape time :class:`RelayCollector` reads the relay's current
listeners (a callable gives them) and turns those numbers into metric families. prometheus_client's own ``Counter``
objects were measured at about 10 times the cost per request under gevent
(see ``bench/metrics_overhead.py``), so the relay does not use them.

A broken metrics path never breaks the data path: the collector logs and
skips what it cannot read, and ``/metrics`` answers 500 rather than raising.
"""

import gc
import logging
import time

from greenlet import greenlet
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from . import __version__, workers
from .output import DROP_REASONS, LATENCY_BUCKETS
from .responses import Response

log = logging.getLogger(__name__)

PREFIX = "influx_relay_"


class Metrics(object):
    """The metrics of one relay: a registry of its own, not the global one.

    ``listeners()`` returns the relay's listeners at the moment it is called.
    """

    def __init__(self, listeners):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RelayCollector(self, listeners))
        self.listeners = {}  # HTTP listener name -> its stats, kept across reloads
        self.reloads = {"ok": 0, "failed": 0}
        self.last_reload_ok = 1
        self.last_reload_time = 0.0
        for collector in (ProcessCollector, PlatformCollector):
            try:
                collector(registry=self.registry)
            except Exception:  # pragma: no cover - a platform without /proc, say
                log.debug("metrics: %s unavailable", collector.__name__, exc_info=True)

    def listener_stats(self, name, make):
        """The stats of HTTP listener ``name``, made with ``make()`` the first time."""
        stats = self.listeners.get(name)
        if stats is None:
            stats = self.listeners[name] = make()
        return stats

    def forget_listeners(self, keep):
        for name in list(self.listeners):
            if name not in keep:
                del self.listeners[name]

    def reloaded(self, ok):
        self.reloads["ok" if ok else "failed"] += 1
        self.last_reload_ok = int(ok)
        self.last_reload_time = time.time()

    def serve(self, request):
        """The handler of ``GET /metrics``."""
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n", "text/plain", (("Allow", "GET, HEAD"),))
        try:
            body = generate_latest(self.registry)
        except Exception:
            log.exception("metrics: cannot render /metrics")
            return Response(500, b"metrics are unavailable\n", "text/plain")
        return Response(200, body, CONTENT_TYPE_LATEST)


class RelayCollector(object):
    """Reads the relay's counters at scrape time (a custom prometheus_client collector)."""

    def __init__(self, metrics, listeners):
        self.metrics = metrics
        self.listeners = listeners

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
        metrics = self.metrics
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
        for listener in self._of("http"):
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
            "Writes another backend took that this one will not get, by reason: full buffer, "
            "rejected by the backend on retry, older than buffer-max-age, flushed by an admin, "
            "missed (failed, and no retry buffer).",
            labels=labels + ["reason"])
        gaps = GaugeMetricFamily(
            PREFIX + "gap_points",
            "Points of writes another output stored that this one misses (the gap ledger), "
            "until a repair copies them.", labels=labels)
        in_flight = GaugeMetricFamily(
            PREFIX + "output_in_flight_bytes",
            "Bytes of write bodies being sent to the backend right now (bounded per output).",
            labels=labels)
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
        for listener in self._of("http"):
            for output in listener.outputs:
                key = [listener.name, output.name]
                c = output.counters
                for result, n in c.writes.items():
                    writes.add_metric(key + [result], n)
                for result, n in c.retries.items():
                    retries.add_metric(key + [result], n)
                cumulative, buckets = 0, []
                for bound, n in zip(LATENCY_BUCKETS + (float("inf"),), c.latency_buckets):
                    cumulative += n
                    buckets.append((_bound(bound), cumulative))
                latency.add_metric(key, buckets, c.latency_sum)
                up.add_metric(key, 1 if c.up else 0)
                for reason in DROP_REASONS:
                    drops.add_metric(key + [reason], c.dropped[reason])
                in_flight.add_metric(key, output.in_flight_bytes)
                gaps.add_metric(key, output.ledger.points(output.who))
                status = output.status()
                buffering.add_metric(key, 1 if status.get("backlog") else 0)
                if status.get("buffer", True) is not None:
                    buffered_bytes.add_metric(key, status.get("buffered_bytes", 0))
                    buffered_writes.add_metric(key, status.get("buffered_writes", 0))
                    oldest.add_metric(key, status.get("oldest_age_seconds", 0))
                    limit.add_metric(key, status.get("limit_bytes", 0))
                merged = output.coalesce_stats
                if merged is not None:
                    coalesced.add_metric(key + ["sent"], merged.requests)
                    coalesced.add_metric(key + ["split"], merged.split)
                    coalesced_writes.add_metric(key, merged.writes)
        return [writes, latency, retries, drops, up, buffering, buffered_bytes,
                buffered_writes, oldest, limit, in_flight, gaps, coalesced, coalesced_writes]

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
        for listener in self._of("udp"):
            received.add_metric([listener.name], getattr(listener, "received", 0))
            malformed.add_metric([listener.name], listener.malformed)
            for output in listener.outputs:
                sent.add_metric([listener.name, output.name], output.sent)
                dropped.add_metric([listener.name, output.name], output.dropped)
        return [received, malformed, sent, dropped]


    def _of(self, kind):
        return [listener for listener in self.listeners() if listener.kind == kind]


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
