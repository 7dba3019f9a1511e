"""The relay's HTTP/1.1 client: requests to one server over kept-alive connections.

Writes, retries, pings, /admin queries and /query all go through it, over
plain HTTP or TLS alike, so an https backend takes the same path the plain
tests run. urllib3 (with http.client and the email package parsing every
response's headers) was most of the relay's CPU per small write; a backend's
answer is short and simple, so this reads it directly, with :mod:`.http11`
checking its grammar (a chunk size of ``-1`` or a Content-Length of ``+5`` is
no answer).

Up to ``size`` idle connections are kept (more requests at once open more
connections, closed after use). A request that fails on a kept-alive
connection before any byte of an answer arrives (the server had closed it
while idle) is sent once more on a new connection; that may deliver a write
twice, which stamped timestamps make harmless (the point overwrites itself).

Time is the caller's to bound: a request runs until it is answered or the
greenlet's ``gevent.Timeout`` fires (only connecting has a timeout of its own).
"""

import ipaddress
import socket

import gevent
from gevent import socket as gsocket

from . import __version__, http11
from .http11 import MAX_RESPONSE_HEAD, ProtocolError
from .responses import Response

USER_AGENT = "influx-relay/%s" % __version__

#: Bodies up to this size go out in the same send as the request head.
_JOIN_BELOW = 64 * 1024
_CHUNK = 64 * 1024


class Stale(Exception):
    """A kept-alive connection the server had closed."""


class IdleTimeout(socket.timeout):
    """A streamed answer that stopped coming for longer than its idle timeout."""


class ConnectionPool(object):
    """HTTP/1.1 to one server, ``host:port`` (or the unix socket ``unix_path``);
    TLS when ``ssl_context`` is given."""

    def __init__(self, host, port, size, connect_timeout, ssl_context=None, unix_path=None):
        self.host = host
        self.address = (host, port)
        self.unix_path = unix_path
        default = 443 if ssl_context is not None else 80
        shown = "[%s]" % host if ":" in host else host
        self.host_header = shown if port == default else "%s:%d" % (shown, port)
        # An IP address is connected to as it is: gevent resolves every other
        # host name in a thread pool, a wait (and a hop to another thread) that
        # an address does not need.
        try:
            version = ipaddress.ip_address(host).version
        except ValueError:
            self.family = None
        else:
            self.family = socket.AF_INET6 if version == 6 else socket.AF_INET
        self.ssl_context = ssl_context
        self.size = size
        self.connect_timeout = connect_timeout
        self.idle = []
        self.closed = False

    # -- requests ----------------------------------------------------------------

    def request(self, method, target, body=b"", headers=()):
        """One exchange; returns the whole :class:`Response`. Raises OSError
        (refused, reset, TLS) or :class:`ProtocolError` (no HTTP answer), and a
        ValueError for a header that cannot be sent as one (a CR or LF in it)."""
        head = self._head(method, target, body, headers)
        if len(body) < _JOIN_BELOW:
            head, body = head + body, b""
        return self._send(head, body, method == "HEAD", stream=False)

    def stream(self, method, target, body=b"", headers=()):
        """Like :meth:`request`, but returns as soon as the head is read: a
        :class:`Streamed` whose body is read as it is iterated."""
        head = self._head(method, target, body, headers)
        if len(body) < _JOIN_BELOW:
            head, body = head + body, b""
        return self._send(head, body, method == "HEAD", stream=True)

    def _head(self, method, target, body, headers):
        out = ["%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nContent-Length: %d\r\n"
               % (method, http11.safe_target(target), self.host_header, USER_AGENT, len(body))]
        encoding = "Accept-Encoding: identity\r\n"  # unless the caller asks for more (a query's gzip)
        for name, value in headers:
            http11.check_field(name, value)
            if name == "Accept-Encoding":
                encoding = ""
            out.append("%s: %s\r\n" % (name, value))
        out.append(encoding + "\r\n")
        return "".join(out).encode("latin-1")

    def _send(self, head, body, no_body, stream):
        if self.idle:
            try:
                return self._exchange(self.idle.pop(), head, body, no_body, stream)
            except Stale:
                # Closed by the server while idle (a restart, an idle timeout):
                # so are the other idle ones, most likely.
                self.close_idle()
        sock = self._connect()
        return self._exchange(sock, head, body, no_body, stream, fresh=True)

    def _connect(self):
        if self.unix_path is not None:
            sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(self.unix_path)
                sock.settimeout(None)
            except BaseException:
                sock.close()
                raise
            return sock
        if self.family is None:
            sock = gsocket.create_connection(self.address, timeout=self.connect_timeout)
        else:
            sock = gsocket.socket(self.family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.connect_timeout)
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                # The handshake, within the connect timeout too.
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
            sock.settimeout(None)  # the caller's Timeout bounds the whole exchange
        except BaseException:
            sock.close()
            raise
        return sock

    def _exchange(self, sock, head, body, no_body, stream, fresh=False):
        reader = _Reader(sock)
        answered = False
        try:
            try:
                sock.sendall(head)
                if body:
                    sock.sendall(body)
                data = reader.first()
            except OSError:
                if fresh:
                    raise
                raise Stale()
            if not data:
                if fresh:
                    raise ProtocolError("connection closed without an answer")
                raise Stale()
            response_head = _read_head(reader)
            if stream:
                answered = True
                return Streamed(self, sock, reader, response_head, no_body)
            content = b"".join(_body(reader, response_head, no_body))
            answered = True
        finally:
            if not answered:
                sock.close()
        self._release(sock, _reusable(response_head, no_body) and not reader.left())
        return _response(response_head, content)

    def _release(self, sock, keep):
        if keep and not self.closed and len(self.idle) < self.size:
            self.idle.append(sock)
        else:
            sock.close()

    def close_idle(self):
        idle, self.idle = self.idle, []
        for sock in idle:
            sock.close()

    def close(self):
        self.closed = True
        self.close_idle()


class Streamed(object):
    """A response whose head has been read: ``status``, ``headers`` (lower-case
    names), ``content_type``; iterate it for the body, as it comes, each wait
    for more bounded by ``idle_timeout`` (socket.timeout past it). Iterated to
    its end, the connection goes back to the pool; :meth:`close` before that
    closes it. ``failure(exc)``, if set, turns what reading raises into the
    exception the caller sees."""

    def __init__(self, pool, sock, reader, head, no_body):
        self.status = head.status
        self.headers = head.headers
        self.content_type = head.headers.get("content-type", "")
        self.idle_timeout = None
        self.failure = None
        self._pool, self._sock, self._reader, self._head = pool, sock, reader, head
        self._no_body = no_body

    def __iter__(self):
        sock = self._sock
        if sock is None:
            return
        done = False
        pieces = _body(self._reader, self._head, self._no_body)
        try:
            while True:
                try:
                    with gevent.Timeout(self.idle_timeout,
                                        IdleTimeout("no data for %gs" % self.idle_timeout)):
                        piece = next(pieces, None)
                except Exception as e:
                    if self.failure is not None:
                        raise self.failure(e)
                    raise
                if piece is None:
                    break
                yield piece
            done = True
        finally:
            self._sock = None
            if done:
                self._pool._release(sock, _reusable(self._head, self._no_body)
                                    and not self._reader.left())
            else:
                sock.close()

    def read(self):
        """The whole body (for small answers: an error, say)."""
        return b"".join(self)

    def close(self):
        """Done with it, whether or not all of it was read."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Reader(object):
    """What has come from a socket and is not taken yet."""

    __slots__ = ("sock", "data", "pos")

    def __init__(self, sock):
        self.sock = sock
        self.data = b""
        self.pos = 0

    def first(self):
        self.data = self.sock.recv(_CHUNK)
        return self.data

    def more(self, what):
        """Read more; ProtocolError if the connection closed in ``what``."""
        chunk = self.sock.recv(_CHUNK)
        if not chunk:
            raise ProtocolError("connection closed in %s" % what)
        self.data = self.data[self.pos:] + chunk
        self.pos = 0

    def left(self):
        return len(self.data) - self.pos


def _read_head(reader):
    """The first final (not 1xx) response head on the connection."""
    while True:
        split = http11.split_head(reader.data, reader.pos)
        while split is None:
            if reader.left() > MAX_RESPONSE_HEAD:
                raise ProtocolError("response head too long")
            reader.more("the response head")
            split = http11.split_head(reader.data, reader.pos)
        lines, reader.pos = split
        head = http11.parse_response_head(lines)
        if 100 <= head.status < 200:  # an interim answer (100 Continue): the real one follows
            if not reader.left():
                reader.more("the response head")
            continue
        return head


def _body(reader, head, no_body):
    """The body of a response, piece by piece as it comes."""
    if no_body or head.status in (204, 304):
        return
    if head.chunked:
        decoder = http11.ChunkedDecoder(response=True)
        while True:
            if reader.left():
                pieces, used = decoder.feed(reader.data[reader.pos:] if reader.pos else reader.data)
                reader.pos += used
                for piece in pieces:
                    yield piece
                if decoder.done:
                    return
            reader.more("a chunked body")
    elif head.length is not None:
        left = head.length
        while left:
            if not reader.left():
                reader.more("the response body")
            take = min(left, reader.left())
            yield reader.data[reader.pos:reader.pos + take]
            reader.pos += take
            left -= take
    else:  # the body ends when the connection does
        if reader.left():
            yield reader.data[reader.pos:]
            reader.pos = len(reader.data)
        while True:
            chunk = reader.sock.recv(_CHUNK)
            if not chunk:
                return
            yield chunk


def _reusable(head, no_body):
    """Whether the connection may serve another request after this answer: not
    when the server said close, nor when the body ended with the connection."""
    return head.keep_alive and (no_body or head.chunked or head.length is not None
                                or head.status in (204, 304))


def _response(head, content):
    return Response(head.status, content, head.headers.get("content-type", ""))
