"""Scripted fake InfluxDB servers for faults a real one cannot easily produce.

A :class:`FakeBackend` speaks just enough HTTP/1.1 (keep-alive, Content-Length
and chunked bodies; over TLS with ``tls``) and answers each request by its current ``mode``:

* ``("status", code, body)``: that status (``body`` bytes, JSON type), or
  ``("status", code, body, headers)`` with more headers (a dict);
* ``"hang"``: read the request, then never answer;
* ``"reset"``: read the request, then close the connection with RST;
* ``"garbage"``: answer bytes that are not HTTP, then close;
* ``("slow", seconds, code)``: answer ``code`` after ``seconds`` (and a fourth
  item: that body, JSON type);
* a function of the :class:`Request`: returns one of the above for it.

``script`` is a list of modes used by the next requests, one each, before
``mode`` applies again. ``stop()`` closes the port (connections refused);
``start()`` again reopens the same port. Every request is recorded in
``requests``.
"""

import socket
import struct
from collections import namedtuple

import gevent
from gevent.server import DatagramServer, StreamServer

from influx_relay.backend import HTTPBackend
from influx_relay.config import Endpoints, HTTPOutputConfig

Request = namedtuple("Request", "method path query headers body")


class FakeBackend(object):
    def __init__(self, mode=("status", 204, b""), port=0, tls=None):
        self.mode = mode
        self.script = []
        self.port = port
        self.tls = tls  # an ssl.SSLContext: serve HTTPS
        self.requests = []
        self.server = None
        self._conns = set()

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)

    def start(self):
        ssl_args = {"ssl_context": self.tls} if self.tls else {}
        self.server = StreamServer(("127.0.0.1", self.port), self._handle, **ssl_args)
        self.server.init_socket()
        self.server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.start()
        self.port = self.server.server_port

    def stop(self):
        if self.server is not None:
            self.server.stop(timeout=0)
            self.server = None
        for conn in list(self._conns):
            _close(conn)

    @property
    def bodies(self):
        return [r.body for r in self.requests if r.path.endswith("/write")]

    @property
    def lines(self):
        return [line for body in self.bodies for line in body.split(b"\n") if line]

    def _handle(self, conn, address):
        self._conns.add(conn)
        rfile = conn.makefile("rb")
        try:
            while True:
                request = _read_request(rfile)
                if request is None:
                    return
                self.requests.append(request)
                mode = self.script.pop(0) if self.script else self.mode
                if callable(mode):
                    mode = mode(request)
                if mode == "hang":
                    gevent.sleep(3600)
                    return
                if mode == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if mode == "garbage":
                    conn.sendall(b"\x00\x01this is not http\r\n\r\n")
                    return
                if mode[0] == "slow":
                    gevent.sleep(mode[1])
                    mode = ("status", mode[2], mode[3] if len(mode) > 3 else b"")
                code, body = mode[1], mode[2]
                head = "HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (code, len(body))
                if body:
                    head += "Content-Type: application/json\r\n"
                for name, value in (mode[3] if len(mode) > 3 else {}).items():
                    head += "%s: %s\r\n" % (name, value)
                conn.sendall(head.encode() + b"\r\n" + body)
        except OSError:
            return
        finally:
            self._conns.discard(conn)
            rfile.close()
            _close(conn)


def _close(conn):
    try:
        conn.shutdown(socket.SHUT_RDWR)  # like a server that died: the peer sees it at once
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass


def _read_request(rfile):
    line = rfile.readline(65536)
    if not line:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while True:
        h = rfile.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(rfile.readline().split(b";")[0], 16)
            if size == 0:
                rfile.readline()
                break
            body += rfile.read(size)
            rfile.readline()
    else:
        body = rfile.read(int(headers.get("content-length", 0)))
    path, _, query = target.partition("?")
    return Request(method, path, query, headers, body)


class UDPSink(DatagramServer):
    """Records every datagram it receives."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0))
        self.datagrams = []

    @property
    def location(self):
        return "127.0.0.1:%d" % self.server_port

    def do_read(self):
        # Whole datagrams, up to 64 KiB (gevent's own do_read reads 8192 bytes at most).
        try:
            return self._socket.recvfrom(65536)
        except BlockingIOError:
            return None

    def handle(self, data, address):
        self.datagrams.append(data)

    @property
    def lines(self):
        return [line for d in self.datagrams for line in d.split(b"\n") if line]


class Scripted(object):
    """Answers request i with answers[i] (bytes; None: close without answering)."""

    def __init__(self, answers, close_after=False):
        self.answers = list(answers)
        self.close_after = close_after
        self.requests = []
        self.connections = 0
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()

    def handle(self, conn, address):
        self.connections += 1
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                more = conn.recv(65536)
                if not more:
                    return conn.close()
                data += more
            head, _, data = data.partition(b"\r\n\r\n")
            length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")][0]
                         .split(b":")[1])
            while len(data) < length:
                data += conn.recv(65536)
            self.requests.append((head, data[:length]))
            data = data[length:]
            answer = self.answers.pop(0) if self.answers else b"HTTP/1.1 204 No Content\r\n\r\n"
            if answer is None:
                return conn.close()
            conn.sendall(answer)
            if self.close_after:
                return conn.close()

    def backend(self, **kwargs):
        port = self.server.address[1]
        cfg = HTTPOutputConfig(name="b", location="http://127.0.0.1:%d" % port, scheme="http",
                         host="127.0.0.1", port=port, endpoints=Endpoints(), **kwargs)
        return HTTPBackend(cfg)

    def stop(self):
        self.server.stop(timeout=0)


def post(backend, body=b"cpu v=1 1", query="db=x", headers=None):
    return backend.post("/write", query, body, headers or {})
