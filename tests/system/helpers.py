"""Real processes for the system tests: influxd (InfluxDB 1.x) and the relay.

Everything listens on 127.0.0.1 only, every wait is bounded, and every process
started here is stopped by its ``stop()`` (SIGTERM, then SIGKILL after a timeout).
"""

import gzip as gzip_module
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

INFLUXD = os.environ.get("INFLUXD", "/usr/bin/influxd")
HOST = "127.0.0.1"


def free_port(kind=socket.SOCK_STREAM, taken=()):
    """A port on 127.0.0.1 that nothing listens on right now (TCP or UDP)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in taken:
            return port
    raise RuntimeError("no free port found")


def free_ports(n, kind=socket.SOCK_STREAM):
    ports = []
    while len(ports) < n:
        ports.append(free_port(kind, taken=ports))
    return ports


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def __repr__(self):
        return "<Response %d %r>" % (self.status, self.body[:300])


def request(method, url, body=None, headers=None, timeout=5.0):
    """One HTTP request with a bounded timeout; any status is returned, never raised."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        path = u.path or "/"
        if u.query:
            path += "?" + u.query
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Call predicate until it returns a true value (which is returned) or time runs out."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
        if time.monotonic() >= deadline:
            raise AssertionError(
                "timed out after %.1fs waiting for %s%s"
                % (timeout, what, " (last error: %r)" % (last_exc,) if last_exc else "")
            )
        time.sleep(interval)


def ping_status(port, timeout=1.0):
    try:
        return request("GET", "http://%s:%d/ping" % (HOST, port), timeout=timeout).status
    except OSError:
        return None


def stop_process(proc, timeout=10.0):
    """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


class Influxd:
    """One influxd 1.x in its own directory, with its own HTTP, RPC (and UDP) ports."""

    def __init__(self, directory, udp_database=None):
        self.dir = Path(directory)
        self.udp_database = udp_database
        self.proc = None
        self.port = self.rpc_port = self.udp_port = None
        self.log_path = self.dir / "influxd.log"

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def _write_config(self):
        d = self.dir
        for sub in ("meta", "data", "wal"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        self.port, self.rpc_port = free_ports(2)
        udp = ""
        if self.udp_database:
            self.udp_port = free_port(socket.SOCK_DGRAM)
            udp = (
                '[[udp]]\n  enabled = true\n  bind-address = "%s:%d"\n'
                '  database = "%s"\n  batch-size = 1000\n  batch-timeout = "100ms"\n'
                % (HOST, self.udp_port, self.udp_database)
            )
        conf = d / "influxdb.conf"
        conf.write_text(
            'reporting-enabled = false\nbind-address = "%(host)s:%(rpc)d"\n'
            '[meta]\n  dir = "%(d)s/meta"\n'
            '[data]\n  dir = "%(d)s/data"\n  wal-dir = "%(d)s/wal"\n'
            "  query-log-enabled = false\n"
            "[monitor]\n  store-enabled = false\n"
            '[http]\n  enabled = true\n  bind-address = "%(host)s:%(http)d"\n'
            "  log-enabled = false\n  pprof-enabled = false\n"
            '[logging]\n  level = "warn"\n  suppress-logo = true\n'
            "[continuous_queries]\n  enabled = false\n%(udp)s"
            % {"host": HOST, "rpc": self.rpc_port, "http": self.port, "d": d, "udp": udp}
        )
        return conf

    def start(self, timeout=15.0):
        for attempt in range(3):  # a free port can be taken between choosing and binding
            conf = self._write_config()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [INFLUXD, "run", "-config", str(conf)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=str(self.dir), start_new_session=True,
            )
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if ping_status(self.port) == 204:
                    return self
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
            exited_by_itself = self.proc.poll() is not None
            stop_process(self.proc)
            if not exited_by_itself:
                break  # hung rather than failed to bind: trying again won't help
        raise RuntimeError(
            "influxd in %s did not answer /ping; log tail:\n%s" % (self.dir, self.log_tail())
        )

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def restart(self, timeout=15.0):
        """Start again after stop() or kill(), on the same ports and data."""
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [INFLUXD, "run", "-config", str(self.dir / "influxdb.conf")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(self.dir), start_new_session=True,
        )
        log.close()
        wait_until(lambda: ping_status(self.port) == 204 or self.proc.poll() is not None,
                   timeout, what="influxd %d restarted" % self.port)
        if self.proc.poll() is not None:
            raise RuntimeError("influxd did not restart; log tail:\n%s" % self.log_tail())
        return self

    def kill(self):
        """Stop hard, as a crashed backend would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log_tail(self, n=30):
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # --- talking to it directly -------------------------------------------------

    def query(self, q, db=None, epoch="ns"):
        params = {"q": q, "epoch": epoch}
        if db:
            params["db"] = db
        r = request("POST", "%s/query?%s" % (self.url, urllib.parse.urlencode(params)))
        assert r.status == 200, "influxd %s: %r -> %r" % (self.port, q, r)
        return r.json()

    def create_database(self, db):
        self.query('CREATE DATABASE "%s"' % db)

    def write(self, db, body, **params):
        params["db"] = db
        return request("POST", "%s/write?%s" % (self.url, urllib.parse.urlencode(params)),
                       body=body)

    def rows(self, db, measurement):
        """All points of a measurement as a list of dicts, oldest first (time in ns)."""
        out = self.query('SELECT * FROM "%s"' % measurement, db=db)
        result = out["results"][0]
        assert "error" not in result, result
        rows = []
        for series in result.get("series", []):
            for values in series["values"]:
                rows.append(dict(zip(series["columns"], values)))
        return rows


class Relay:
    """The real relay process, run with a generated TOML config."""

    def __init__(self, directory, config_text, port, name="relay", env=None):
        """``env``: variables to set (or override) in the relay's environment."""
        self.dir = Path(directory)
        self.env = None if env is None else dict(os.environ, **env)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.config_path = self.dir / ("%s.toml" % name)
        self.config_path.write_text(config_text)
        self.stderr_path = self.dir / ("%s.stderr" % name)
        self.stdout_path = self.dir / ("%s.stdout" % name)
        self.proc = None

    @property
    def url(self):
        return "http://%s:%d" % (HOST, self.port)

    def start(self, timeout=15.0, wait_http=True):
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                relay_command("run", "--config", str(self.config_path), "-v"),
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=str(self.dir),
                start_new_session=True, env=self.env,
            )
        if not wait_http:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ping_status(self.port) == 204:
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("relay exited with %s before answering /ping; stderr:\n%s"
                                   % (self.proc.returncode, self.stderr()))
            time.sleep(0.05)
        stop_process(self.proc)
        raise RuntimeError("relay did not answer /ping with 204 within %.0fs; stderr:\n%s"
                           % (timeout, self.stderr()))

    def stop(self, timeout=10.0):
        """SIGTERM (SIGKILL after timeout); returns the exit status."""
        return stop_process(self.proc, timeout) if self.proc is not None else None

    def stderr(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def write(self, body, gzip=False, headers=None, timeout=10.0, **params):
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode("utf-8")
        if gzip:
            body = gzip_module.compress(body)
            headers["Content-Encoding"] = "gzip"
        qs = urllib.parse.urlencode(params)
        return request("POST", "%s/write%s" % (self.url, "?" + qs if qs else ""),
                       body=body, headers=headers, timeout=timeout)


def rows_on_both(servers, db, measurement, count, timeout=10.0):
    """Poll until every server holds `count` points of measurement; return their rows."""
    def ready():
        rows = [s.rows(db, measurement) for s in servers]
        return rows if all(len(r) >= count for r in rows) else None
    return wait_until(ready, timeout, interval=0.1,
                      what="%d points of %s.%s on every server" % (count, db, measurement))


def assert_204(resp):
    assert resp.status == 204, resp


REPO = Path(__file__).resolve().parents[2]


def relay_command(*args):
    """The installed console script next to this Python, else the checkout's bin/influx-relay."""
    script = Path(sys.executable).parent / "influx-relay"
    if script.exists():
        return [str(script)] + list(args)
    return [sys.executable, str(REPO / "bin" / "influx-relay")] + list(args)


def run_cli(*args, timeout=30.0):
    return subprocess.run(relay_command(*args), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout)


def influxd_available():
    return os.access(INFLUXD, os.X_OK) or shutil.which(INFLUXD) is not None
