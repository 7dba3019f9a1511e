"""The UDP listener: line protocol datagrams, stamped and copied to every output."""

import logging
import os
import socket
import time

import gevent
from gevent import socket as gsocket
from gevent.server import DatagramServer

from . import lineprotocol, logs
from .errors import LineProtocolError

log = logging.getLogger(__name__)

#: The largest datagram a listener reads whole: a UDP payload is at most 65,507
#: bytes over IPv4 and 65,527 over IPv6 (without jumbograms), so none is ever cut.
MAX_DATAGRAM = 65536


#: Seconds between two tries to resolve an output's host that did not resolve.
RESOLVE_EVERY = 10.0


class UDPOutput(object):
    """A UDP destination, its host resolved at start.

    A host that does not resolve stops nothing: the failure is logged (naming
    the output and the host), what the output is sent meanwhile is dropped and
    counted in ``dropped``, and the host is resolved again, in a greenlet of its
    own and at most every ``RESOLVE_EVERY`` seconds, when there is something to
    send; the output sends again from the first success.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name
        self.mtu = cfg.mtu
        self.address = self.sock = None
        self.sent = 0
        self.dropped = 0
        self._warn = logs.Throttled(log)
        self._unresolved = logs.Throttled(log, logging.ERROR, interval=60.0)
        self._resolver = None  # the greenlet resolving the host again, if one is
        self._next_try = 0.0
        self._failed = self._closed = False
        self._resolve()

    def __str__(self):
        return self.name

    def _resolve(self):
        """Resolve the host once; whether the output can send now."""
        host, port = self.cfg.host, self.cfg.port
        try:
            family, _, _, _, addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0]
        except (OSError, UnicodeError) as e:  # socket.gaierror is an OSError
            self._failed = True
            self._next_try = time.monotonic() + RESOLVE_EVERY
            self._unresolved(
                "udp output %s: cannot resolve host %r: %s; what it is sent is dropped "
                "(and counted) until it resolves, tried again at most every %gs",
                self, host, getattr(e, "strerror", None) or e, RESOLVE_EVERY)
            return False
        if self._closed:
            return False
        self.sock = gsocket.socket(family, socket.SOCK_DGRAM)
        self.address = addr
        if self._failed:
            log.info("udp output %s: host %r resolved to %s: sending again",
                     self, host, addr[0])
        return True

    def _try_again(self):
        if self._resolver is None and not self._closed and time.monotonic() >= self._next_try:
            self._resolver = gevent.spawn(self._resolve)
            self._resolver.link(self._resolved)

    def _resolved(self, greenlet):
        self._resolver = None

    def send(self, lines):
        payloads, too_long = lineprotocol.pack(lines, self.mtu)
        if too_long:
            self.dropped += too_long
            self._warn("udp output %s: dropped %d line(s) longer than its mtu (%d bytes)",
                       self, too_long, self.mtu)
        if self.address is None:
            self.dropped += len(payloads)
            self._try_again()
            return
        for payload in payloads:
            try:
                self.sock.sendto(payload, self.address)
                self.sent += 1
            except OSError as e:
                self.dropped += 1
                self._warn("udp output %s: send failed: %s", self, e)

    def close(self):
        self._closed = True
        if self._resolver is not None:
            self._resolver.kill(block=False)
        if self.sock is not None:
            self.sock.close()


class UDPListener(DatagramServer):
    """One ``[[udp]]`` section, listening. It has the interface every listener
    has (see :mod:`.service`): bind, start, stop, close_unstarted, dup_socket,
    and :meth:`swap` to send to new outputs from the same socket."""

    kind = "udp"

    def __init__(self, cfg, outputs=None, sock=None):
        """``sock``: an already bound socket to read (a reload hands one over)."""
        # Datagrams are handled in the loop that reads them (no greenlet
        # each): handling never waits on the network, and order is kept.
        super().__init__(sock if sock is not None else (cfg.host, cfg.port), spawn=None)
        self.cfg = cfg
        self.name = cfg.name
        self.precision = cfg.precision
        self.unit_ns = lineprotocol.PRECISION_NS[cfg.precision]
        self.outputs = tuple(outputs) if outputs is not None else tuple(UDPOutput(o) for o in cfg.outputs)
        self.malformed = 0
        self.received = 0
        self._warn_malformed = logs.Throttled(log)

    def bind(self):
        """Open the socket now (OSError if it cannot be), before anything starts."""
        self.init_socket()

    def dup_socket(self):
        """A second handle on the socket, for a listener that replaces this one."""
        return gsocket.socket(fileno=os.dup(self.socket.fileno()))

    def close_unstarted(self):
        sock = getattr(self, "socket", None)
        if sock is not None:
            sock.close()

    def swap(self, cfg, outputs):
        """Send to ``outputs`` from now on (a reload changed only those);
        returns the outputs it no longer uses, to be closed."""
        old = [o for o in self.outputs if o not in outputs]
        self.outputs = tuple(outputs)
        self.cfg = cfg
        return old

    def init_socket(self):
        super().init_socket()
        self._datagram = bytearray(MAX_DATAGRAM)
        wanted = self.cfg.read_buffer
        if wanted:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, wanted)
            # Linux caps it at net.core.rmem_max (and reports twice what it grants).
            got = self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
            if got < wanted and not getattr(self, "_warned_rcvbuf", False):
                self._warned_rcvbuf = True
                log.warning("udp %s: read-buffer is %d bytes but the OS granted %d: raise "
                            "net.core.rmem_max (sysctl) to at least %d", self.name, wanted, got,
                            wanted)

    def do_read(self):
        """One datagram, whole. (gevent's DatagramServer reads 8192 bytes at most:
        the rest of a larger datagram would be lost and its last line cut.)"""
        try:
            n, address = self._socket.recvfrom_into(self._datagram)
        except BlockingIOError:
            return None
        return bytes(memoryview(self._datagram)[:n]), address

    def handle(self, data, address):
        self.received += 1
        ts = lineprotocol.stamp(self.unit_ns, time.time_ns())
        try:
            lines, _ = lineprotocol.scan(data, ts)
        except LineProtocolError as e:
            self.malformed += 1
            self._warn_malformed("udp %s: dropped a datagram from %s: %s", self.name, address[0], e)
            return
        if not lines:
            return
        for output in self.outputs:
            output.send(lines)

    def stop(self, timeout=None):
        """Stop reading, and close the outputs."""
        super().stop(timeout=timeout)
        for output in self.outputs:
            output.close()
