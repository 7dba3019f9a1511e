"""The HTTP listener: InfluxDB's /write and /ping, served by gevent.

:class:`WriteApp` is a WSGI application holding the request rules;
:class:`HTTPListener` wraps it in a gevent ``WSGIServer`` with a bounded
pool, a read timeout and, with ``ssl-combined-pem``, TLS.
"""

import json
import logging
import socket
import ssl
import time
import zlib
from http import HTTPStatus
from urllib.parse import parse_qs, quote

from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from . import __version__, lineprotocol
from .backend import Response, error_response
from .errors import LineProtocolError
from .metrics import ListenerStats

log = logging.getLogger(__name__)

#: Connections one listener serves at once; more wait in the kernel's backlog.
MAX_CONNECTIONS = 1000

VERSION = "relay-%s" % __version__
_JSON = "application/json"
_COMMON = [("X-Influxdb-Version", VERSION)]


def _status_line(code):
    try:
        return "%d %s" % (code, HTTPStatus(code).phrase)
    except ValueError:
        return "%d Unknown" % code


_STATUS = {code: _status_line(code) for code in (200, 204, 404, 405)}


class RequestError(Exception):
    """A request the relay answers itself, with ``status`` and ``message``."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


class WriteApp(object):
    """The WSGI application of one ``[[http]]`` section."""

    def __init__(self, cfg, fanout):
        self.cfg = cfg
        self.fanout = fanout
        self.max_body_size = cfg.max_body_size
        self.stats = ListenerStats()
        self.routes = {
            "/write": self.write,
            "/ping": self.ping,
            "/status": self.status,
            "/admin/flush": self.flush,
        }

    def __call__(self, environ, start_response):
        handler = self.routes.get(environ.get("PATH_INFO", ""))
        try:
            if handler is None:
                raise RequestError(404, "not found")
            return handler(environ, start_response)
        except RequestError as e:
            return _error(start_response, e.status, e.message, environ)

    # -- /ping -------------------------------------------------------------

    def ping(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return _not_allowed(start_response, "GET, HEAD", method)
        if parse_qs(environ.get("QUERY_STRING", "")).get("verbose", [""])[0].lower() in ("true", "1"):
            return _json(start_response, 200, {"version": VERSION})
        start_response(_STATUS[204], list(_COMMON))
        return []

    # -- /status and /admin/flush -------------------------------------------

    def status(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        if method not in ("GET", "HEAD"):
            return _not_allowed(start_response, "GET, HEAD", method)
        outputs = {o.name: o.status() for o in self.fanout.outputs}
        return _json(start_response, 200, {"listener": self.cfg.name, "outputs": outputs})

    def flush(self, environ, start_response):
        """Empty every retry buffer, or ``?output=NAME``'s; say what was dropped."""
        method = environ["REQUEST_METHOD"]
        if method != "POST":
            return _not_allowed(start_response, "POST", method)
        if not _is_loopback(environ.get("REMOTE_ADDR", "")):
            raise RequestError(403, "/admin/flush is only served to loopback clients")
        wanted = parse_qs(environ.get("QUERY_STRING", "")).get("output")
        outputs = [o for o in self.fanout.outputs if not wanted or o.name in wanted]
        if wanted and not outputs:
            raise RequestError(404, "no output named %s" % ", ".join(wanted)[:100])
        flushed = {}
        for output in outputs:
            writes, size = output.flush()
            flushed[output.name] = {"writes": writes, "bytes": size}
        return _json(start_response, 200, {"flushed": flushed})

    # -- /write ------------------------------------------------------------

    def write(self, environ, start_response):
        received_ns = time.time_ns()
        method = environ["REQUEST_METHOD"]
        if method != "POST":
            return _not_allowed(start_response, "POST", method)
        query = environ.get("QUERY_STRING", "")
        params = parse_qs(query)
        if not params.get("db", [""])[0]:
            raise RequestError(400, "missing parameter: db")
        precision = params.get("precision", ["n"])[0] or "n"
        if precision not in lineprotocol.PRECISION_NS:
            raise RequestError(
                400, 'invalid precision "%s" (use n, u, ms, s, m or h)' % precision[:20]
            )
        if self.cfg.default_retention_policy and not params.get("rp"):
            query += "&rp=" + quote(self.cfg.default_retention_policy, safe="")

        body = self.read_body(environ)
        try:
            body, points = lineprotocol.prepare(body, lineprotocol.stamp(precision, received_ns))
        except LineProtocolError as e:
            log.info("rejected write from %s: %s", environ.get("REMOTE_ADDR"), e)
            raise RequestError(400, str(e))
        stats = self.stats
        stats.points += points
        stats.bytes += len(body)
        if not points:
            # Nothing to write: InfluxDB answers an empty body the same way.
            start_response(_STATUS[204], list(_COMMON))
            return []

        headers = {"Content-Type": "text/plain; charset=utf-8"}
        auth = environ.get("HTTP_AUTHORIZATION")
        if auth:
            headers["Authorization"] = auth
        response = self.fanout.write(_write_endpoint, query, body, headers)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "write db=%s points=%d bytes=%d -> %d",
                params["db"][0], points, len(body), response.status,
            )
        return _respond(start_response, response)

    def read_body(self, environ):
        """The request body, decoded, or a :class:`RequestError` (400, 408, 413, 415)."""
        limit = self.max_body_size
        length = environ.get("CONTENT_LENGTH")
        if length:
            try:
                length = int(length)
            except ValueError:
                raise RequestError(400, "invalid Content-Length")
            if length > limit:
                _forget_body(environ)
                raise RequestError(413, "request body too large (limit %d bytes)" % limit)
        stream = environ["wsgi.input"]
        try:
            body = stream.read(limit + 1) if not length else stream.read(length)
        except socket.timeout:
            _forget_body(environ)
            raise RequestError(408, "timed out reading the request body")
        if len(body) > limit:
            _forget_body(environ)
            raise RequestError(413, "request body too large (limit %d bytes)" % limit)

        encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding == "gzip":
            return _gunzip(body, limit)
        if encoding not in ("", "identity"):
            raise RequestError(415, "unsupported Content-Encoding: %s" % encoding[:40])
        return body


def _is_loopback(address):
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


def _write_endpoint(output):
    return output.cfg.endpoints.write


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


def _forget_body(environ):
    """Don't read the rest of a body we refused: close the connection instead.

    pywsgi would otherwise read (and discard) all of it before answering the
    next request on the connection.
    """
    stream = environ["wsgi.input"]
    stream.content_length = stream.position
    stream.chunked_input = False
    environ["influx_relay.close"] = True


def _not_allowed(start_response, allow, method):
    if method == "OPTIONS":
        start_response(_STATUS[204], _COMMON + [("Allow", allow + ", OPTIONS")])
        return []
    response = error_response(405, "method not allowed: %s" % method[:20])
    return _respond(start_response, response, [("Allow", allow)])


def _json(start_response, status, obj):
    body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    return _respond(start_response, Response(status, body, _JSON))


def _error(start_response, status, message, environ=None):
    extra = []
    if environ is not None and environ.get("influx_relay.close"):
        extra.append(("Connection", "close"))
    return _respond(start_response, error_response(status, message), extra)


def _respond(start_response, response, extra=()):
    """Send a :class:`Response` (a backend's, or one of ours)."""
    headers = _COMMON + list(extra)
    if response.body:
        headers.append(("Content-Type", response.content_type or _JSON))
        headers.append(("Content-Length", str(len(response.body))))
    start_response(_STATUS.get(response.status) or _status_line(response.status), headers)
    return [response.body] if response.body else []


class _Handler(WSGIHandler):
    """pywsgi's handler with a read timeout: a stalled client is let go."""

    def handle(self):
        self.socket.settimeout(self.server.read_timeout)
        try:
            super().handle()
        except socket.timeout:
            pass

    def log_request(self):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s", self.format_request())


class HTTPListener(object):
    """One ``[[http]]`` section, listening."""

    def __init__(self, cfg, fanout, sock=None):
        """``sock``: an already listening socket to serve (a reload hands one over)."""
        self.cfg = cfg
        self.name = cfg.name
        self.app = WriteApp(cfg, fanout)
        kwargs = {}
        if cfg.ssl_combined_pem:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(cfg.ssl_combined_pem)
            kwargs["ssl_context"] = ctx
        self.server = WSGIServer(
            sock if sock is not None else (cfg.host, cfg.port),
            self.app,
            spawn=Pool(MAX_CONNECTIONS),
            handler_class=_Handler,
            log=None,
            error_log=logging.getLogger(__name__ + ".server"),
            **kwargs
        )
        self.server.read_timeout = cfg.read_timeout

    @property
    def address(self):
        return self.server.address

    def start(self):
        self.server.start()

    def stop(self, timeout):
        self.server.stop(timeout=timeout)
