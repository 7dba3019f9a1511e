"""A misbehaving front for a real influxd: the faults a real server rarely makes on cue.

A :class:`FaultProxy` listens on its own 127.0.0.1 port and reads each HTTP
request; what it does with it depends on its current ``mode``:

* ``"pass"``: forward it to the influxd behind it and send back its answer;
* ``"hang"``: accept and read it, then never answer (until the client goes);
* ``"reset"``: start the answer (``HTTP/1.1 204 No Con``), then reset the
  connection (RST, not FIN);
* ``"garbage"``: answer bytes that are not HTTP, then close;
* ``("slow", seconds)``: wait that long, then forward it, if the client is
  still there (a client that gave up does not get a stale write applied
  behind its back, long after it moved on).

Switching back to ``"pass"`` heals it: the influxd behind holds what was
forwarded, so a test can compare it with a healthy server. It runs on threads
and the standard library (the system tests are not monkey-patched), and
every wait is bounded by ``stop()``.
"""

import http.client
import select
import socket
import struct
import threading
import time

HOST = "127.0.0.1"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class FaultProxy(object):
    def __init__(self, upstream_port, mode="pass"):
        self.upstream_port = upstream_port
        self.mode = mode
        self.requests = 0  # requests read, whatever was done with them
        self._stop = threading.Event()
        self._conns = set()
        self._lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((HOST, 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        _close(self.sock)  # shutdown() wakes the accept() that close() alone would not
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _close(conn)
        self._thread.join(5)

    @property
    def open_connections(self):
        with self._lock:
            return len(self._conns)

    def _accept(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        upstream = None
        reset = False
        rfile = conn.makefile("rb")
        try:
            while not self._stop.is_set():
                request = _read_request(rfile)
                if request is None:
                    return
                self.requests += 1
                mode = self.mode
                if mode == "hang":
                    self._wait_for_close(conn, None)
                    return
                if mode == "reset":
                    conn.sendall(b"HTTP/1.1 204 No Con")
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    reset = True  # close() alone, which sends the RST
                    return
                if mode == "garbage":
                    conn.sendall(b"\x00\x01\x02 this is not HTTP \xff\xfe\r\n\r\n")
                    return
                if isinstance(mode, tuple) and mode[0] == "slow":
                    if self._wait_for_close(conn, mode[1]):
                        return  # the client gave up
                if upstream is None:
                    upstream = http.client.HTTPConnection(HOST, self.upstream_port, timeout=30)
                try:
                    answer = _forward(upstream, request)
                except (OSError, http.client.HTTPException):
                    return  # influxd is gone: so is this connection
                conn.sendall(answer)
        except OSError:
            return
        finally:
            with self._lock:
                self._conns.discard(conn)
            rfile.close()
            if reset:
                conn.close()
            else:
                _close(conn)
            if upstream is not None:
                upstream.close()

    def _wait_for_close(self, conn, seconds):
        """Wait ``seconds`` (None: forever) or until the client closes; True if it did."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._stop.is_set():
            wait = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if wait <= 0:
                return False
            readable, _, _ = select.select([conn], [], [], wait)
            if readable:
                try:
                    if not conn.recv(1, socket.MSG_PEEK):
                        return True
                except OSError:
                    return True
                time.sleep(wait)  # pipelined bytes: not ours to read yet
        return True


def _read_request(rfile):
    line = rfile.readline(65536)
    if not line or not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = []
    length = 0
    while True:
        h = rfile.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
        if k.strip().lower() == "content-length":
            length = int(v)
    body = rfile.read(length) if length else b""
    return method, target, headers, body


def _forward(upstream, request):
    method, target, headers, body = request
    upstream.request(method, target, body=body,
                     headers={k: v for k, v in headers if k.lower() not in _HOP_BY_HOP})
    resp = upstream.getresponse()
    data = resp.read()
    head = ["HTTP/1.1 %d %s" % (resp.status, resp.reason)]
    for k, v in resp.getheaders():
        if k.lower() not in _HOP_BY_HOP:
            head.append("%s: %s" % (k, v))
    head.append("Content-Length: %d" % len(data))
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


def _close(conn):
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass
