"""Workers answering for the whole relay: each serves its own view on a unix
socket, and merges its peers' views into the answers of /status, /health,
/metrics and /admin/flush (see :mod:`.supervisor`).

The control socket serves, for one listener (``?listener=NAME``): ``GET
/status`` (its outputs, this worker only), ``GET /health/<output>`` (the
readiness), ``POST /admin/flush[?output=]``, and ``GET /metrics`` (the whole
worker). It lives in a directory only the relay's user can enter.
"""

import json
import logging
import os
import socket
from urllib.parse import parse_qs, urlencode

import gevent
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from .errors import BackendError
from .httpclient import ConnectionPool
from .httpserver import HTTPServer
from .responses import Response, json_response

log = logging.getLogger(__name__)

#: Seconds a peer has to answer before its part is left out (and said so).
PEER_TIMEOUT = 5.0


class Peers(object):
    """This worker's control socket, and the way to its peers'."""

    def __init__(self, worker, relay):
        self.worker = worker
        self.relay = relay
        self.server = None
        self._pools = {}

    # -- serving our own view ---------------------------------------------------------

    def serve(self):
        path = self.worker.socket_path()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(64)
        from gevent import socket as gsocket
        self.server = HTTPServer(gsocket.socket(fileno=sock.detach()), self.local,
                                 read_timeout=30.0, max_connections=64)
        self.server.start()

    def local(self, request):
        """The control socket's application: this worker's view only."""
        params = parse_qs(request.query)
        path = request.path
        if path == "/metrics":
            return self.relay.metrics.serve(request)
        name = params.get("listener", [""])[0]
        app = next((lst.app for lst in self.relay.http if lst.name == name), None)
        if app is None:
            return json_response(404, {"error": "no http listener named %s" % name[:100]})
        if path == "/status":
            return json_response(200, app.local_status())
        if path.startswith("/health/"):
            return app.local_health(path[len("/health/"):])
        if path == "/admin/flush":
            return json_response(200, {"flushed": app.local_flush(params.get("output"))})
        if path == "/admin/repair":
            if request.method == "POST":
                job, _ = app.local_repair(params.get("output"))
            else:
                job = app.repairer.job
                if job is None:
                    return json_response(404, {"error": "no repair has run"})
            return json_response(200, {"repair": job.as_dict()})
        return json_response(404, {"error": "not found"})

    def close(self):
        if self.server is not None:
            self.server.stop(timeout=0)
            self.server = None
        for pool in self._pools.values():
            pool.close()

    # -- asking the others ---------------------------------------------------------------

    def ask(self, method, path, listener=None, **params):
        """Every other worker's answer to ``path``: ``[(index, status, body)]``;
        a worker that does not answer is left out, and logged."""
        if listener is not None:
            params["listener"] = listener
        target = path + ("?" + urlencode(params, doseq=True) if params else "")
        others = [i for i in range(self.worker.count) if i != self.worker.index]
        jobs = [gevent.spawn(self._ask_one, i, method, target) for i in others]
        gevent.joinall(jobs)
        return [job.value for job in jobs if job.value is not None]

    def _ask_one(self, index, method, target):
        pool = self._pools.get(index)
        if pool is None:
            pool = self._pools[index] = ConnectionPool("localhost", 0, 4, PEER_TIMEOUT,
                                                       unix_path=self.worker.socket_path(index))
        try:
            with gevent.Timeout(PEER_TIMEOUT):
                r = pool.request(method, target)
        except (gevent.Timeout, OSError, ValueError, BackendError) as e:
            log.warning("worker %d: no answer from worker %d for %s: %s", self.worker.index,
                        index, target, e or "timed out")
            return None
        return index, r.status, r.body


# -- merging what the workers say -------------------------------------------------------

_SUM = ("buffered_bytes", "buffered_writes", "limit_bytes", "retries", "replayed_bytes",
        "replayed_batches", "coalesced_requests", "coalesced_writes", "coalesced_split")
_STATE_ORDER = {"down": 2, "replaying": 1, "ok": 0}
_READY_ORDER = {"down": 3, "lagging": 2, "gap": 1, "ready": 0}


def merge_outputs(views):
    """The outputs of one listener as every worker sees them, as one."""
    merged = {}
    for view in views:
        for name, o in view.items():
            m = merged.get(name)
            if m is None:
                merged[name] = json.loads(json.dumps(o))  # a copy
                continue
            for key, value in o.items():
                if key in _SUM or key.startswith("dropped_"):
                    m[key] = m.get(key, 0) + (value or 0)
            m["oldest_age_seconds"] = max(m.get("oldest_age_seconds") or 0,
                                          o.get("oldest_age_seconds") or 0)
            if _STATE_ORDER.get(o.get("state"), 0) > _STATE_ORDER.get(m.get("state"), 0):
                m["state"] = o["state"]
            m["backlog"] = m.get("backlog") or o.get("backlog")
            m["direct"] = m.get("direct") and o.get("direct")
            m["up"] = m.get("up") and o.get("up")
            gaps, other = m.setdefault("gaps", {"points": 0, "ranges": []}), o.get("gaps") or {}
            gaps["points"] += other.get("points", 0)
            gaps["ranges"] = sorted(gaps["ranges"] + other.get("ranges", []),
                                    key=lambda r: (r["db"], r["rp"], r["start"]))
            m["replay"] = _merge_replay(m.get("replay"), o.get("replay"))
    return merged


def _merge_replay(a, b):
    if not a or not b:
        return a or b
    out = dict(a)
    for key in ("delivered_bytes", "delivered_points", "backlog_bytes", "points_per_s"):
        out[key] = a.get(key, 0) + b.get(key, 0)
    total = out["delivered_bytes"] + out["backlog_bytes"]
    out["percent"] = round(100.0 * out["delivered_bytes"] / total, 1) if total else 100.0
    etas = [x.get("eta_s") for x in (a, b) if x.get("eta_s") is not None]
    out["eta_s"] = max(etas) if etas else None
    out["running_s"] = max(a.get("running_s", 0), b.get("running_s", 0))
    return out


def merge_readiness(views):
    """One output's readiness as every worker sees it: ready only if all say so."""
    merged = {"status": "ready"}
    reasons = []
    for v in views:
        if _READY_ORDER.get(v.get("status"), 0) > _READY_ORDER[merged["status"]]:
            merged["status"] = v["status"]
        if v.get("status") != "ready":
            for key in ("backlog_bytes", "gap_points"):
                merged[key] = merged.get(key, 0) + v.get(key, 0)
            merged["oldest_s"] = max(merged.get("oldest_s", 0), v.get("oldest_s", 0))
            if v.get("reason") and v["reason"] not in reasons:
                reasons.append(v["reason"])
    if merged["status"] != "ready":
        for key in ("backlog_bytes", "gap_points", "oldest_s"):
            merged.setdefault(key, 0)
        merged["reason"] = "; ".join(reasons)
    return merged


def merge_repairs(views):
    """Every worker's repair job, as one."""
    merged = dict(views[0])
    states = [v.get("state") for v in views]
    merged["state"] = ("running" if "running" in states else "failed" if "failed" in states
                       else "stopped" if "stopped" in states else "done")
    for key in ("ranges", "ranges_done", "points_total", "points_copied", "points_per_s"):
        merged[key] = sum(v.get(key, 0) for v in views)
    merged["outputs"] = sorted({o for v in views for o in v.get("outputs", [])})
    merged["tasks"] = [t for v in views for t in v.get("tasks", [])]
    etas = [v.get("eta_s") for v in views if v.get("eta_s") is not None]
    merged["eta_s"] = max(etas) if etas else None
    merged["running_s"] = max(v.get("running_s", 0) for v in views)
    return merged


def merge_flushed(views):
    merged = {}
    for view in views:
        for name, f in view.items():
            m = merged.setdefault(name, {"writes": 0, "bytes": 0})
            m["writes"] += f.get("writes", 0)
            m["bytes"] += f.get("bytes", 0)
    return merged


# Gauges that are not a sum of the workers' values.
_GAUGE_RULES = {
    "influx_relay_output_buffer_oldest_age_seconds": max,
    "influx_relay_backend_up": min,
    "influx_relay_config_last_reload_successful": min,
    "influx_relay_info": max,
    "process_start_time_seconds": min,
    "process_max_fds": min,
    "python_info": max,
}


class _Merged(object):
    """A collector of families merged from several expositions."""

    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def merge_metrics(texts):
    """Prometheus text from every worker, as one exposition: counters and
    histograms summed, gauges summed but for those of _GAUGE_RULES."""
    order, families = [], {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = (family, {})
                order.append(family.name)
            _, samples = merged
            rule = _GAUGE_RULES.get(family.name, sum) if family.type == "gauge" else sum
            for s in family.samples:
                key = (s.name, tuple(sorted(s.labels.items())))
                if key in samples:
                    samples[key] = (s, rule((samples[key][1], s.value)))
                else:
                    samples[key] = (s, s.value)
    out = []
    for name in order:
        family, samples = families[name]
        family.samples = [s._replace(value=v) for s, v in samples.values()]
        out.append(family)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(out))
    return generate_latest(registry)


def metrics_response(body):
    from prometheus_client import CONTENT_TYPE_LATEST
    return Response(200, body, CONTENT_TYPE_LATEST)
