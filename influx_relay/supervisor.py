"""``workers = N``: one supervising process and N relay processes on the same ports.

The supervisor checks that every listener's address can be bound, then starts N
workers (``influx-relay run`` again, told which worker it is by its
environment). Each worker binds every listener itself with SO_REUSEPORT, so the
kernel shares the connections (and UDP sources) among them; a connection stays
with one worker, so the order of its writes is kept, which is what the relay
promises. Each worker keeps its own retry buffers (``buffer-path/worker-N``)
and gap ledger (``state-dir/worker-N``), and answers /status, /health and
/metrics for all of them by asking its peers over a unix socket each
(:mod:`.peers`).

The supervisor tells systemd READY=1 once every worker is bound and serving,
passes SIGHUP on (after checking the file itself, so that a broken file is
said once) and SIGTERM/SIGINT, waits for the workers to drain and exit, and
starts again a worker that dies (after 1 s, then longer if it keeps dying).
"""

import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time

import gevent
from gevent import subprocess
from gevent.event import Event
from gevent.socket import wait_read

from . import config as config_mod, systemd
from .errors import RelayError

log = logging.getLogger(__name__)

#: The environment a worker is started with: "index/count", its peers' socket
#: directory, and the fd it writes "ready" to.
WORKER_ENV = "INFLUX_RELAY_WORKER"
CONTROL_ENV = "INFLUX_RELAY_CONTROL_DIR"
READY_ENV = "INFLUX_RELAY_READY_FD"

#: Seconds before a worker that died is started again, doubling while it keeps dying.
RESTART_DELAY = 1.0
RESTART_MAX_DELAY = 30.0


class Worker(object):
    """Which worker this process is, from its environment; None outside workers."""

    def __init__(self, index, count, control_dir, ready_fd):
        self.index = index
        self.count = count
        self.control_dir = control_dir
        self.ready_fd = ready_fd

    @classmethod
    def from_env(cls, environ=os.environ):
        value = environ.get(WORKER_ENV)
        if not value:
            return None
        index, _, count = value.partition("/")
        fd = environ.get(READY_ENV)
        return cls(int(index), int(count), environ[CONTROL_ENV], int(fd) if fd else None)

    @property
    def lead(self):
        """Worker 0 drains what workers that no longer exist left on disk."""
        return self.index == 0

    def socket_path(self, index=None):
        return os.path.join(self.control_dir, "worker-%d.sock" % (self.index if index is None
                                                                   else index))

    def ready(self):
        """Tell the supervisor this worker serves."""
        if self.ready_fd is not None:
            try:
                os.write(self.ready_fd, b"%d\n" % self.index)
                os.close(self.ready_fd)
            except OSError:
                pass
            self.ready_fd = None


def check_binds(cfg):
    """Bind (without listening) every listener's address, as the workers will, so
    that an address in use is one error line now; :class:`RelayError` else."""
    for kind, listeners in (("http", cfg.http), ("udp", cfg.udp)):
        for listener in listeners:
            try:
                sock = reuseport_socket(listener.host, listener.port, kind, listen=False)
            except OSError as e:
                raise RelayError("%s listener %r: cannot listen on %s: %s" % (
                    kind, listener.name, listener.bind_addr, e.strerror or e))
            sock.close()


def reuseport_socket(host, port, kind, listen=True, backlog=1024):
    """A socket bound to ``host:port`` with SO_REUSEPORT (and listening, for TCP)."""
    from gevent import socket as gsocket

    stype = socket.SOCK_STREAM if kind == "http" else socket.SOCK_DGRAM
    family, _, _, _, address = socket.getaddrinfo(host or None, port, 0, stype, 0,
                                                  socket.AI_PASSIVE)[0]
    sock = gsocket.socket(family, stype)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen and kind == "http":
            sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Supervisor(object):
    def __init__(self, cfg, args):
        self.cfg = cfg
        self.args = list(args)  # what each worker runs: influx-relay run ...
        self.count = cfg.workers
        self.procs = [None] * self.count
        self.control_dir = None
        self.stopping = False
        self.stopped = Event()
        self._deaths = [0] * self.count  # quick deaths in a row, for the back-off

    def start(self):
        check_binds(self.cfg)
        base = os.environ.get("RUNTIME_DIRECTORY")
        self.control_dir = tempfile.mkdtemp(prefix="influx-relay-", dir=base or None)
        os.chmod(self.control_dir, 0o700)
        ready_r, ready_w = os.pipe()
        try:
            for i in range(self.count):
                self.procs[i] = self._spawn(i, ready_w)
        finally:
            os.close(ready_w)
        ready = set()
        data = b""
        try:
            # Each worker writes its index once it serves, then closes its end:
            # read (cooperatively: signals are handled meanwhile) to the end.
            while len(ready) < self.count and not self.stopping:
                wait_read(ready_r)
                chunk = os.read(ready_r, 512)
                if not chunk:
                    break
                data += chunk
                ready.update(int(line) for line in data.split(b"\n")[:-1])
        finally:
            os.close(ready_r)
        if self.stopping:
            return
        if len(ready) < self.count:
            self._stop_all(signal.SIGTERM)
            self._reap(timeout=10)
            raise RelayError("a worker could not start (its error is above); stopping")
        log.info("%d workers serving (pids %s)", self.count,
                 ", ".join(str(p.pid) for p in self.procs))
        for i in range(self.count):
            gevent.spawn(self._watch, i)

    def _spawn(self, index, ready_fd):
        env = dict(os.environ)
        # The workers import this very package, wherever it was loaded from.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = os.pathsep.join([here] + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p])
        env[WORKER_ENV] = "%d/%d" % (index, self.count)
        env[CONTROL_ENV] = self.control_dir
        env.pop("NOTIFY_SOCKET", None)  # systemd hears from the supervisor only
        pass_fds = ()
        if ready_fd is not None:
            env[READY_ENV] = str(ready_fd)
            pass_fds = (ready_fd,)
        else:
            env.pop(READY_ENV, None)
        return subprocess.Popen(self.args, env=env, pass_fds=pass_fds, stdin=subprocess.DEVNULL)

    def _watch(self, index):
        """Start a worker again when it dies, unless the relay is stopping."""
        while True:
            proc = self.procs[index]
            started = time.monotonic()
            status = proc.wait()
            if self.stopping:
                return
            how = ("signal %s" % signal.Signals(-status).name if status < 0
                   else "exit status %d" % status)
            self._deaths[index] = self._deaths[index] + 1 if time.monotonic() - started < 60 else 1
            delay = min(RESTART_MAX_DELAY, RESTART_DELAY * 2 ** (self._deaths[index] - 1))
            log.error("worker %d (pid %d) died (%s); starting it again in %gs", index, proc.pid,
                      how, delay)
            gevent.sleep(delay)
            if self.stopping:
                return
            self.procs[index] = self._spawn(index, None)
            log.info("worker %d started again (pid %d)", index, self.procs[index].pid)

    def reload(self):
        """Check the file, then have every worker read it again."""
        systemd.reloading()
        try:
            try:
                new = config_mod.load(self.cfg.path)
            except RelayError as e:
                log.error("reload rejected, the running config stays: %s", e)
                return
            if new.workers != self.count:
                log.warning("workers = %d in %s: the relay runs %d until it is restarted",
                            new.workers, self.cfg.path, self.count)
            self._stop_all(signal.SIGHUP)
        finally:
            systemd.notify("READY=1", "STATUS=%d workers" % self.count)

    def stop(self, signum=signal.SIGTERM):
        if self.stopping:
            return
        self.stopping = True
        systemd.notify("STOPPING=1")
        self._stop_all(signum)
        # Each worker drains within its shutdown-timeout (requests, then buffers).
        self._reap(timeout=3 * self.cfg.shutdown_timeout + 10)
        if self.control_dir is not None:
            shutil.rmtree(self.control_dir, ignore_errors=True)
        self.stopped.set()

    def _stop_all(self, signum):
        for proc in self.procs:
            if proc is not None and proc.poll() is None:
                try:
                    proc.send_signal(signum)
                except OSError:
                    pass

    def _reap(self, timeout):
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            if proc is None:
                continue
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not stop in time: killed", proc.pid)
                proc.kill()
                proc.wait()


def run(cfg, args):
    """Run ``cfg.workers`` workers (each ``args``) until SIGTERM or SIGINT; SIGHUP
    reloads. Returns the exit status."""
    supervisor = Supervisor(cfg, args)

    def on_signal(signum):
        log.info("received %s: stopping the workers", signal.Signals(signum).name)
        gevent.spawn(supervisor.stop, signum)

    def on_hup():
        log.info("received SIGHUP: the workers read %s again", cfg.path)
        gevent.spawn(supervisor.reload)

    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, on_signal, signum)
    gevent.signal_handler(signal.SIGHUP, on_hup)
    supervisor.start()  # a SIGTERM meanwhile stops what started
    if not supervisor.stopping:
        systemd.notify("READY=1", "STATUS=%d workers" % supervisor.count)
    supervisor.stopped.wait()
    log.info("stopped")
    return 0


def worker_args(config_path, verbose, log_format):
    """How the supervisor starts a worker: this same program, ``run``."""
    args = [sys.executable, "-m", "influx_relay", "run", "--config", os.path.abspath(config_path),
            "--log-format", log_format]
    if verbose:
        args.append("--verbose")
    return args
