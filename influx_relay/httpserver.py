"""A lean HTTP/1.1 server for the relay's listeners, on gevent's StreamServer.

gevent's pywsgi spent about half of a small write's CPU on the relay's side of
the request (the email-package header parser, a full WSGI environ, chunked
output machinery). This server does what the relay's listeners need. It reads
each request with :mod:`.http11` (RFC 9112's grammar, strictly), hands the
application a :class:`Request` and sends back the :class:`~.responses.Response`
it returns::

    def application(request):
        body = request.read_body(limit)   # or BodyError(400, 408, 413)
        return Response(204, b"", "")

What it does:

- HTTP/1.1 keep-alive (and HTTP/1.0 with ``Connection: keep-alive``),
  pipelined requests, Content-Length and chunked request bodies,
  ``Expect: 100-continue`` (the 100 goes out when the application first reads
  the body, so a body it refuses unread is never asked for), HEAD, and
  answers whose body is an iterable of bytes (sent chunked, as they come).
- A body the application leaves unread is skipped when it has all arrived
  already; else the connection closes after the answer (``Connection:
  close``), so that the relay never waits for, nor reads, a body it does not
  want. The application says so itself with :meth:`Request.refuse_body`.
- Refusals with an answer that names them, then the connection closed:
  request line over 8 KB (414), a header line over 64 KB, more than 100
  headers, anything :mod:`.http11` refuses (400, or 505 for HTTP/2 and up).
- A read timeout: a connection may stay idle for ``read_timeout`` between
  requests; once a request begins, its line and headers must arrive within
  ``read_timeout`` (else 408 and closed), and :meth:`Request.read_body` reads
  the body by the same deadline.
- A bounded pool of connection greenlets that lets go of the connection
  waiting longest for a request when it is full (see :class:`ConnectionPool`),
  and, when the process is out of file descriptors, one throttled log line
  instead of a traceback per refused connection.
- ``answering``: how many requests are being answered, so that stopping can
  wait for those and not for idle keep-alive connections.
"""

import errno
import json
import logging
import socket
import time
from email.utils import formatdate
from typing import Callable, Dict
from urllib.parse import parse_qsl, unquote

import gevent
from gevent.pool import Pool
from gevent.server import StreamServer

from . import http11, logs
from .http11 import MAX_HEADER_LINE, MAX_HEADERS, MAX_REQUEST_LINE, ProtocolError, RequestHead
from .responses import Response

log = logging.getLogger(__name__)

_JSON = "application/json"
#: Bytes of a body read from the connection at a time.
_READ = 64 * 1024
#: Seconds without accepting after the process ran out of file descriptors.
ACCEPT_PAUSE = 0.1
#: Closing a connection whose client may still be sending (a body refused
#: unread, a malformed request), the server first says it is done writing, then
#: reads and drops what comes for at most this long and this much: a close with
#: unread bytes sends a reset, which can destroy the answer before the client
#: reads it (nginx's lingering close does the same).
LINGER_SECONDS = 2.0
LINGER_BYTES = 4 * 1024 * 1024

#: _one_request's verdict: close, but let the client read the answer first.
_LINGER = "linger"


class BodyError(Exception):
    """A request body the server will not hand over: ``status`` (400, 408 or
    413) and a message naming why. The connection closes after the answer."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


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


class Request(object):
    """One request, as the application sees it.

    ``method``, ``path`` (percent-decoded), ``query`` (the raw query string),
    ``version``, ``headers`` (lower-case names; repeated ones joined with ", "),
    ``remote`` (the client's address). The body is read with :meth:`read_body`.
    ``close`` says whether the connection closes after the answer. ``note``:
    what the application adds to the request's line in the debug log.
    """

    __slots__ = ("method", "target", "path", "query", "version", "headers", "remote", "close",
                 "note", "_rfile", "_left", "_chunked", "_continue", "_deadline", "_buffered", "_read")

    method: str
    path: str
    query: str
    headers: Dict[str, str]
    remote: str
    close: bool
    note: str

    def __init__(self, head: RequestHead, remote: str, rfile, deadline: float,
                 send_continue=None, buffered: int = 0):
        self.method = head.method
        self.target = head.target
        path, _, self.query = head.target.partition("?")
        self.path = unquote(path, "latin-1") if "%" in path else path
        self.version = head.version
        self.headers = head.headers
        self.remote = remote
        self.close = not head.keep_alive
        self.note = ""
        self._rfile = rfile
        self._left = head.length  # bytes of a Content-Length body not read yet
        self._chunked = http11.ChunkedDecoder() if head.chunked else None
        self._continue = send_continue  # a callable, until the 100 is sent
        self._deadline = deadline
        self._buffered = buffered  # bytes of the body in the read buffer already
        self._read = 0

    def header(self, name: str, default: str = "") -> str:
        """The value of header ``name`` (lower case), or ``default``."""
        return self.headers.get(name, default)

    def form(self, body: bytes):
        """The fields of ``body`` as a form (``application/x-www-form-urlencoded``),
        in order: ``[(name, value)]``, ``[]`` for an empty body, None for a body
        of another type."""
        if not body.strip():
            return []
        if self.header("content-type").split(";")[0].strip().lower() != \
                "application/x-www-form-urlencoded":
            return None
        return parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)

    @property
    def body_length(self) -> int:
        """The declared Content-Length (0 without one, and for a chunked body)."""
        return self._left + self._read if self._chunked is None else 0

    @property
    def chunked(self) -> bool:
        return self._chunked is not None

    def refuse_body(self) -> None:
        """The body will not be read: the connection closes after the answer."""
        self.close = True

    def read_body(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes, by the request's deadline.

        Raises :class:`BodyError`: 413 for a body over ``limit`` (a declared
        length is refused before anything is read, and no 100 Continue is
        sent), 408 when it does not arrive in time, 400 for bad chunked
        framing; the rest of the body is then never read. Raises
        :class:`ClientGone` when the client leaves in the middle.
        """
        if self._chunked is None and self._left > limit:
            self.refuse_body()
            raise BodyError(413, "request body too large (limit %d bytes)" % limit)
        if self._continue is not None:
            send, self._continue = self._continue, None
            if self._chunked is not None or self._left:
                send()
        if self._chunked is None and self._left <= self._buffered - self._read:
            return self._take(self._left)  # here already: no wait, no timer
        left = max(0.001, self._deadline - time.monotonic())
        try:
            with gevent.Timeout(left, socket.timeout):
                if self._chunked is None:
                    return self._take(self._left)
                return self._dechunk(limit)
        except socket.timeout:
            self.refuse_body()
            raise BodyError(408, "timed out reading the request body")
        except ProtocolError as e:
            self.refuse_body()
            raise BodyError(e.status, str(e))

    def _take(self, n):
        data = self._rfile.read(n) if n else b""
        if len(data) < n:
            raise ClientGone("the client closed the connection in the middle of its body")
        self._left -= n
        self._read += n
        return data

    def _dechunk(self, limit):
        decoder, rfile = self._chunked, self._rfile
        pieces = []
        size = 0
        while not decoder.done:
            data = rfile.peek(_READ)
            if not data:
                raise ClientGone("the client closed the connection in the middle of its body")
            got, used = decoder.feed(data)
            rfile.read(used)
            for piece in got:
                size += len(piece)
                pieces.append(piece)
            if size > limit:
                self.refuse_body()
                raise BodyError(413, "request body too large (limit %d bytes)" % limit)
        self._chunked = None  # read to its end
        self._left = 0
        return b"".join(pieces)

    def unread(self) -> bool:
        """Whether part of the body is still to come (or to be read)."""
        return bool(self._left) or self._chunked is not None

    def _discard(self):
        """Drop what is left of the body if it is all in the read buffer already;
        whether the connection can go on. A body that would have to be waited
        for (or asked for with a 100 Continue) is not: the connection closes."""
        if self.close:
            return False
        if self._chunked is None and not self._left:
            return True
        if self._chunked is not None or self._continue is not None:
            return False
        if self._left > self._buffered - self._read:
            return False
        self._rfile.read(self._left)
        self._left = 0
        return True


def _linger(sock):
    """Done writing: drop what the client still sends, for a bounded while (see
    LINGER_SECONDS), so that closing does not reset the answer away."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        left = LINGER_BYTES
        while left > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            sock.settimeout(remaining)
            data = sock.recv(min(_READ, left))
            if not data:
                break
            left -= len(data)
    except OSError:
        pass


_date_cache = [0, ""]


def _http_date():
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0] = now
        _date_cache[1] = formatdate(now, usegmt=True)
    return _date_cache[1]


#: What the server serves: a request in, its answer out.
Application = Callable[[Request], Response]


class HTTPServer(StreamServer):
    """Serves an application of the relay's kind (``application(request) ->
    Response``) on a StreamServer.

    ``headers``: (name, value) pairs added to every answer.
    """

    def __init__(self, listener, application: Application, read_timeout: float,
                 max_connections: int, ssl_context=None, headers=()):
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
        self._warn_accept = logs.Throttled(log, logging.ERROR)

    # -- accepting ---------------------------------------------------------------

    def do_read(self):
        try:
            return super().do_read()
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            # Out of file descriptors: the client waits in the backlog (or is
            # refused by the kernel) while the connections already open are
            # served, which frees some. One line per 10 s, not one traceback
            # per attempt, and a pause before accepting again (as gevent's own
            # back-off does after an error).
            self._warn_accept("http listener on %s: cannot accept a connection: %s (raise the "
                              "relay's open files limit, LimitNOFILE)", self._shown_address(),
                              e.strerror)
            self.stop_accepting()
            timer = self.loop.timer(ACCEPT_PAUSE)
            timer.start(self._accept_again, timer)
            return None

    def _accept_again(self, timer):
        timer.close()
        if self.started and not self.closed:
            self.start_accepting()

    def _shown_address(self):
        address = self.address
        return "%s:%s" % address[:2] if isinstance(address, tuple) else str(address)

    # -- serving -----------------------------------------------------------------

    def handle(self, sock, address):
        waiting = self.pool.waiting
        sock.settimeout(self.read_timeout)
        rfile = sock.makefile("rb")
        remote = address[0] if isinstance(address, tuple) and address else "-"
        try:
            while True:
                verdict = self._one_request(sock, rfile, remote, waiting)
                if verdict is not True:
                    break
            if verdict == _LINGER:
                waiting[sock] = sock  # the first to go when the listener is full
                _linger(sock)
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
        """Read and answer one request; whether the connection goes on (True),
        closes (False), or closes once the client had time to read (_LINGER)."""
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
            head = http11.parse_request_head(lines)
        except ProtocolError as e:
            log.info("refused a malformed request from %s: %s", remote, e)
            self._refuse(sock, e.status, str(e))
            return _LINGER
        finally:
            waiting.pop(sock, None)
        if head is None:
            return False
        send_continue = None
        if head.version == "HTTP/1.1" and head.headers.get("expect", "").lower() == "100-continue":
            send_continue = lambda: sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")  # noqa: E731
        request = Request(head, remote, rfile, deadline, send_continue, buffered)

        started = time.monotonic()
        self.answering += 1
        try:
            try:
                response = self.application(request)
            except ClientGone:
                return False
            except BodyError as e:  # an application that did not answer it itself
                self._refuse(sock, e.status, e.message)
                return _LINGER
            except (_TooSlow, gevent.GreenletExit):
                raise
            except Exception:
                log.exception("error answering %s %s from %s", head.method, request.path, remote)
                self._refuse(sock, 500, "internal error")
                return False
            keep_alive = not self.closed and request._discard()
            sent, keep_alive = self._send(sock, head, response, keep_alive)
        finally:
            self.answering -= 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug('%s "%s %s %s" %d %d %.6fs%s', remote, head.method, head.target,
                      head.version, response.status, sent, time.monotonic() - started,
                      " " + request.note if request.note else "")
        if not keep_alive and request.unread():
            return _LINGER
        return keep_alive

    @staticmethod
    def _buffered_head(rfile):
        """The request line and headers as lines, and how many bytes of the read
        buffer follow them, when they are all in the buffer already (the
        common case: no wait, so no timer); else (None, 0)."""
        buf = rfile.peek(1)
        split = http11.split_head(buf)
        if split is None or split[1] > MAX_REQUEST_LINE:
            return None, 0
        lines, end = split
        rfile.read(end)
        return lines, len(buf) - end

    @staticmethod
    def _read_lines(rfile):
        """The request line and headers as lines, read one by one within limits;
        None when the client closed before their end."""
        raw = rfile.readline(MAX_REQUEST_LINE + 1)
        if len(raw) > MAX_REQUEST_LINE:
            raise ProtocolError("request line too long (limit %d bytes)" % MAX_REQUEST_LINE, 414)
        if not raw.endswith(b"\n"):
            return None
        lines = [http11.line_of(raw)]
        for _ in range(MAX_HEADERS + 1):
            raw = rfile.readline(MAX_HEADER_LINE + 1)
            if raw == b"\r\n" or raw == b"\n":
                return lines
            if not raw.endswith(b"\n"):
                if len(raw) > MAX_HEADER_LINE:
                    raise ProtocolError("header line too long (limit %d bytes)" % MAX_HEADER_LINE)
                return None
            lines.append(http11.line_of(raw))
        raise ProtocolError("too many headers (limit %d)" % MAX_HEADERS)

    def _send(self, sock, head, response, keep_alive):
        """Send ``response``; ``(bytes of body sent, whether the connection goes on)``."""
        body = response.body
        streamed = not isinstance(body, (bytes, bytearray, memoryview))
        if streamed and head.version == "HTTP/1.0":
            keep_alive = False  # the end of the body is the end of the connection
        out = ["HTTP/1.1 ", http11.status_line(response.status), "\r\n"]
        for name, value in self.extra_headers:
            out += (name, ": ", value, "\r\n")
        if response.content_type and (body or streamed):
            out += ("Content-Type: ", response.content_type, "\r\n")
        for name, value in response.headers:
            if name.lower() == "connection" and "close" in value.lower():
                keep_alive = False
                continue
            out += (name, ": ", value, "\r\n")
        code = response.status
        if streamed:
            if head.version == "HTTP/1.1":
                out.append("Transfer-Encoding: chunked\r\n")
        elif code != 204 and code != 304 and code >= 200:
            out += ("Content-Length: ", str(len(body)), "\r\n")
        if not keep_alive:
            out.append("Connection: close\r\n")
        elif head.version == "HTTP/1.0":
            out.append("Connection: keep-alive\r\n")
        out += ("Date: ", _http_date(), "\r\n\r\n")
        data = "".join(out).encode("latin-1", "replace")
        if head.method == "HEAD":
            if streamed and hasattr(body, "close"):
                body.close()
            sock.sendall(data)
            return 0, keep_alive
        if not streamed:
            sock.sendall(data + body if body else data)
            return len(body), keep_alive
        return self._stream(sock, data, body, head.version == "HTTP/1.1"), keep_alive

    @staticmethod
    def _stream(sock, head, chunks, chunked):
        """Send a body as it comes, one chunk per piece (chunked for HTTP/1.1)."""
        sent = 0
        sock.sendall(head)
        try:
            for piece in chunks:
                if not piece:
                    continue
                sent += len(piece)
                if chunked:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    sock.sendall(piece)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return sent

    def _refuse(self, sock, status, message):
        """Answer a request the server refuses itself; the connection then closes."""
        body = json.dumps({"error": message}).encode() + b"\n"
        out = ["HTTP/1.1 ", http11.status_line(status), "\r\n"]
        for name, value in self.extra_headers:
            out += (name, ": ", value, "\r\n")
        out += ("Content-Type: ", _JSON, "\r\nContent-Length: ", str(len(body)),
                "\r\nConnection: close\r\nDate: ", _http_date(), "\r\n\r\n")
        try:
            sock.sendall("".join(out).encode("latin-1", "replace") + body)
        except OSError:
            pass
