"""Build the relay from its config, run it, reload it, and stop it in order."""

import dataclasses
import logging
import os
import signal
import ssl

import gevent
from gevent import socket as gsocket
from gevent.event import Event
from gevent.lock import Semaphore

from . import config as config_mod, logs, systemd
from .backend import HTTPBackend
from .buffer import make_buffer
from .errors import RelayError
from .fanout import Fanout
from .http_listener import HTTPListener, WriteApp, tls_context
from .metrics import Metrics, RequestCounter
from .output import Output
from .udp_listener import UDPListener, UDPOutput

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
        self._lock = Semaphore()  # one reload at a time, and none during stop
        self._retiring = []       # greenlets stopping what a reload replaced
        for cfg in config.http:
            self.http.append(self._http_listener(cfg, _outputs(cfg)))
        for cfg in config.udp:
            self.udp.append(UDPListener(cfg))

    @property
    def listeners(self):
        return self.http + self.udp

    def _http_listener(self, cfg, outputs, sock=None):
        listener = HTTPListener(cfg, Fanout(outputs), sock=sock)
        self._instrument(listener.app)
        listener.server.application = RequestCounter(listener.app, listener.app.stats)
        return listener

    def _write_app(self, cfg, outputs):
        app = WriteApp(cfg, Fanout(outputs))
        self._instrument(app)
        return app

    def _instrument(self, app):
        app.stats = self.metrics.listener_stats(app.cfg.name)
        app.routes["/metrics"] = self.metrics.serve

    def start(self):
        """Bind every listener, or raise :class:`RelayError` having bound none."""
        for listener in self.http:
            listener.app.fanout.start()
        started = []
        for listener in self.listeners:
            try:
                _bind(listener)
                listener.start()
            except (OSError, RelayError) as e:
                for other in started:
                    other.stop(timeout=0)
                if isinstance(e, RelayError):
                    raise
                raise RelayError("%s listener %r: cannot start: %s" % (
                    _kind(listener), listener.name, e.strerror or e))
            started.append(listener)
            _announce(listener)

    def stop(self, timeout=None):
        """Stop in order: stop accepting, let requests in flight finish, give memory
        backlogs time to drain, close buffers. Each step is bounded by ``timeout``
        (the config's shutdown-timeout by default)."""
        if self._stopping:
            return
        self._stopping = True
        with self._lock:  # let a reload in progress finish first
            pass
        if timeout is None:
            timeout = self.config.shutdown_timeout
        log.info("stopping: waiting up to %gs for requests in flight", timeout)
        gevent.joinall([gevent.spawn(listener.stop, timeout) for listener in self.listeners])
        gevent.joinall([gevent.spawn(listener.app.fanout.close, timeout) for listener in self.http])
        gevent.joinall(self._retiring, timeout=timeout)
        log.info("stopped")
        self._stopped.set()

    def wait(self):
        self._stopped.wait()

    # -- reload ----------------------------------------------------------------

    def reload(self, new=None):
        """Load the config file again (or use ``new``) and apply what changed.

        Listeners and outputs whose config is unchanged keep running untouched:
        their sockets, connections and buffers. A listener whose address is
        unchanged keeps its socket. A config that is invalid, or whose new
        listeners cannot bind, changes nothing. Returns whether it was applied.
        """
        if self._stopping:
            return False
        with self._lock:
            if self._stopping:
                return False
            path = self.config.path
            try:
                if new is None:
                    new = config_mod.load(path)
                changes = self._apply(new)
            except RelayError as e:
                log.error("reload rejected, the running config stays: %s", e)
                self.metrics.reloaded(False)
                return False
            self.config = new
            self.metrics.reloaded(True)
            log.info("config %s reloaded: %s; %s", path, _counts(new),
                     "%d change(s)" % changes if changes else "no changes")
            return True

    def _apply(self, new):
        """Build what ``new`` adds, then swap it in; return the number of changes.

        Everything that can fail (binding, TLS files, buffers) happens before
        the first change to the running relay, and is undone if it fails.
        """
        http_plan = _match(self.http, new.http)
        udp_plan = _match(self.udp, new.udp)
        built, bound, outputs_made = [], [], []
        renewed = []  # (listener kept, its TLS context read again)
        try:
            http_steps = []
            for cfg, old in http_plan:
                if old is not None and cfg.ssl_combined_pem \
                        and old.cfg.ssl_combined_pem == cfg.ssl_combined_pem:
                    # The same path may hold a renewed certificate: read it again.
                    renewed.append((old, _tls_context(cfg)))
                if old is not None and old.cfg == cfg:
                    http_steps.append(("keep", cfg, old, None, ()))
                    continue
                outputs, reused = _outputs_reusing(cfg, old.app.fanout.outputs if old else ())
                outputs_made.extend(o for o in outputs if o not in reused)
                if old is not None and old.cfg.ssl_combined_pem == cfg.ssl_combined_pem:
                    # A new app even when only the outputs changed: what it
                    # derives from them (filters, the APIs they speak) must follow.
                    app = self._write_app(cfg, outputs)
                    http_steps.append(("settings", cfg, old, app, reused))
                    continue
                sock = _dup(old.server.socket) if old is not None else None
                listener = self._http_listener(cfg, outputs, sock=sock)
                built.append(listener)
                if sock is None:
                    _bind(listener)
                    bound.append(listener)
                http_steps.append(("rebuild" if old else "add", cfg, old, listener, reused))

            udp_steps = []
            for cfg, old in udp_plan:
                if old is not None and old.cfg == cfg:
                    udp_steps.append(("keep", cfg, old, None))
                    continue
                if old is not None and _settings(old.cfg) == _settings(cfg):
                    kept = {o.cfg: o for o in old.outputs}
                    outputs = tuple(kept.get(o) or UDPOutput(o) for o in cfg.outputs)
                    udp_steps.append(("outputs", cfg, old, outputs))
                    continue
                sock = _dup(old.socket) if old is not None else None
                listener = UDPListener(cfg, sock=sock)
                built.append(listener)
                if sock is None:
                    _bind(listener)
                    bound.append(listener)
                udp_steps.append(("rebuild" if old else "add", cfg, old, listener))
        except Exception as e:
            for listener in built:
                _close_unstarted(listener)
            for output in outputs_made:
                output.close(0)
            if isinstance(e, RelayError):
                raise
            log.exception("reload: unexpected error while building the new config")
            raise RelayError("cannot build the new config: %s" % e)

        # From here nothing fails: swap the new parts in.
        for listener, ctx in renewed:
            listener.use_tls_context(ctx)
            log.info("reload: http listener %r: certificate read again from %s",
                     listener.cfg.name, listener.cfg.ssl_combined_pem)
        changes = 0
        retire_listeners, retire_outputs = [], []
        kept_http = set()
        http = []
        for kind, cfg, old, thing, reused in http_steps:
            if kind == "keep":
                http.append(old)
                kept_http.add(old)
                continue
            changes += 1
            if kind == "settings":
                # Every connection, kept-alive ones too, serves the new app at once.
                old_app = old.app
                thing.fanout.start()
                counter = old.server.application
                counter.app, counter.stats = thing, thing.stats
                old.app = thing
                old.server.read_timeout = cfg.read_timeout
                old.cfg, old.name = cfg, cfg.name
                http.append(old)
                kept_http.add(old)
                retire_outputs.extend(o for o in old_app.fanout.outputs if o not in reused)
                log.info("reload: http listener %r: settings changed", cfg.name)
                _log_outputs("http", cfg.name, old_app.fanout.outputs, thing.fanout.outputs)
                continue
            thing.app.fanout.start()
            thing.start()
            http.append(thing)
            if old is not None:
                kept_http.add(old)  # its outputs are retired below, not with it
                retire_listeners.append(old)
                retire_outputs.extend(o for o in old.app.fanout.outputs if o not in reused)
                log.info("reload: http listener %r rebuilt on the same socket (TLS changed)",
                         cfg.name)
                _log_outputs("http", cfg.name, old.app.fanout.outputs, thing.app.fanout.outputs)
            else:
                _announce(thing, "reload: ")
        for old in self.http:
            if old not in kept_http:
                changes += 1
                retire_listeners.append(old)
                retire_outputs.extend(old.app.fanout.outputs)
                log.info("reload: http listener %r removed", old.name)

        udp = []
        kept_udp = set()
        for kind, cfg, old, thing in udp_steps:
            if kind == "keep":
                udp.append(old)
                kept_udp.add(old)
                continue
            changes += 1
            if kind == "outputs":
                old_outputs = old.outputs
                old.outputs = thing
                old.cfg = cfg
                udp.append(old)
                kept_udp.add(old)
                for o in old_outputs:
                    if o not in thing:
                        o.close()
                _log_outputs("udp", cfg.name, old_outputs, thing)
                continue
            thing.start()
            udp.append(thing)
            if old is not None:
                kept_udp.add(old)
                retire_listeners.append(old)  # its stop() closes its own outputs
                log.info("reload: udp listener %r rebuilt on the same socket (settings changed)",
                         cfg.name)
            else:
                _announce(thing, "reload: ")
        for old in self.udp:
            if old not in kept_udp:
                changes += 1
                retire_listeners.append(old)
                log.info("reload: udp listener %r removed", old.name)

        self.http, self.udp = http, udp
        self.metrics.forget_listeners({listener.name for listener in http})
        if retire_listeners or retire_outputs:
            self._retiring = [g for g in self._retiring if not g.dead]
            self._retiring.append(gevent.spawn(
                _retire, retire_listeners, retire_outputs, new.shutdown_timeout))
        return changes


def _retire(listeners, outputs, timeout):
    """Stop what a reload replaced: listeners finish their requests in flight,
    then outputs get ``timeout`` to drain a memory backlog (disk buffers just close)."""
    gevent.joinall([gevent.spawn(listener.stop, timeout) for listener in listeners])
    gevent.joinall([gevent.spawn(output.close, timeout) for output in outputs])


def _match(old_listeners, new_cfgs):
    """Pair each new listener config with the running listener it replaces, or None.

    A listener is the same one when it has the same name and address; a
    renamed listener on an unchanged address (not port 0) is the same too.
    """
    by_name = {listener.name: listener for listener in old_listeners}
    claimed = set()
    pairs = []
    for cfg in new_cfgs:
        old = by_name.get(cfg.name)
        if old is not None and _address(old.cfg) != _address(cfg):
            old = None
        pairs.append([cfg, old])
        if old is not None:
            claimed.add(old)
    for pair in pairs:
        cfg = pair[0]
        if pair[1] is None and cfg.port:
            for old in old_listeners:
                if old not in claimed and _address(old.cfg) == _address(cfg):
                    pair[1] = old
                    claimed.add(old)
                    break
    return [tuple(pair) for pair in pairs]


def _dup(sock):
    """A second handle on a listening socket: the new server keeps it open when
    the old one closes its own."""
    return gsocket.socket(fileno=os.dup(sock.fileno()))


def _address(cfg):
    return cfg.host, cfg.port


def _settings(cfg):
    """A listener's config without its outputs."""
    return dataclasses.replace(cfg, outputs=())


def _kind(listener):
    return "udp" if isinstance(listener, UDPListener) else "http"


def _bind(listener):
    """Open the listener's socket now, so that a failure comes before anything starts."""
    kind = _kind(listener)
    try:
        listener.server.init_socket() if kind == "http" else listener.init_socket()
    except OSError as e:
        raise RelayError(
            "%s listener %r: cannot listen on %s: %s"
            % (kind, listener.name, listener.cfg.bind_addr, e.strerror or e)
        )


def _close_unstarted(listener):
    server = listener if isinstance(listener, UDPListener) else listener.server
    sock = server.__dict__.get("socket")
    if sock is not None:
        sock.close()


def _announce(listener, prefix=""):
    kind = _kind(listener)
    host, port = listener.address[:2]
    log.info(
        "%s%s listener %r on %s:%d -> %s", prefix, kind, listener.name, host or "*", port,
        ", ".join(o.name for o in listener.cfg.outputs),
    )


def _log_outputs(kind, listener, old, new):
    old_by_name = {o.name: o for o in old}
    new_by_name = {o.name: o for o in new}
    for name, output in new_by_name.items():
        if name not in old_by_name:
            log.info("reload: %s listener %r: output %r added", kind, listener, name)
        elif old_by_name[name] is not output:
            log.info("reload: %s listener %r: output %r changed, rebuilt", kind, listener, name)
    for name in old_by_name:
        if name not in new_by_name:
            log.info("reload: %s listener %r: output %r removed", kind, listener, name)


def _tls_context(cfg):
    try:
        return tls_context(cfg)
    except (OSError, ssl.SSLError) as e:
        raise RelayError("http listener %r: cannot load ssl-combined-pem %s: %s"
                         % (cfg.name, cfg.ssl_combined_pem, e))


def _counts(config):
    outputs = sum(len(listener.outputs) for listener in config.http + config.udp)
    return "%d http listener(s), %d udp listener(s), %d output(s)" % (
        len(config.http), len(config.udp), outputs)


def _buffered(listener_cfg, output_cfg):
    """Whether ``output_cfg`` gets a retry buffer in this listener."""
    return len(listener_cfg.outputs) > 1 and bool(
        output_cfg.buffer_path or output_cfg.buffer_size_mb > 0)


def _outputs_reusing(cfg, old_outputs):
    """The outputs of [[http]] ``cfg``: an old :class:`Output` whose config (and
    whether it buffers) is unchanged is kept, with its pool and buffer.
    Returns (outputs, the kept ones)."""
    old = {(o.cfg, o.has_buffer): o for o in old_outputs}
    reused = [old.pop((o, _buffered(cfg, o)), None) for o in cfg.outputs]
    # A disk buffer's directory can be open in one output only: close the one
    # being replaced first (a disk buffer just closes; the new one replays it).
    paths = {o.buffer_path for o, kept in zip(cfg.outputs, reused) if kept is None and o.buffer_path}
    for output in old.values():
        if output.has_buffer and output.cfg.buffer_path in paths:
            output.close(0)
    new = _outputs(cfg, only=[i for i, kept in enumerate(reused) if kept is None])
    outputs = [kept if kept is not None else new.pop(0) for kept in reused]
    return outputs, [o for o in reused if o is not None]


def _outputs(cfg, only=None):
    """The outputs of one [[http]] section (or those at the ``only`` indexes).
    Buffers only make sense with two backends or more: with one, the client's
    own retry is the buffer."""
    outputs = []
    for i, o in enumerate(cfg.outputs):
        if only is not None and i not in only:
            continue
        buffer = make_buffer(o) if len(cfg.outputs) > 1 else None
        outputs.append(Output.from_config(o, HTTPBackend(o), buffer))
    if len(cfg.outputs) == 1 and (cfg.outputs[0].buffer_size_mb or cfg.outputs[0].buffer_path):
        log.warning("http listener %r has one output: its retry buffer is not used", cfg.name)
    return outputs


def run(config):
    """Run the relay until SIGTERM or SIGINT; SIGHUP reloads the config. Returns
    the exit status."""
    logs.route_hub_errors(gevent.get_hub())
    log.info("config %s loaded: %s", config.path, _counts(config))
    relay = Relay(config)
    relay.start()
    systemd.notify("READY=1", "STATUS=%s" % _counts(config))

    def on_signal(signum):
        log.info("received %s", signal.Signals(signum).name)
        systemd.notify("STOPPING=1")
        gevent.spawn(relay.stop)

    def reload():
        systemd.reloading()
        try:
            relay.reload()
        finally:
            systemd.notify("READY=1", "STATUS=%s" % _counts(relay.config))

    def on_hup():
        log.info("received SIGHUP: reloading %s", relay.config.path)
        gevent.spawn(reload)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, on_signal, signum)
    gevent.signal_handler(signal.SIGHUP, on_hup)
    relay.wait()
    return 0
