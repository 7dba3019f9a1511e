"""A lean HTTP/1.1 server for the relay's listeners, on gevent's StreamServer.

gevent's pywsgi spent about half of a small write's CPU on the relay's side of
the request: the email-package header parser, a full WSGI environ, chunked
output machinery. This server does only what the relay's listeners need, and
calls the same WSGI application (``app(environ, start_response)`` returning
a list of bytes), with an environ holding REQUEST_METHOD, PATH_INFO,
QUERY_STRING, REMOTE_ADDR, CONTENT_LENGTH, CONTENT_TYPE, the other headers as
HTTP_*, ``wsgi.input`` (a :class:`Body`) and ``influx_relay.read_deadline``.

What it does:

- HTTP/1.1 keep-alive (and HTTP/1.0 with ``Connection: keep-alive``),
  pipelined requests, ``Content-Length`` and chunked request bodies,
  ``Expect: 100-continue`` (the 100 goes out when the application first reads
  the body, so a body it refuses unread is never asked for), HEAD. A body
  the application leaves unread is skipped when it has all arrived already;
  else the connection closes after the answer (``Connection: close``), so
  that the relay never waits for, nor reads, a body it does not want.
- Limits with an answer that names them, then the connection closed:
  request line over 8 KB (414), a header line over 64 KB, more than 100
  headers, a malformed request line or header, an unsupported HTTP version,
  a bad Content-Length or chunk size (400), a body with both Content-Length
  and Transfer-Encoding, or another Transfer-Encoding than chunked (400).
- A read timeout: a connection may stay idle for ``read_timeout`` between
  requests; once a request begins, its line and headers must arrive within
  ``read_timeout`` (else 408 and closed), and the application reads the
  body by the same deadline (``influx_relay.read_deadline``).
- A bounded pool of connection greenlets that lets go of the connection
  waiting longest for a request when it is full (see :class:`ConnectionPool`).
- ``answering``: how many requests are being answered, so that stopping can
  wait for those and not for idle keep-alive connections.
"""

import json
import logging
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

log = logging.getLogger(__name__)

MAX_REQUEST_LINE = 8192
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
#: A chunk larger than this is refused (400): no body the relay takes is near it.
MAX_CHUNK = 1 << 40

_JSON = "application/json"


class BadRequest(ValueError):
    """A request the server answers 400 (or ``status``) and closes."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class ClientGone(OSError):
    """The client closed the connection in the middle of its request."""


class _TooSlow(BaseException):
    """A request's line and headers took longer than read-timeout to arrive.

    A BaseException, so that no ``except Exception`` on the way swallows it."""


class ConnectionPool(Pool):
    """The greenlets serving a listener's connections, at most ``size``.

    When all are taken and another client connects, the connection that has
    waited longest for a request to begin or for its headers to arrive (an idle
    keep-alive connection, or a client that sent nothing or only part of its
    headers) is let go to make room: a flood of idle or slow connections cannot
    lock healthy clients out. Requests being answered are never let go.
    """

    def __init__(self, size):
        super().__init__(size)
        self.waiting = {}  # socket -> socket, longest waiting first

    def full(self):
        if not super().full():
            return False
        if self.waiting:
            sock = self.waiting.pop(next(iter(self.waiting)))
            try:
                sock.shutdown(socket.SHUT_RDWR)  # its greenlet sees the end and exits
            except OSError:
                pass
        return True


class Body(object):
    """``wsgi.input``: a request's body, bounded by its Content-Length or chunked."""

    __slots__ = ("_rfile", "_left", "_chunked", "_chunk_left", "_continue", "position",
                 "abandoned", "buffered")

    def __init__(self, rfile, length, chunked, send_continue):
        self._rfile = rfile
        self._left = length  # bytes of a Content-Length body not read yet
        self._chunked = chunked  # still inside a chunked body
        self._chunk_left = 0
        self._continue = send_continue  # a callable, until the 100 is sent
        self.position = 0
        self.abandoned = False  # the application gave up on it: close after answering
        #: Bytes known to be in the read buffer already: a Content-Length body
        #: no longer than this is read without waiting.
        self.buffered = 0

    @property
    def done(self):
        return not self._left and not self._chunked

    def abandon(self):
        """The rest of the body will not be read: the connection closes after the answer."""
        self.abandoned = True

    def read(self, size=-1):
        """Up to ``size`` bytes of the body (all of it if ``size`` < 0); b"" at its end."""
        if self._continue is not None:
            send, self._continue = self._continue, None
            if not self.done:
                send()
        if self._chunked:
            data = self._read_chunked(size)
        else:
            left = self._left
            if size < 0 or size > left:
                size = left
            if not size:
                return b""
            data = self._rfile.read(size)
            if len(data) < size:
                raise ClientGone("the client closed the connection in the middle of its body")
            self._left = left - size
        self.position += len(data)
        return data

    def _read_chunked(self, size):
        rfile = self._rfile
        pieces = []
        got = 0
        while self._chunked and (size < 0 or got < size):
            if not self._chunk_left:
                n = self._chunk_size()
                if not n:
                    self._trailers()
                    self._chunked = False
                    break
                self._chunk_left = n
            want = self._chunk_left if size < 0 else min(self._chunk_left, size - got)
            data = rfile.read(want)
            if len(data) < want:
                raise ClientGone("the client closed the connection in the middle of its body")
            pieces.append(data)
            got += want
            self._chunk_left -= want
            if not self._chunk_left and rfile.read(2) != b"\r\n":
                raise BadRequest("invalid chunked body: no CRLF after a chunk")
        return b"".join(pieces)

    def _chunk_size(self):
        line = self._rfile.readline(MAX_HEADER_LINE + 1)
        if not line.endswith(b"\n"):
            if len(line) > MAX_HEADER_LINE:
                raise BadRequest("invalid chunked body: chunk size line too long")
            raise ClientGone("the client closed the connection in the middle of its body")
        text = line.split(b";", 1)[0].strip()
        try:
            if not text or text.startswith((b"-", b"+", b"0x", b"0X")):
                raise ValueError
            n = int(text, 16)
        except ValueError:
            raise BadRequest("invalid chunked body: bad chunk size %r" % text[:20].decode("latin-1"))
        if n > MAX_CHUNK:
            raise BadRequest("invalid chunked body: chunk size too large")
        return n

    def _trailers(self):
        for _ in range(MAX_HEADERS + 1):
            line = self._rfile.readline(MAX_HEADER_LINE + 1)
            if line in (b"\r\n", b"\n"):
                return
            if not line.endswith(b"\n"):
                if len(line) > MAX_HEADER_LINE:
                    raise BadRequest("invalid chunked body: trailer line too long")
                raise ClientGone("the client closed the connection in the middle of its body")
        raise BadRequest("invalid chunked body: too many trailers")

    def discard(self):
        """Drop what is left of the body if it is all in the read buffer already;
        whether the connection can go on. A body that would have to be waited
        for (or asked for with a 100 Continue) is not: the connection closes."""
        if self.abandoned:
            return False
        if self.done:
            return True
        if self._chunked or self._continue is not None:
            return False
        if self._left > self.buffered - self.position:
            return False
        self._rfile.read(self._left)
        self._left = 0
        return True


_date_cache = [0, ""]


def _http_date():
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]


#: The environ keys of common headers, as sent (others are worked out).
_ENVIRON_KEYS = {
    "Host": "HTTP_HOST", "User-Agent": "HTTP_USER_AGENT", "Accept": "HTTP_ACCEPT",
    "Content-Length": "CONTENT_LENGTH", "Content-Type": "CONTENT_TYPE",
    "Content-Encoding": "HTTP_CONTENT_ENCODING", "Authorization": "HTTP_AUTHORIZATION",
    "Connection": "HTTP_CONNECTION", "Accept-Encoding": "HTTP_ACCEPT_ENCODING",
    "Transfer-Encoding": "HTTP_TRANSFER_ENCODING", "Expect": "HTTP_EXPECT",
}


class HTTPServer(StreamServer):
    """Serves a WSGI application of the relay's kind on a StreamServer.

    ``headers``: (name, value) pairs added to the answers the server gives
    itself (400, 408, 414, 500), as the application adds them to its own.
    """

    def __init__(self, listener, application, read_timeout, max_connections,
                 ssl_context=None, headers=()):
        kwargs = {}
        if ssl_context is not None:
            # The handshake then happens on the first read, within read-timeout,
            # and a failed one (plain HTTP, TLS 1.1) just closes the connection.
            kwargs = {"ssl_context": ssl_context, "do_handshake_on_connect": False}
        super().__init__(listener, spawn=ConnectionPool(max_connections), **kwargs)
        self.application = application
        self.read_timeout = read_timeout
        self.extra_headers = list(headers)
        self.answering = 0

    def handle(self, sock, address):
        waiting = self.pool.waiting
        sock.settimeout(self.read_timeout)
        rfile = sock.makefile("rb")
        remote = address[0] if isinstance(address, tuple) and address else "-"
        try:
            while self._one_request(sock, rfile, remote, waiting):
                pass
        except _TooSlow:
            log.info("let go of a client too slow to send its request headers: %s", remote)
            self._refuse(sock, 408, "timed out reading the request headers")
        except OSError:  # timed out, reset, or let go to make room
            pass
        finally:
            waiting.pop(sock, None)
            rfile.close()
            sock.close()

    def _one_request(self, sock, rfile, remote, waiting):
        """Read and answer one request; whether the connection goes on."""
        waiting.pop(sock, None)
        waiting[sock] = sock  # may be let go when the listener is full
        if not rfile.peek(1):  # idle until a request begins: at most read-timeout
            return False
        timeout = self.read_timeout
        deadline = time.monotonic() + timeout
        try:
            lines, buffered = self._buffered_head(rfile)
            if lines is None:
                with gevent.Timeout(timeout, _TooSlow):
                    lines = self._read_lines(rfile)
                if lines is None:
                    return False
            head = self._parse_head(lines)
        except BadRequest as e:
            log.info("refused a malformed request from %s: %s", remote, e)
            self._refuse(sock, e.status, str(e))
            return False
        finally:
            waiting.pop(sock, None)
        if head is None:
            return False
        method, target, version, environ, keep_alive = head

        path, _, query = target.partition("?")
        if "%" in path:
            path = unquote(path, "latin-1")
        length = environ.get("CONTENT_LENGTH")
        chunked = "HTTP_TRANSFER_ENCODING" in environ
        try:
            length = self._body_length(length, chunked, environ)
        except BadRequest as e:
            log.info("refused a malformed request from %s: %s", remote, e)
            self._refuse(sock, e.status, str(e))
            return False
        send_continue = None
        if version == "HTTP/1.1" and environ.get("HTTP_EXPECT", "").lower() == "100-continue":
            send_continue = lambda: sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # noqa: E731
        body = Body(rfile, length, chunked, send_continue)
        body.buffered = buffered
        environ["REQUEST_METHOD"] = method
        environ["PATH_INFO"] = path
        environ["QUERY_STRING"] = query
        environ["REMOTE_ADDR"] = remote
        environ["wsgi.input"] = body
        environ["influx_relay.read_deadline"] = deadline

        started = time.monotonic()
        response = []

        def start_response(status, headers, exc_info=None):
            response[:] = [status, headers]

        self.answering += 1
        try:
            try:
                chunks = self.application(environ, start_response)
            except BadRequest as e:
                log.info("refused a malformed request from %s: %s", remote, e)
                self._refuse(sock, e.status, str(e))
                return False
            except ClientGone:
                return False
            except (_TooSlow, gevent.GreenletExit):
                raise
            except Exception:
                log.exception("error answering %s %s from %s", method, path, remote)
                self._refuse(sock, 500, "internal error")
                return False
            status, headers = response
            keep_alive = keep_alive and not self.closed and body.discard()
            data = b"".join(chunks) if len(chunks) != 1 else chunks[0]
            head, keep_alive = self._head(status, headers, data, keep_alive, version)
            sock.sendall(head + data if method != "HEAD" else head)
        finally:
            self.answering -= 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug('%s - - [%s] "%s %s %s" %s %d %.6f', remote,
                      time.strftime("%Y-%m-%d %H:%M:%S"), method, target, version,
                      status.split(" ", 1)[0], len(data), time.monotonic() - started)
        return keep_alive

    @staticmethod
    def _buffered_head(rfile):
        """The request line and headers as lines, and how many bytes of the read
        buffer follow them, when they are all in the buffer already (the
        common case: no wait, so no timer); else (None, 0)."""
        buf = rfile.peek(1)
        end = buf.find(b"\r\n\r\n")
        if end < 0 or end > MAX_REQUEST_LINE:
            return None, 0
        head = buf[:end]
        if b"\n" in head.replace(b"\r\n", b""):
            return None, 0  # bare line feeds: the careful path reads those
        rfile.read(end + 4)
        return head.split(b"\r\n"), len(buf) - end - 4

    @staticmethod
    def _read_lines(rfile):
        """The request line and headers as lines, read one by one within limits;
        None when the client closed before their end."""
        line = rfile.readline(MAX_REQUEST_LINE + 1)
        if len(line) > MAX_REQUEST_LINE:
            raise BadRequest("request line too long (limit %d bytes)" % MAX_REQUEST_LINE, 414)
        if not line.endswith(b"\n"):
            return None
        lines = [line.rstrip(b"\r\n")]
        for _ in range(MAX_HEADERS + 1):
            line = rfile.readline(MAX_HEADER_LINE + 1)
            if line == b"\r\n" or line == b"\n":
                return lines
            if not line.endswith(b"\n"):
                if len(line) > MAX_HEADER_LINE:
                    raise BadRequest("header line too long (limit %d bytes)" % MAX_HEADER_LINE)
                return None
            lines.append(line.rstrip(b"\r\n"))
        raise BadRequest("too many headers (limit %d)" % MAX_HEADERS)

    @staticmethod
    def _parse_head(lines):
        """(method, target, version, environ with the headers, keep-alive), or
        None for a stray empty line (the client sent only CRLF)."""
        parts = lines[0].decode("latin-1").split()
        if len(parts) != 3:
            if parts:
                raise BadRequest("malformed request line %r" % lines[0][:200].decode("latin-1"))
            return None
        method, target, version = parts
        if version != "HTTP/1.1" and version != "HTTP/1.0":
            raise BadRequest("unsupported HTTP version %r" % version[:20])
        if len(lines) > MAX_HEADERS + 1:
            raise BadRequest("too many headers (limit %d)" % MAX_HEADERS)
        environ = {}
        for i in range(1, len(lines)):
            name, sep, value = lines[i].decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise BadRequest("malformed header line %r" % lines[i][:100].decode("latin-1"))
            if "_" in name:
                continue  # as pywsgi and nginx: HTTP_X_A must not be set by "X_A"
            key = _ENVIRON_KEYS.get(name)
            if key is None:
                key = name.upper().replace("-", "_")
                if key != "CONTENT_LENGTH" and key != "CONTENT_TYPE":
                    key = "HTTP_" + key
            value = value.strip()
            if key in environ:
                if key == "CONTENT_LENGTH":
                    if environ[key] != value:
                        raise BadRequest("conflicting Content-Length headers")
                else:
                    environ[key] += "," + value
            else:
                environ[key] = value
        connection = environ.get("HTTP_CONNECTION")
        if version == "HTTP/1.1":
            keep_alive = connection is None or "close" not in connection.lower()
        else:
            keep_alive = connection is not None and "keep-alive" in connection.lower()
        return method, target, version, environ, keep_alive

    @staticmethod
    def _body_length(length, chunked, environ):
        if chunked:
            if environ["HTTP_TRANSFER_ENCODING"].strip().lower() != "chunked":
                raise BadRequest("unsupported Transfer-Encoding %r"
                                 % environ["HTTP_TRANSFER_ENCODING"][:40])
            if length is not None:
                raise BadRequest("a request with both Content-Length and Transfer-Encoding")
            return 0
        if length is None or length == "":
            return 0
        if not length.isdigit() or len(length) > 18:
            raise BadRequest("invalid Content-Length %r" % length[:40])
        return int(length)

    @staticmethod
    def _head(status, headers, data, keep_alive, version):
        """The answer's status line and headers, and whether the connection goes on
        (not when the application said ``Connection: close``)."""
        out = ["HTTP/1.1 ", status, "\r\n"]
        has_length = False
        connection = None
        for name, value in headers:
            lower = name.lower()
            if lower == "content-length":
                has_length = True
            elif lower == "connection":
                connection = value.lower()
                if "close" in connection:
                    keep_alive = False
            out += (name, ": ", value, "\r\n")
        code = status[:3]
        if not has_length and code not in ("204", "304") and code[0] != "1":
            out += ("Content-Length: ", str(len(data)), "\r\n")
        if connection is None:
            if not keep_alive:
                out.append("Connection: close\r\n")
            elif version == "HTTP/1.0":
                out.append("Connection: keep-alive\r\n")
        out += ("Date: ", _http_date(), "\r\n\r\n")
        return "".join(out).encode("latin-1", "replace"), keep_alive

    def _refuse(self, sock, status, message):
        """Answer a request the server refuses itself; the connection then closes."""
        body = json.dumps({"error": message}).encode() + b"\n"
        headers = self.extra_headers + [("Content-Type", _JSON)]
        reason = HTTPStatus(status).phrase
        try:
            head, _ = self._head("%d %s" % (status, reason), headers, body, False, "HTTP/1.1")
            sock.sendall(head + body)
        except OSError:
            pass
