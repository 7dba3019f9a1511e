"""Build the relay from its config, run it, reload it, and stop it in order.

Every listener, HTTP or UDP, has one interface: ``bind()`` (open its socket,
or OSError), ``start()``, ``stop(timeout)``, ``close_unstarted()``,
``dup_socket()`` (a second handle for the listener replacing it), ``swap(...)``
(serve a new app, or new UDP outputs, on the same socket), and ``name``,
``cfg``, ``kind``, ``address``, ``outputs``.

A reload is a plan: :meth:`Relay._plan` compares the new config with what runs
and builds what it needs (new outputs, apps, listeners on their sockets) into
a list of steps, each a small dataclass; anything that can fail fails there,
and what was built is undone. Then every step is performed, which cannot fail.
"""

import dataclasses
import logging
import os
import signal
import ssl
from typing import List, Optional

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from . import config as config_mod, lineprotocol, logs, systemd
from .errors import RelayError
from .fanout import Fanout
from .http_listener import HTTPListener, ListenerStats, WriteApp, tls_context
from .ledger import Ledger
from .metrics import Metrics
from .output import Output
from .peers import Peers, merge_metrics
from .supervisor import reuseport_socket
from .udp_listener import UDPListener, UDPOutput

log = logging.getLogger(__name__)


class Relay(object):
    """Every listener of one config, with its outputs. ``worker``: which of
    several workers this process is (see :mod:`.supervisor`), or None."""

    def __init__(self, config, worker=None):
        self.worker = worker
        config = self._prepare(config)
        self.config = config
        self.ledger = Ledger(config.state_dir)
        if config.state_dir is None and any(len(h.outputs) > 1 for h in config.http) \
                and (worker is None or worker.index == 0):
            log.info("no state-dir: the gap ledger (what an output missed, for repair) is "
                     "kept in memory and forgotten at a restart")
        self.metrics = Metrics(lambda: self.listeners)
        self.peers = Peers(worker, self) if worker is not None and worker.count > 1 else None
        self.http = []
        self.udp = []
        self._stopped = Event()
        self._stopping = False
        self._lock = Semaphore()  # one reload at a time, and none during stop
        self._retiring = []       # greenlets stopping what a reload replaced
        self._orphans = []        # outputs draining what earlier workers left on disk
        try:
            for cfg in config.http:
                self.http.append(HTTPListener(self._app(cfg, _outputs(cfg, self.ledger)),
                                              sock=self._socket(cfg, "http")))
            for cfg in config.udp:
                self.udp.append(UDPListener(cfg, sock=self._socket(cfg, "udp")))
        except BaseException:
            for listener in self.listeners:
                listener.close_unstarted()
                for output in listener.outputs:
                    output.close(0)
            self.ledger.close()
            raise

    def _prepare(self, config):
        """The config as this process runs it: a worker's buffers and ledger
        live in a worker-N directory of their own."""
        if self.worker is None or self.worker.count == 1:
            return config
        return worker_config(config, self.worker.index)

    def _socket(self, cfg, kind):
        """A worker binds its listeners itself, sharing the port (SO_REUSEPORT)."""
        if self.worker is None or self.worker.count == 1:
            return None
        try:
            return reuseport_socket(cfg.host, cfg.port, kind)
        except OSError as e:
            raise RelayError("%s listener %r: cannot listen on %s: %s"
                             % (kind, cfg.name, cfg.bind_addr, e.strerror or e))

    @property
    def listeners(self):
        return self.http + self.udp

    def _app(self, cfg, outputs):
        """The application of [[http]] ``cfg`` (its stats kept across reloads)."""
        stats = self.metrics.listener_stats(cfg.name, ListenerStats)
        return WriteApp(cfg, Fanout(outputs), stats=stats, routes={"/metrics": self._serve_metrics},
                        peers=self.peers, ledger=self.ledger)

    def _serve_metrics(self, request):
        """/metrics of this process, or with workers, of all of them."""
        mine = self.metrics.serve(request)
        if self.peers is None or mine.status != 200 or request.method != "GET":
            return mine
        texts = [mine.body.decode("utf-8")] + [
            body.decode("utf-8") for _, status, body in self.peers.ask("GET", "/metrics")
            if status == 200]
        return mine._replace(body=merge_metrics(texts))

    def start(self):
        """Bind every listener, then start them all; or raise :class:`RelayError`
        having started none (and said nothing but the error)."""
        bound = []
        try:
            for listener in self.listeners:
                _bind(listener)
                bound.append(listener)
        except RelayError:
            for listener in bound:
                listener.close_unstarted()
            raise
        for listener in self.listeners:
            listener.start()
        if self.peers is not None:
            self.peers.serve()
        if self.worker is None or self.worker.lead:
            self._drain_orphans()
        for listener in self.listeners:
            _announce(listener)

    def _drain_orphans(self):
        """Replay what a layout of workers that no longer runs left in each
        buffer-path (a worker-N directory past the count, or the directory itself
        when workers now have their own), then remove it."""
        count = self.worker.count if self.worker is not None else 1
        for listener in self.http:
            for output in listener.outputs:
                path = output.cfg.buffer_path
                if not output.has_buffer or not path:
                    continue
                root = os.path.dirname(path) if count > 1 else path
                for left in orphan_dirs(root, count):
                    try:
                        self._orphans.append(output.adopt(left))
                    except RelayError as e:
                        log.error("%s", e)

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
        for orphan in self._orphans:
            orphan.close_adopted()
        if self.peers is not None:
            self.peers.close()
        self.ledger.close()
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
                new = self._prepare(new)
                steps = self._plan(new)
            except RelayError as e:
                log.error("reload rejected, the running config stays: %s", e)
                self.metrics.reloaded(False)
                return False
            changes = self._perform(steps, new.shutdown_timeout)
            self.config = new
            self.metrics.reloaded(True)
            log.info("config %s reloaded: %s; %s", path, _counts(new),
                     "%d change(s)" % changes if changes else "no changes")
            return True

    def _plan(self, new):
        """The steps from the running relay to config ``new``, with everything
        they need built (and undone again if any of it fails)."""
        steps = []
        try:
            for cfg, old in _match(self.http, new.http):
                steps.extend(self._http_steps(cfg, old))
            for cfg, old in _match(self.udp, new.udp):
                steps.append(_udp_step(cfg, old, self._socket))
        except Exception as e:
            for step in steps:
                step.undo()
            if isinstance(e, RelayError):
                raise
            log.exception("reload: unexpected error while building the new config")
            raise RelayError("cannot build the new config: %s" % e)
        kept = {step.old for step in steps if step.old is not None}
        steps.extend(Remove(old) for old in self.listeners if old not in kept)
        return steps

    def _http_steps(self, cfg, old):
        steps = []
        if old is not None and cfg.ssl_combined_pem and old.cfg.ssl_combined_pem == cfg.ssl_combined_pem:
            # The same path may hold a renewed certificate: read it again.
            steps.append(RenewTLS(old, _tls_context(cfg)))
        if old is not None and old.cfg == cfg:
            steps.append(Keep(old))
            return steps
        outputs, reused = _outputs_reusing(cfg, old.outputs if old is not None else (), self.ledger)
        made = [o for o in outputs if o not in reused]
        retired = [o for o in old.outputs if o not in reused] if old is not None else []
        try:
            app = self._app(cfg, outputs)
            if old is not None and old.cfg.ssl_combined_pem == cfg.ssl_combined_pem:
                # A new app even when only the outputs changed: what it derives
                # from them (filters, the APIs they speak) must follow.
                steps.append(SwapApp(old, app, made, retired))
                return steps
            listener = HTTPListener(app, sock=old.dup_socket() if old is not None
                                    else self._socket(cfg, "http"))
        except BaseException:
            for output in made:
                output.close(0)
            raise
        steps.append(Replace(old, listener, made, retired))
        if old is None:
            try:
                _bind(listener)
            except RelayError:
                steps[-1].undo()
                raise
        return steps

    def _perform(self, steps, timeout):
        """Swap the new parts in (nothing here fails); the number of changes."""
        changes = 0
        retire_listeners, retire_outputs = [], []
        http, udp = [], []
        for step in steps:
            listeners, outputs = step.perform()
            retire_listeners += listeners
            retire_outputs += outputs
            changes += step.changes
            if step.serving is not None and step.serving not in http + udp:
                (http if step.serving.kind == "http" else udp).append(step.serving)
        self.http, self.udp = http, udp
        self.metrics.forget_listeners({listener.name for listener in http})
        if retire_listeners or retire_outputs:
            self._retiring = [g for g in self._retiring if not g.dead]
            self._retiring.append(gevent.spawn(_retire, retire_listeners, retire_outputs, timeout))
        return changes


# -- the steps of a reload ---------------------------------------------------------
#
# Each is built by Relay._plan (which may fail, and then undoes what it built) and
# performed by Relay._perform: perform() returns (listeners, outputs) to retire,
# ``serving`` is the listener that serves after it (None once removed) and
# ``changes`` what it counts as.


@dataclasses.dataclass
class Keep:
    """An unchanged listener: it runs on untouched."""

    old: object
    changes = 0

    @property
    def serving(self):
        return self.old

    def perform(self):
        return [], []

    def undo(self):
        pass


@dataclasses.dataclass
class RenewTLS:
    """Serve new connections with the certificate read again from the same path."""

    old: object
    context: ssl.SSLContext
    changes = 0

    @property
    def serving(self):
        return self.old

    def perform(self):
        self.old.use_tls_context(self.context)
        log.info("reload: http listener %r: certificate read again from %s",
                 self.old.cfg.name, self.old.cfg.ssl_combined_pem)
        return [], []

    def undo(self):
        pass


@dataclasses.dataclass
class SwapApp:
    """The same HTTP listener (and socket, and connections) serves a new app."""

    old: HTTPListener
    app: WriteApp
    made: List[Output]
    retired: List[Output]
    changes = 1

    @property
    def serving(self):
        return self.old

    def perform(self):
        before = self.old.outputs
        self.old.swap(self.app)
        log.info("reload: http listener %r: settings changed", self.app.cfg.name)
        _log_outputs("http", self.app.cfg.name, before, self.app.outputs)
        return [], self.retired

    def undo(self):
        for output in self.made:
            output.close(0)


@dataclasses.dataclass
class SwapUDPOutputs:
    """The same UDP listener sends to new outputs."""

    old: UDPListener
    cfg: object
    outputs: tuple
    changes = 1

    @property
    def serving(self):
        return self.old

    def perform(self):
        before = self.old.outputs
        for output in self.old.swap(self.cfg, self.outputs):
            output.close()
        _log_outputs("udp", self.cfg.name, before, self.outputs)
        return [], []

    def undo(self):
        for output in self.outputs:
            if output not in self.old.outputs:
                output.close()


@dataclasses.dataclass
class Replace:
    """A new listener (on the old one's socket, or bound anew), the old one retired."""

    old: Optional[object]
    new: object
    made: List[Output] = dataclasses.field(default_factory=list)
    retired: List[Output] = dataclasses.field(default_factory=list)
    changes = 1

    @property
    def serving(self):
        return self.new

    def perform(self):
        self.new.start()
        if self.old is None:
            _announce(self.new, "reload: ")
            return [], []
        log.info("reload: %s listener %r rebuilt on the same socket (%s changed)", self.new.kind,
                 self.new.name, "TLS" if self.new.kind == "http" else "settings")
        if self.new.kind == "http":
            _log_outputs("http", self.new.name, self.old.outputs, self.new.outputs)
        # A UDP listener's stop() closes its own outputs; an HTTP one's are retired here.
        return [self.old], self.retired

    def undo(self):
        self.new.close_unstarted()
        for output in self.made:
            output.close(0)


@dataclasses.dataclass
class Remove:
    """A listener the new config does not have: it finishes and stops."""

    old: object
    serving = None
    changes = 1

    def perform(self):
        log.info("reload: %s listener %r removed", self.old.kind, self.old.name)
        outputs = list(self.old.outputs) if self.old.kind == "http" else []
        return [self.old], outputs

    def undo(self):
        pass


def _udp_step(cfg, old, make_socket):
    if old is not None and old.cfg == cfg:
        return Keep(old)
    if old is not None and _settings(old.cfg) == _settings(cfg):
        kept = {o.cfg: o for o in old.outputs}
        return SwapUDPOutputs(old, cfg, tuple(kept.get(o) or UDPOutput(o) for o in cfg.outputs))
    listener = UDPListener(cfg, sock=old.dup_socket() if old is not None
                           else make_socket(cfg, "udp"))
    step = Replace(old, listener)
    if old is None:
        try:
            _bind(listener)
        except RelayError:
            step.undo()
            raise
    return step


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


def _address(cfg):
    return cfg.host, cfg.port


def _settings(cfg):
    """A listener's config without its outputs."""
    return dataclasses.replace(cfg, outputs=())


def _bind(listener):
    """Open the listener's socket now, so that a failure comes before anything starts."""
    try:
        listener.bind()
    except OSError as e:
        raise RelayError(
            "%s listener %r: cannot listen on %s: %s"
            % (listener.kind, listener.name, listener.cfg.bind_addr, e.strerror or e)
        )


def _announce(listener, prefix=""):
    host, port = listener.address[:2]
    log.info(
        "%s%s listener %r on %s:%d -> %s", prefix, listener.kind, listener.name, host or "*",
        port, ", ".join(o.name for o in listener.cfg.outputs),
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
    """Whether ``output_cfg`` gets a retry buffer in this listener. Buffers only
    make sense with two backends or more: with one, the client's own retry is
    the buffer."""
    return len(listener_cfg.outputs) > 1 and bool(
        output_cfg.buffer_path or output_cfg.buffer_size_mb > 0)


def _outputs_reusing(cfg, old_outputs, ledger):
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
    new = _outputs(cfg, ledger, only=[i for i, kept in enumerate(reused) if kept is None])
    outputs = [kept if kept is not None else new.pop(0) for kept in reused]
    return outputs, [o for o in reused if o is not None]


def _outputs(cfg, ledger, only=None):
    """The outputs of one [[http]] section (or those at the ``only`` indexes),
    recording their gaps in ``ledger``."""
    outputs = []
    try:
        for i, o in enumerate(cfg.outputs):
            if only is None or i in only:
                outputs.append(Output.from_config(o, buffered=_buffered(cfg, o), ledger=ledger,
                                                  listener=cfg.name))
    except BaseException:
        for output in outputs:
            output.close(0)
        raise
    if len(cfg.outputs) == 1 and (cfg.outputs[0].buffer_size_mb or cfg.outputs[0].buffer_path):
        log.warning("http listener %r has one output: its retry buffer is not used", cfg.name)
    return outputs


def worker_config(config, index):
    """``config`` as worker ``index`` runs it: each disk buffer and the gap
    ledger in a ``worker-N`` directory of their own."""
    sub = "worker-%d" % index
    http = tuple(dataclasses.replace(listener, outputs=tuple(
        dataclasses.replace(o, buffer_path=os.path.join(o.buffer_path, sub)) if o.buffer_path
        else o for o in listener.outputs)) for listener in config.http)
    state = os.path.join(config.state_dir, sub) if config.state_dir else None
    return dataclasses.replace(config, http=http, state_dir=state)


def orphan_dirs(root, count):
    """The buffer directories under ``root`` that ``count`` workers do not use:
    ``worker-N`` for N >= count (every one, for a single relay, which uses
    ``root`` itself), and ``root``'s own segments when there are several workers."""
    found = []
    try:
        names = os.listdir(root)
    except OSError:
        return found
    if count > 1 and any(n.endswith(".seg") for n in names):
        found.append(root)
    for name in sorted(names):
        if name.startswith("worker-") and name[7:].isdigit() \
                and (count == 1 or int(name[7:]) >= count) \
                and os.path.isdir(os.path.join(root, name)):
            found.append(os.path.join(root, name))
    return found


def run(config, worker=None):
    """Run the relay until SIGTERM or SIGINT; SIGHUP reloads the config. Returns
    the exit status."""
    logs.route_hub_errors(gevent.get_hub())
    relay = Relay(config, worker)
    relay.start()
    if worker is not None:
        worker.ready()
    log.info("config %s loaded: %s; line scanner: %s", config.path, _counts(config),
             lineprotocol.IMPLEMENTATION if lineprotocol.PYTHON_REASON is None
             else "python (%s)" % lineprotocol.PYTHON_REASON)
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
