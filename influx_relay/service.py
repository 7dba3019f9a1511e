"""Build the relay from its config, run it, and stop it in order."""

import logging
import signal

import gevent
from gevent.event import Event

from .backend import HTTPBackend
from .errors import RelayError
from .fanout import Fanout
from .http_listener import HTTPListener
from .udp_listener import UDPListener

log = logging.getLogger(__name__)

#: Seconds in-flight requests get to finish after SIGTERM/SIGINT.
SHUTDOWN_GRACE = 10.0


class Relay(object):
    """Every listener of one config, with its outputs."""

    def __init__(self, config):
        self.config = config
        self.http = []
        self.udp = []
        self._stopped = Event()
        self._stopping = False
        for cfg in config.http:
            fanout = Fanout(HTTPBackend(o) for o in cfg.outputs)
            self.http.append(HTTPListener(cfg, fanout))
        for cfg in config.udp:
            self.udp.append(UDPListener(cfg))

    @property
    def listeners(self):
        return self.http + self.udp

    def start(self):
        """Bind every listener, or raise :class:`RelayError` having bound none."""
        started = []
        for listener in self.listeners:
            kind = "http" if listener in self.http else "udp"
            try:
                listener.start()
            except OSError as e:
                for other in started:
                    other.stop(timeout=0)
                raise RelayError(
                    "%s listener %r: cannot listen on %s: %s"
                    % (kind, listener.name, listener.cfg.bind_addr, e.strerror or e)
                )
            started.append(listener)
            host, port = listener.address[:2]
            log.info(
                "%s listener %r on %s:%d -> %s", kind, listener.name, host or "*", port,
                ", ".join(o.name for o in listener.cfg.outputs),
            )

    def stop(self, timeout=SHUTDOWN_GRACE):
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping: waiting up to %gs for requests in flight", timeout)
        jobs = [gevent.spawn(listener.stop, timeout) for listener in self.listeners]
        gevent.joinall(jobs)
        for listener in self.http:
            listener.app.fanout.close()
        log.info("stopped")
        self._stopped.set()

    def wait(self):
        self._stopped.wait()


def run(config):
    """Run the relay until SIGTERM or SIGINT; return the exit status."""
    relay = Relay(config)
    relay.start()

    def on_signal(signum):
        log.info("received %s", signal.Signals(signum).name)
        gevent.spawn(relay.stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, on_signal, signum)
    relay.wait()
    return 0
