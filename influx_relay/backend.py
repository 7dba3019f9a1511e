"""One InfluxDB server the relay writes to, over pooled keep-alive connections."""

import base64
import ipaddress
import json
import logging
import re
import socket
from collections import namedtuple

import gevent
import urllib3
from gevent import socket as gsocket

from . import __version__
from .errors import BackendError

log = logging.getLogger(__name__)

USER_AGENT = "influx-relay/%s" % __version__

#: What a backend answered: ``status`` and the raw ``body`` and content type.
Response = namedtuple("Response", "status body content_type")


def error_response(status, message):
    """A :class:`Response` in InfluxDB's error shape: ``{"error":"..."}``."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, "application/json")


def retryable(status):
    """Whether a backend's answer means "try again later" (5xx, or 429 Too Many
    Requests, InfluxDB 2.x's rate limit), not "this data is wrong" (other 4xx).

    A redirect (3xx) is a failure too: the relay never follows one (it would
    carry the client's credentials elsewhere), and it is no answer about the
    data; the output's location is wrong, so the write waits for a fix."""
    return status >= 500 or status == 429 or 300 <= status < 400


class HTTPBackend(object):
    """An HTTP output: posts bodies to one server's endpoints.

    Every call either returns the server's :class:`Response`, whatever its
    status, or raises :class:`BackendError` when there was no answer (refused,
    reset, timed out, not HTTP).
    """

    def __init__(self, output):
        self.output = output
        self.name = output.name
        self.timeout = output.timeout
        self.auth = _authorization(output)
        kwargs = {}
        if output.scheme == "https":
            kwargs["cert_reqs"] = "CERT_NONE" if output.skip_tls_verification else "CERT_REQUIRED"
            if output.skip_tls_verification:
                kwargs["assert_hostname"] = False
                # Said once here, rather than by urllib3 on every request.
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
                log.warning("output %s: skip-tls-verification is set: the certificate of %s "
                            "is not verified", self.name, output.base_url)
            elif output.ca_file:
                kwargs["ca_certs"] = output.ca_file
        # Writes over plain HTTP take a lean keep-alive path (see KeepAlivePool);
        # HTTPS, queries and pings go through urllib3.
        self.lean = KeepAlivePool(output.host, output.port, output.pool_size, output.timeout) \
            if output.scheme == "http" else None
        self.pool = urllib3.connection_from_url(
            output.base_url,
            maxsize=output.pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=output.timeout, read=output.timeout),
            **kwargs
        )
        self.coalescer = None
        if output.coalesce:
            from .coalesce import Coalescer  # here: it uses this module's retryable()
            self.coalescer = Coalescer(self, self._post, output.timeout,
                                       output.coalesce_max_kb * 1024)

    def __repr__(self):
        return "<HTTPBackend %s %s>" % (self.name, self.output.base_url)

    def __str__(self):
        return self.name

    def post(self, endpoint, query, body, headers):
        """POST ``body`` to ``endpoint`` (a path) with the raw ``query`` string.

        With ``coalesce`` on, a small line-protocol body may go to the server
        merged with concurrent ones (see :mod:`.coalesce`); the answer is still
        this body's own.
        """
        if self.coalescer is not None:
            return self.coalescer.post(endpoint, query, body, headers)
        return self._post(endpoint, query, body, headers)

    def _post(self, endpoint, query, body, headers):
        url = endpoint + "?" + query if query else endpoint
        if self.lean is None:
            return self.request("POST", url, body, headers)
        if self.auth is not None:
            headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            headers["Authorization"] = self.auth
            url = _without_credentials(url)
        timeout = self.timeout
        try:
            with gevent.Timeout(timeout):
                return self.lean.post(url, body, headers)
        except gevent.Timeout:
            raise BackendError(self, "no answer within %gs" % timeout)
        except ConnectionRefusedError as e:
            raise BackendError(self, "connection failed: %s" % e)
        except socket.gaierror as e:
            # Name the host: it is what the operator has to fix.
            raise BackendError(self, "connection failed: Failed to resolve %r (%s)"
                               % (self.output.host, e.strerror or e))
        except (OSError, ProtocolError) as e:
            raise BackendError(self, str(e) or e.__class__.__name__)

    def request(self, method, url, body=None, headers=None, timeout=None):
        """One request; ``timeout`` (seconds) shortens the output's own if given."""
        all_headers = {"User-Agent": USER_AGENT}
        if headers:
            all_headers.update(headers)
        if self.auth is not None:
            # The output's own credentials replace the client's.
            for name in [h for h in all_headers if h.lower() == "authorization"]:
                del all_headers[name]
            all_headers["Authorization"] = self.auth
            url = _without_credentials(url)
        if timeout is None or timeout > self.timeout:
            timeout = self.timeout
        # urllib3's own timeouts bound each socket operation; this one bounds
        # the whole exchange, so a server trickling its answer cannot hold a
        # request (or a retry buffer) longer than the configured timeout.
        try:
            with gevent.Timeout(timeout):
                r = self.pool.urlopen(
                    method,
                    url,
                    body=body,
                    headers=all_headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=True,
                )
        except gevent.Timeout:
            raise BackendError(self, "no answer within %gs" % timeout)
        except urllib3.exceptions.HTTPError as e:
            raise BackendError(self, _describe(e))
        except OSError as e:  # pragma: no cover - urllib3 wraps most of these
            raise BackendError(self, str(e))
        return Response(r.status, r.data, r.headers.get("Content-Type", ""))

    def close(self):
        if self.lean is not None:
            self.lean.close()
        self.pool.close()


class ProtocolError(Exception):
    """A backend's answer that is not HTTP/1.x as the relay understands it."""


#: Largest response head (status line and headers) read from a backend.
MAX_RESPONSE_HEAD = 64 * 1024
#: Bodies up to this size go out in the same send as the request head.
_JOIN_BELOW = 64 * 1024
_CHUNK = 64 * 1024


class KeepAlivePool(object):
    """POST over kept-alive HTTP/1.1 connections, with little per-request work.

    urllib3 (with http.client and the email package parsing every response's
    headers) was most of the relay's CPU time per small write; a backend's
    answer to a write is short and simple, so this reads it directly. Up to
    ``size`` idle connections are kept, as urllib3's pool does (``block=False``:
    more requests at once open more connections, closed after use).

    A request that fails on a kept-alive connection before any byte of an
    answer arrives (the server had closed it while idle) is sent once more on
    a new connection; that may deliver a write twice, which stamped
    timestamps make harmless (the point overwrites itself).
    """

    def __init__(self, host, port, size, timeout):
        self.address = (host, port)
        self.host_header = ("[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port))
        # An IP address is connected to as it is: gevent resolves every other
        # host name in a thread pool, a wait (and a hop to another thread) that
        # an address does not need.
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            self.family = None
        else:
            self.family = socket.AF_INET6 if version == 6 else socket.AF_INET
        self.size = size
        self.connect_timeout = timeout
        self.idle = []
        self.closed = False

    def post(self, url, body, headers):
        """Returns a :class:`Response`; raises OSError or :class:`ProtocolError`."""
        if _UNSAFE.search(url):
            url = _UNSAFE.sub(_percent, url)
        head = ["POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept-Encoding: identity\r\n"
                "Content-Length: %d\r\n" % (url, self.host_header, USER_AGENT, len(body))]
        for name, value in headers.items():
            head.append("%s: %s\r\n" % (name, value))
        head.append("\r\n")
        head = "".join(head).encode("latin-1")
        if len(body) < _JOIN_BELOW:
            head, body = head + body, b""
        if self.idle:
            try:
                return self._exchange(self.idle.pop(), head, body)
            except _Stale:
                # Closed by the server while idle (a restart, an idle timeout):
                # so are the other idle ones, most likely.
                self.close_idle()
        sock = self._connect()
        sock.settimeout(None)  # the caller's Timeout bounds the whole exchange
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._exchange(sock, head, body, fresh=True)

    def _connect(self):
        if self.family is None:
            return gsocket.create_connection(self.address, timeout=self.connect_timeout)
        sock = gsocket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.address)
        except BaseException:
            sock.close()
            raise
        return sock

    def _exchange(self, sock, head, body, fresh=False):
        answered = False
        try:
            try:
                sock.sendall(head)
                if body:
                    sock.sendall(body)
                data = sock.recv(_CHUNK)
            except OSError:
                if fresh:
                    raise
                raise _Stale()
            if not data:
                if fresh:
                    raise ProtocolError("connection closed without an answer")
                raise _Stale()
            response, keep = _read_response(sock, data)
            answered = True
        finally:
            if not answered:
                sock.close()
        if keep and not self.closed and len(self.idle) < self.size:
            self.idle.append(sock)
        else:
            sock.close()
        return response

    def close_idle(self):
        idle, self.idle = self.idle, []
        for sock in idle:
            sock.close()

    def close(self):
        self.closed = True
        self.close_idle()


#: Characters a request target cannot hold as they are (urllib3 escapes them too).
_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _percent(match):
    # The server read the request line as latin-1 (PEP 3333): these are the client's bytes.
    char = match.group()
    raw = char.encode("latin-1") if char <= "\xff" else char.encode("utf-8")
    return "".join("%%%02X" % b for b in raw)


class _Stale(Exception):
    """A kept-alive connection the server had closed."""


def _read_response(sock, data):
    """Read one response, ``data`` being its first bytes: ``(Response, keep-alive)``."""
    while True:
        end = data.find(b"\r\n\r\n")
        while end < 0:
            if len(data) > MAX_RESPONSE_HEAD:
                raise ProtocolError("response head too long")
            more = sock.recv(_CHUNK)
            if not more:
                raise ProtocolError("connection closed in the response head")
            data += more
            end = data.find(b"\r\n\r\n")
        lines = data[:end].decode("latin-1").split("\r\n")
        rest = data[end + 4:]
        version, _, status = lines[0].partition(" ")
        code = status[:3]
        if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
            raise ProtocolError("not an HTTP response: %r" % lines[0][:60])
        status = int(code)
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            data = rest
            if not data:
                data = sock.recv(_CHUNK)
                if not data:
                    raise ProtocolError("connection closed in the response head")
            continue
        break
    fields = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    connection = fields.get("connection", "").lower()
    keep = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    content_type = fields.get("content-type", "")
    if status in (204, 304):
        body = b""
        keep = keep and not rest
    elif "chunked" in fields.get("transfer-encoding", "").lower():
        body, rest = _read_chunked(sock, rest)
        keep = keep and not rest
    elif "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise ProtocolError("bad Content-Length: %r" % fields["content-length"][:40])
        while len(rest) < length:
            more = sock.recv(max(_CHUNK, length - len(rest)))
            if not more:
                raise ProtocolError("connection closed in the response body")
            rest += more
        body, rest = rest[:length], rest[length:]
        keep = keep and not rest
    else:  # the body ends when the connection does
        chunks = [rest]
        while True:
            more = sock.recv(_CHUNK)
            if not more:
                break
            chunks.append(more)
        body = b"".join(chunks)
        keep = False
    return Response(status, body, content_type), keep


def _read_line(sock, data):
    """The CRLF-ended line at the start of ``data`` (read more as needed); ``(line, rest)``."""
    end = data.find(b"\r\n")
    while end < 0:
        more = sock.recv(_CHUNK)
        if not more:
            raise ProtocolError("connection closed in a chunked body")
        data += more
        end = data.find(b"\r\n")
    return data[:end], data[end + 2:]


def _read_chunked(sock, data):
    """A chunked body from ``data`` on; ``(body, bytes after it)``."""
    chunks = []
    while True:
        line, data = _read_line(sock, data)
        try:
            size = int(line.split(b";")[0], 16)
        except ValueError:
            raise ProtocolError("bad chunk size")
        if size == 0:
            # trailers, then an empty line
            while True:
                line, data = _read_line(sock, data)
                if not line:
                    return b"".join(chunks), data
        while len(data) < size + 2:
            more = sock.recv(max(_CHUNK, size + 2 - len(data)))
            if not more:
                raise ProtocolError("connection closed in a chunked body")
            data += more
        chunks.append(data[:size])
        data = data[size + 2:]


def _authorization(output):
    """The Authorization header of an output's own credentials, or None.

    InfluxDB 1.x takes a username and password as HTTP Basic auth (which keeps
    the password out of URLs and access logs), and a token as "Token ...".
    """
    if output.token:
        return "Token " + output.token
    if output.username is not None:
        pair = ("%s:%s" % (output.username, output.password)).encode("utf-8")
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return None


def _without_credentials(url):
    """``url`` without the client's ``u`` and ``p`` query parameters."""
    path, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [p for p in query.split("&") if p.partition("=")[0] not in ("u", "p")]
    return path + "?" + "&".join(kept) if kept else path


def _describe(exc):
    """A short reason for a urllib3 error, without its repr noise."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "connection failed: %s" % str(reason).split(": ", 1)[-1]
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "read timed out"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connect timed out"
    return str(reason)
