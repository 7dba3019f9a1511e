"""The HTTP listener: InfluxDB's /write, /api/v2/write and /ping, served by gevent.

Also: /api/v1/prom/write (passed through as-is), /health, /status, and, when
``admin-enabled``, /admin and /admin/flush; when ``query-enabled``, /query,
/api/v2/query and /api/v1/prom/read (see :mod:`.query`).

:class:`WriteApp` holds the request rules: it takes a
:class:`~.httpserver.Request` and returns a :class:`~.responses.Response`.
:class:`HTTPListener` serves it with the lean server of :mod:`.httpserver`
(a bounded pool, a read timeout and, with ``ssl-combined-pem``, TLS).
"""

import base64
import hmac
import json
import logging
import math
import os
import ssl
import time
import zlib
from collections import deque
from datetime import datetime, timezone
from urllib.parse import parse_qs, parse_qsl, quote, urlencode

import gevent
from gevent import socket as gsocket
from gevent.event import Event

from . import __version__, admin, apiv2, ledger as ledger_mod, lineprotocol, logs, peers as peers_mod
from .errors import LineProtocolError
from .filters import Router
from .httpserver import BodyError, HTTPServer, Request
from .query import Reads
from .ratelimit import TokenBucket
from .repairer import Repairer
from .responses import WRITTEN, Response, error_response, json_response

log = logging.getLogger(__name__)

#: Connections one listener serves at once; more wait in the kernel's backlog,
#: and each that is accepted then lets go of an idle one (see httpserver.ConnectionPool).
MAX_CONNECTIONS = 1000

#: Bytes of write bodies (as sent: their Content-Length) one listener takes in at
#: once. A write that would go past it waits, its body unread in the kernel
#: (TCP slows the client down), until earlier writes are answered; a single
#: write larger than this still goes, alone. Chunked bodies count as
#: CHUNKED_CHARGE. This bounds the relay's memory when clients send faster
#: than the backends take: about 2.5 times this, plus a fixed ~40 MB.
MAX_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024
CHUNKED_CHARGE = 1024 * 1024

VERSION = "relay-%s" % __version__
#: InfluxDB sends its build flavour too; clients look for "cloud" in it to pick
#: Cloud-only APIs. The relay fronts OSS servers and answers as one.
BUILD = "OSS"
#: Headers of every answer, as InfluxDB sends them.
COMMON_HEADERS = (("X-Influxdb-Version", VERSION), ("X-Influxdb-Build", BUILD))


class RequestError(Exception):
    """A request the relay answers itself, with ``status`` and ``message``."""

    def __init__(self, status, message, headers=()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = list(headers)


class ListenerStats(object):
    """Counters of one HTTP listener, bumped once per request."""

    __slots__ = ("requests", "points", "bytes")

    def __init__(self):
        self.requests = {}  # (path, status text "204") -> count
        self.points = 0
        self.bytes = 0


class WriteApp(object):
    """The application of one ``[[http]]`` section: ``app(request) -> Response``.

    ``stats`` counts its requests (paths it does not route count as "other", so
    a scanner cannot grow the label set); ``routes`` adds handlers of its own
    kind (``handler(request) -> Response``), such as /metrics.
    """

    def __init__(self, cfg, fanout, stats=None, routes=None, peers=None, ledger=ledger_mod.NULL):
        self.cfg = cfg
        self.fanout = fanout
        self.max_body_size = cfg.max_body_size
        self.limiter = TokenBucket(cfg.rate_limit, cfg.burst_limit) if cfg.rate_limit else None
        self.router = Router(fanout.outputs) or None
        self.started = time.time()
        self.has_v1_outputs = any(o.api != "v2" for o in cfg.outputs)
        self.has_v2_outputs = any(o.api == "v2" for o in cfg.outputs)
        self.stats = stats if stats is not None else ListenerStats()
        #: With workers, the way to the other workers' views (see :mod:`.peers`).
        self.peers = peers
        self.ledger = ledger
        self.repairer = Repairer(self, ledger)
        self.routes = {
            "/write": self.write,
            "/api/v2/write": self.write_v2,
            "/ping": self.ping,
            "/ready": self.ready,
            "/status": self.status,
            "/admin/flush": self.flush,
            "/admin/repair": self.repair,
            "/health": self.health,
            "/admin": self.admin,
            "/api/v1/prom/write": self.prom_write,
        }
        if cfg.query_enabled:
            self.reads = Reads(cfg, fanout.outputs, self.read_body,
                               self.peer_readiness if peers is not None else None)
            self.routes.update({"/query": self.query, "/api/v2/query": self.query_v2,
                                "/api/v1/prom/read": self.prom_read})
        self.routes.update(routes or {})
        self.bounded = (self.write, self.write_v2, self.prom_write)
        self.budget = ByteBudget(MAX_BODY_BYTES_IN_FLIGHT)
        self._warn_us = logs.Throttled(log)

    @property
    def outputs(self):
        return self.fanout.outputs

    def __call__(self, request: Request) -> Response:
        path = request.path
        handler = self.routes.get(path)
        if handler is None and path.startswith("/health/"):
            handler, path = self.output_health, "/health/<output>"
        charge = 0
        try:
            if handler is None:
                raise RequestError(404, "not found")
            if handler in self.bounded and request.method == "POST":
                charge = _charge(request, self.max_body_size)
                self.budget.take(charge)
            response = handler(request)
        except RequestError as e:
            response = error_response(e.status, e.message, e.headers)
        finally:
            if charge:
                self.budget.give(charge)
        key = (path if handler is not None else "other", str(response.status))
        requests = self.stats.requests
        requests[key] = requests.get(key, 0) + 1
        return response

    # -- /ping -------------------------------------------------------------

    def ping(self, request):
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD", request.method)
        if parse_qs(request.query).get("verbose", [""])[0].lower() in ("true", "1"):
            return json_response(200, {"version": VERSION})
        return Response(self.cfg.default_ping_response, b"", "")

    # -- /health -----------------------------------------------------------

    def health(self, request):
        """Ping every output's backend; 200 healthy or problem, 503 critical."""
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD", request.method)
        status, report = admin.health(self.fanout.outputs, self.cfg.health_timeout_ms / 1000.0)
        return json_response(status, report)

    def output_health(self, request):
        """``/health/<output>``: 200 ``{"status": "ready"}`` when that output's
        backend may serve reads (answers its ping, no backlog, no gap), else 503
        with why: for a load balancer sending /query only to complete replicas."""
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD", request.method)
        name = request.path[len("/health/"):]
        mine = self.local_health(name)
        if self.peers is None or mine.status == 404:
            return mine
        views = [json.loads(mine.body)] + [json.loads(body) for _, _, body in self.peers.ask(
            "GET", "/health/" + quote(name, safe=""), listener=self.cfg.name)]
        missing = self.peers.worker.count - len(views)
        if missing:  # what a worker holds is unknown: no one vouches for it
            views.append({"status": "down", "reason": "%d worker(s) of %d did not answer"
                          % (missing, self.peers.worker.count)})
        merged = peers_mod.merge_readiness(views)
        return json_response(200 if merged["status"] == "ready" else 503, merged)

    def local_health(self, name):
        """Readiness of output ``name`` as this process sees it."""
        output = next((o for o in self.fanout.outputs if o.name == name), None)
        if output is None:
            return error_response(404, "no output named %s" % name[:100])
        ready = output.readiness(self.cfg.health_cache_ms / 1000.0,
                                 self.cfg.health_timeout_ms / 1000.0)
        return json_response(200 if ready.status == "ready" else 503, ready.as_dict())

    # -- rate limit and admin switch ---------------------------------------

    def check_rate(self):
        """Take a token for a write request, or answer 429 with Retry-After."""
        if self.limiter is not None:
            wait = self.limiter.take()
            if wait:
                raise RequestError(429, "rate limit exceeded",
                                   [("Retry-After", str(max(1, math.ceil(wait))))])

    def check_admin(self, request):
        """/admin* are off (404) unless admin-enabled; with admin-token, the
        client must send it as ``Authorization: Bearer <token>`` (401)."""
        if not self.cfg.admin_enabled:
            raise RequestError(404, "not found")
        token = self.cfg.admin_token
        if token is None:
            return
        scheme, _, given = request.header("authorization").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode("utf-8"), token.encode("utf-8")
        ):
            log.warning("refused an admin request from %s: no valid admin token",
                        request.remote)
            raise RequestError(401, "authorization failed",
                               [("WWW-Authenticate", 'Bearer realm="influx-relay admin"')])

    # -- /admin ------------------------------------------------------------

    def admin(self, request):
        """Send a query (``q``, in a form body or the query string) to every
        backend's query endpoint, with the client's credentials."""
        self.check_admin(request)
        if request.method != "POST":
            return _not_allowed("POST", request.method)
        params = request.form(self.read_body(request))
        if params is None:
            raise RequestError(415, "send q as a form field (application/"
                                    "x-www-form-urlencoded) or in the query string")
        # As InfluxDB (Go's FormValue): the form body before the query string.
        params += parse_qsl(request.query, keep_blank_values=True)
        q = next((v for k, v in params if k == "q"), "")
        if not q.strip():
            raise RequestError(400, 'missing required parameter "q"')
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        auth = request.header("authorization")
        if auth and self.cfg.admin_token is None:  # else it holds our token, not InfluxDB's
            headers["Authorization"] = auth
        rest = urlencode([(k, v) for k, v in params if k != "q"])
        response, outcome = admin.query(
            self.fanout.outputs, rest, urlencode([("q", q)]).encode("utf-8"), headers)
        log.info("admin query from %s: %s", request.remote, outcome)
        return response._replace(headers=tuple(response.headers) + (("X-Relay-Backends", outcome),))

    # -- /status and /admin/flush -------------------------------------------

    def status(self, request):
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD", request.method)
        body = self.local_status()
        if self.peers is not None:
            views = [body["outputs"]] + [json.loads(b)["outputs"] for _, _, b in
                                         self.peers.ask("GET", "/status", listener=self.cfg.name)]
            body["outputs"] = peers_mod.merge_outputs(views)
            body["workers"] = self.peers.worker.count
            body["workers_answering"] = len(views)
        return json_response(200, body)

    def local_status(self):
        """What /status says of this process's outputs (and of a repair)."""
        body = {"listener": self.cfg.name, "version": __version__,
                "line_scanner": lineprotocol.IMPLEMENTATION,
                "outputs": {o.name: o.status() for o in self.fanout.outputs}}
        if self.repairer.job is not None:
            body["repair"] = self.repairer.job.as_dict()
        return body

    def repair(self, request):
        """``POST /admin/repair[?output=NAME][&dry_run=true]``: copy back what the
        outputs miss (the gap ledger) from complete peers; 202 with the job
        (200 and the running job if one runs; 200 and the plan with dry_run).
        ``GET /admin/repair``: the job's progress, or 404 if none ran."""
        self.check_admin(request)
        if request.method == "GET":
            job = self.repairer.job
            if job is None:
                raise RequestError(404, "no repair has run since the relay started")
            return json_response(200, {"repair": self.merged_repair(job.as_dict())})
        if request.method != "POST":
            return _not_allowed("GET, POST", request.method)
        params = parse_qs(request.query)
        wanted = params.get("output")
        if wanted:
            unknown = [n for n in wanted if n not in {o.name for o in self.fanout.outputs}]
            if unknown:
                raise RequestError(404, "no output named %s" % ", ".join(unknown)[:100])
        if params.get("dry_run", [""])[0].lower() in ("true", "1"):
            return json_response(200, {"plan": self.repairer.plan(wanted)})
        job, new = self.local_repair(wanted, self._credentials(request, params))
        if self.peers is not None:
            extra = {"output": wanted} if wanted else {}
            self.peers.ask("POST", "/admin/repair", listener=self.cfg.name, **extra)
        return json_response(202 if new else 200, {"repair": self.merged_repair(job.as_dict())})

    def local_repair(self, wanted=None, headers=None):
        return self.repairer.begin(wanted, headers)

    def merged_repair(self, mine):
        if self.peers is None:
            return mine
        views = [mine] + [json.loads(b)["repair"] for _, status, b in self.peers.ask(
            "GET", "/admin/repair", listener=self.cfg.name) if status == 200]
        return peers_mod.merge_repairs(views)

    def _credentials(self, request, params):
        """The InfluxDB credentials an admin's request carries (u and p, or its
        Authorization header when no admin-token takes that place), for outputs
        without credentials of their own."""
        if params.get("u") and params.get("p"):
            pair = ("%s:%s" % (params["u"][0], params["p"][0])).encode("utf-8")
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        auth = request.header("authorization")
        if auth and self.cfg.admin_token is None:
            return {"Authorization": auth}
        return None

    def flush(self, request):
        """Empty every retry buffer, or ``?output=NAME``'s; say what was dropped."""
        self.check_admin(request)
        if request.method != "POST":
            return _not_allowed("POST", request.method)
        wanted = parse_qs(request.query).get("output")
        if wanted and not any(o.name in wanted for o in self.fanout.outputs):
            raise RequestError(404, "no output named %s" % ", ".join(wanted)[:100])
        flushed = self.local_flush(wanted)
        if self.peers is not None:
            params = {"output": wanted} if wanted else {}
            views = [flushed] + [json.loads(b)["flushed"] for _, _, b in self.peers.ask(
                "POST", "/admin/flush", listener=self.cfg.name, **params)]
            flushed = peers_mod.merge_flushed(views)
        return json_response(200, {"flushed": flushed})

    def local_flush(self, wanted=None):
        """Empty this process's retry buffers (or ``wanted``'s); what was dropped."""
        flushed = {}
        for output in self.fanout.outputs:
            if not wanted or output.name in wanted:
                writes, size = output.flush()
                flushed[output.name] = {"writes": writes, "bytes": size}
        return flushed

    # -- /write ------------------------------------------------------------

    def write(self, request):
        received_ns = time.time_ns()
        if request.method != "POST":
            return _not_allowed("POST", request.method)
        self.check_rate()
        query = request.query
        # As InfluxDB reads them: the first value of each, blank or not.
        params = parse_qs(query, keep_blank_values=True)
        if not params.get("db", [""])[0]:
            raise RequestError(400, "missing parameter: db")
        precision = params.get("precision", ["n"])[0] or "n"
        if precision not in lineprotocol.PRECISION_NS:
            raise RequestError(
                400, 'invalid precision "%s" (use n, u, ms, s, m or h)' % precision[:20]
            )
        if precision == "us":
            self._warn_us("write with precision=us from %s: InfluxDB 1.x reads it as "
                          "nanoseconds (its microseconds are \"u\"), and so does the relay",
                          request.remote)
        translate = None
        if self.has_v2_outputs:
            if not apiv2.v1_precision_has_v2_name(precision):
                raise RequestError(400, 'precision "%s" cannot be written to the InfluxDB 2.x '
                                        "outputs of this relay (use n, u, ms or s)" % precision)
            translate = apiv2.FromV1(params, precision, self.cfg.default_retention_policy)
        if self.cfg.default_retention_policy and not params.get("rp", [""])[0]:
            query += "&rp=" + quote(self.cfg.default_retention_policy, safe="")

        response = self.forward(request, query, lineprotocol.PRECISION_NS[precision],
                                received_ns, translate, "db=%s" % params["db"][0])
        return apiv2.as_v1(response)

    def forward(self, request, query, unit_ns, received_ns, translate, what):
        """Read, check, stamp (in units of ``unit_ns``) and filter a write's body;
        send it; the client's Response."""
        body = self.read_body(request)
        bodies = None
        ts = lineprotocol.stamp(unit_ns, received_ns)
        try:
            if self.router is None:
                body, points = lineprotocol.prepare(body, ts)
            else:
                # Stamped before filtering: every output stores the same times.
                lines, changed = lineprotocol.scan(body, ts)
                points = len(lines)
                if changed:
                    body = b"\n".join(lines)
                bodies = self.router.split(lines, body)
        except LineProtocolError as e:
            log.info("rejected write from %s: %s", request.remote, e)
            raise RequestError(400, str(e))
        stats = self.stats
        stats.points += points
        stats.bytes += len(body)
        if not points:
            # Nothing to write: InfluxDB answers an empty body the same way.
            return WRITTEN

        headers = {"Content-Type": "text/plain; charset=utf-8"}
        auth = request.header("authorization")
        if auth:
            headers["Authorization"] = auth
        request.note = "%s points=%d" % (what, points)
        return self.fanout.write(
            apiv2.write_endpoint, query, body, headers, bodies=bodies, translate=translate)

    # -- /api/v2/write -------------------------------------------------------

    def write_v2(self, request):
        """InfluxDB 2.x's write: the same rules as /write, errors in 2.x's shape."""
        try:
            return self._write_v2(request)
        except RequestError as e:
            return apiv2.error_response(e.status, e.message)._replace(headers=tuple(e.headers))

    def _write_v2(self, request):
        received_ns = time.time_ns()
        method = request.method
        if method == "OPTIONS":
            return _not_allowed("POST", method)
        if method != "POST":
            response = apiv2.error_response(405, "method not allowed: %s" % method[:20])
            return response._replace(headers=(("Allow", "POST"),))
        self.check_rate()
        query = request.query
        params = parse_qs(query, keep_blank_values=True)
        bucket = params.get("bucket", [""])[0]
        if not bucket:
            raise RequestError(400, "missing parameter: bucket")
        precision = params.get("precision", ["ns"])[0] or "ns"
        if precision not in apiv2.PRECISION_NS:
            raise RequestError(400, apiv2.BAD_PRECISION)
        translate = apiv2.FromV2(params, precision, self.cfg.default_retention_policy)
        if self.has_v1_outputs and not translate.db:
            raise RequestError(400, 'bucket "%s" names no database before "/" for the InfluxDB '
                                    "1.x outputs of this relay" % bucket[:100])

        response = self.forward(request, query, apiv2.PRECISION_NS[precision], received_ns,
                                translate, "bucket=%s" % bucket)
        return apiv2.as_v2(response)

    # -- /ready ----------------------------------------------------------------

    def ready(self, request):
        """InfluxDB 2.x's readiness probe: the relay is up (its backends may not be)."""
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD", request.method)
        started = datetime.fromtimestamp(self.started, timezone.utc)
        return json_response(200, {
            "status": "ready",
            "started": started.isoformat().replace("+00:00", "Z"),
            "up": "%.3fs" % (time.time() - self.started),
        })

    # -- /api/v1/prom/write --------------------------------------------------

    def prom_write(self, request):
        """A Prometheus remote write: the (snappy) body goes to every output's
        write_prom endpoint as it came, with the /write response rules and
        retry buffers. It is never decoded, stamped or filtered."""
        if request.method != "POST":
            return _not_allowed("POST", request.method)
        self.check_rate()
        query = request.query
        if self.cfg.default_retention_policy and not parse_qs(query).get("rp"):
            query += "&rp=" + quote(self.cfg.default_retention_policy, safe="")
        body = self.read_body(request, decode=False)
        headers = {}
        for name in _PROM_HEADERS:
            value = request.header(name.lower())
            if value:
                headers[name] = value
        request.note = "prometheus bytes=%d" % len(body)
        return self.fanout.write(_prom_endpoint, query, body, headers)

    # -- /query, /api/v2/query, /api/v1/prom/read (query-enabled: see query.py)

    def query(self, request):
        """InfluxDB's query, to one ready output."""
        if request.method not in ("GET", "POST"):
            return _not_allowed("GET, POST", request.method)
        return self.reads.query(request)

    def query_v2(self, request):
        """InfluxDB 2.x's query, to one ready api = "v2" output; errors in 2.x's shape."""
        if request.method == "OPTIONS":
            return _not_allowed("POST", request.method)
        if request.method != "POST":
            response = apiv2.error_response(405, "method not allowed: %s" % request.method[:20])
            return response._replace(headers=(("Allow", "POST"),))
        try:
            return self.reads.query_v2(request)
        except RequestError as e:
            return apiv2.error_response(e.status, e.message)._replace(headers=tuple(e.headers))

    def prom_read(self, request):
        """A Prometheus remote read, to one ready api = "v1" output."""
        if request.method != "POST":
            return _not_allowed("POST", request.method)
        return self.reads.prom_read(request)

    def peer_readiness(self, output):
        """With workers: the other workers' /health/<output> answers, and how
        many of them did not answer."""
        views = [json.loads(body) for _, _, body in self.peers.ask(
            "GET", "/health/" + quote(output.name, safe=""), listener=self.cfg.name)]
        return views, self.peers.worker.count - 1 - len(views)

    def read_body(self, request, decode=True):
        """The request body, decoded, or a :class:`RequestError` (400, 408, 413, 415).

        The whole request, headers and body, must arrive within read-timeout.
        With ``decode=False`` the body is returned as it came (only its size is
        checked), whatever its Content-Encoding.
        """
        limit = self.max_body_size
        try:
            body = request.read_body(limit)
        except BodyError as e:
            raise RequestError(e.status, e.message)
        if not decode:
            return body

        encoding = request.header("content-encoding").strip().lower()
        if encoding == "gzip":
            return _gunzip(body, limit)
        if encoding not in ("", "identity"):
            raise RequestError(415, "unsupported Content-Encoding: %s" % encoding[:40])
        return body


class ByteBudget(object):
    """Bytes in use out of ``limit``; :meth:`take` waits (greenlets), first come
    first served, for room."""

    def __init__(self, limit):
        self.limit = limit
        self.used = 0
        self._waiting = deque()  # (n, Event), oldest first

    def take(self, n):
        # One taker alone may go past the limit: a body larger than it still goes.
        if not self._waiting and (not self.used or self.used + n <= self.limit):
            self.used += n
            return
        granted = Event()
        self._waiting.append((n, granted))
        try:
            granted.wait()
        except BaseException:  # killed while waiting (the server is stopping)
            if granted.is_set():
                self.give(n)
            else:
                self._waiting.remove((n, granted))
            raise

    def give(self, n):
        self.used -= n
        waiting = self._waiting
        while waiting and (not self.used or self.used + waiting[0][0] <= self.limit):
            n, granted = waiting.popleft()
            self.used += n
            granted.set()


def _charge(request, limit):
    """What a write body counts against the listener's budget (0 for one that
    read_body refuses unread: over ``limit``)."""
    if request.chunked:
        return CHUNKED_CHARGE
    length = request.body_length
    return length if 0 < length <= limit else 0


def _prom_endpoint(output):
    return output.cfg.endpoints.write_prom


#: Headers of a Prometheus remote write passed to the backends.
_PROM_HEADERS = ("Content-Type", "Content-Encoding", "X-Prometheus-Remote-Write-Version",
                 "Authorization")


def _gunzip(body, limit):
    """Decode a gzip body, refusing one that decodes past ``limit``."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
        if len(out) > limit:
            raise RequestError(413, "request body too large once decoded (limit %d bytes)" % limit)
        if not d.eof:
            raise RequestError(400, "unable to decode gzip body: truncated")
    except zlib.error as e:
        raise RequestError(400, "unable to decode gzip body: %s" % e)
    return out


def _not_allowed(allow, method):
    if method == "OPTIONS":
        return Response(204, b"", "", (("Allow", allow + ", OPTIONS"),))
    return error_response(405, "method not allowed: %s" % method[:20], [("Allow", allow)])


def tls_context(cfg):
    """The server-side TLS context of a listener: TLS 1.2 and up, with the
    certificate and key read from ``ssl-combined-pem`` now."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.ssl_combined_pem)
    return ctx


_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class HTTPListener(object):
    """One ``[[http]]`` section, listening: serves ``app`` (a :class:`WriteApp`).

    Its interface is the one every listener has (see :mod:`.service`):
    :meth:`bind`, :meth:`start`, :meth:`stop`, :meth:`close_unstarted`,
    :meth:`dup_socket`, and :meth:`swap` to serve a new app on the same socket.
    """

    kind = "http"

    def __init__(self, app, sock=None):
        """``sock``: an already listening socket to serve (a reload hands one over)."""
        cfg = app.cfg
        self.cfg = cfg
        self.name = cfg.name
        self.app = app
        if cfg.admin_enabled and cfg.admin_token is None and cfg.host not in _LOOPBACK:
            log.warning("http listener %r: /admin is enabled without admin-token: any client "
                        "that reaches %s can run queries on every backend", cfg.name, cfg.bind_addr)
        self.server = HTTPServer(
            sock if sock is not None else (cfg.host, cfg.port),
            app,
            read_timeout=cfg.read_timeout,
            max_connections=MAX_CONNECTIONS,
            ssl_context=tls_context(cfg) if cfg.ssl_combined_pem else None,
            headers=COMMON_HEADERS,
        )

    @property
    def address(self):
        return self.server.address

    @property
    def outputs(self):
        return self.app.outputs

    @property
    def stats(self):
        return self.app.stats

    def bind(self):
        """Open the socket now (OSError if it cannot be), before anything starts."""
        self.server.init_socket()

    def start(self):
        self.app.fanout.start()
        self.app.repairer.start()
        self.server.start()

    def swap(self, app):
        """Serve ``app`` from now on, on every connection (kept-alive ones too)."""
        app.fanout.start()
        self.app.repairer.stop()
        app.repairer.start()
        self.server.application = app
        self.server.read_timeout = app.cfg.read_timeout
        self.app, self.cfg, self.name = app, app.cfg, app.cfg.name

    def use_tls_context(self, ctx):
        """Serve new connections with ``ctx`` (a certificate renewed in place);
        connections already open keep theirs."""
        self.server.wrap_socket = ctx.wrap_socket

    def dup_socket(self):
        """A second handle on the listening socket, for a listener that replaces this one."""
        return gsocket.socket(fileno=os.dup(self.server.socket.fileno()))

    def close_unstarted(self):
        sock = getattr(self.server, "socket", None)
        if sock is not None:
            sock.close()

    def stop(self, timeout):
        """Stop accepting, let requests being answered finish (up to ``timeout``),
        then close every connection, idle keep-alive ones at once."""
        self.app.repairer.stop()
        server = self.server
        server.close()
        deadline = time.monotonic() + timeout
        while server.answering and time.monotonic() < deadline:
            gevent.sleep(0.02)
        server.stop(timeout=0)
