"""Build the relay from its config, run it, and stop it in order."""

import logging
import signal

import gevent
from gevent.event import Event

from .backend import HTTPBackend
from .buffer import make_buffer
from .errors import RelayError
from .fanout import Fanout
from .http_listener import HTTPListener
from .metrics import Metrics, RequestCounter
from .output import Output
from .udp_listener import UDPListener

log = logging.getLogger(__name__)


class Relay(object):
    """Every listener of one config, with its outputs."""

    def __init__(self, config):
        self.config = config
        self.metrics = Metrics(self)
        self.http = []
        self.udp = []
        self._stopped = Event()
        self._stopping = False
        for cfg in config.http:
            self.http.append(self._http_listener(cfg, _outputs(cfg)))
        for cfg in config.udp:
            self.udp.append(UDPListener(cfg))

    @property
    def listeners(self):
        return self.http + self.udp

    def _http_listener(self, cfg, outputs):
        listener = HTTPListener(cfg, Fanout(outputs))
        app = listener.app
        app.stats = self.metrics.listener_stats(cfg.name)
        app.routes["/metrics"] = self.metrics.serve
        listener.server.application = RequestCounter(app, app.stats)
        return listener

    def start(self):
        """Bind every listener, or raise :class:`RelayError` having bound none."""
        for listener in self.http:
            listener.app.fanout.start()
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

    def stop(self, timeout=None):
        """Stop in order: stop accepting, let requests in flight finish, give memory
        backlogs time to drain, close buffers. Each step is bounded by ``timeout``
        (the config's shutdown-timeout by default)."""
        if self._stopping:
            return
        self._stopping = True
        if timeout is None:
            timeout = self.config.shutdown_timeout
        log.info("stopping: waiting up to %gs for requests in flight", timeout)
        gevent.joinall([gevent.spawn(listener.stop, timeout) for listener in self.listeners])
        gevent.joinall([gevent.spawn(listener.app.fanout.close, timeout) for listener in self.http])
        log.info("stopped")
        self._stopped.set()

    def wait(self):
        self._stopped.wait()


def _outputs(cfg):
    """The outputs of one [[http]] section. Buffers only make sense with two
    backends or more: with one, the client's own retry is the buffer."""
    outputs = []
    for o in cfg.outputs:
        buffer = make_buffer(o) if len(cfg.outputs) > 1 else None
        outputs.append(Output.from_config(o, HTTPBackend(o), buffer))
    if len(cfg.outputs) == 1 and (cfg.outputs[0].buffer_size_mb or cfg.outputs[0].buffer_path):
        log.warning("http listener %r has one output: its retry buffer is not used", cfg.name)
    return outputs


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
