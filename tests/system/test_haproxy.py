"""The seed's architecture on one machine: HAProxy, two relays, two influxd.

Clients talk to HAProxy only: ``/write`` goes to the relays (which share
nothing), ``/query`` straight to the databases, as the diagram in the README
draws it. Under a steady write load one relay is SIGKILLed, then one influxd
is stopped and comes back, then the relay comes back: writes keep succeeding
through the load balancer (a health check on the relays' ``/ping`` takes the
dead one out; a refused connection is retried on the other relay), and at the
end both databases hold every acknowledged point, once.

:func:`haproxy_config` is the configuration the README documents.
"""

import csv
import io
import os
import shutil
import subprocess
import time

import pytest

from .helpers import free_ports, request, stop_process, wait_until
from .workload import Writer, assert_hub_never_blocked, check_delivery, drained

HAPROXY = os.environ.get("HAPROXY", "/usr/sbin/haproxy")


def haproxy_config(port, relays, databases, stats_port, log=""):
    """HAProxy in front of relays (``/write``) and databases (``/query`` and the rest).

    ``relays`` and ``databases`` are lists of ``(name, "host:port")``; ``log`` is
    a log target (``stdout format raw``) for the test, which the README leaves out.
    """
    text = """\
global
    maxconn 4096
%(log_global)s
defaults
    mode http
%(log_defaults)s    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    # A connection a relay refuses (it is dead, and the health check has not
    # noticed yet) is retried, on another relay (redispatch). Only refused
    # connections: a request a relay may have started to write is never sent
    # twice, since the second relay would stamp its points with another time.
    retries 3
    option redispatch 1
    retry-on conn-failure

frontend influxdb
    bind 127.0.0.1:%(port)d
    acl write path /write /api/v2/write /api/v1/prom/write
    use_backend relays if write
    default_backend databases

backend relays
    balance leastconn
    option httpchk
    http-check send meth GET uri /ping
    http-check expect status 204
    default-server check inter 500ms fall 2 rise 2
%(relays)s
backend databases
    balance roundrobin
    option httpchk
    http-check send meth GET uri /ping
    http-check expect status 204
    default-server check inter 500ms fall 2 rise 2
%(databases)s
listen stats
    bind 127.0.0.1:%(stats)d
    stats enable
    stats uri /stats
"""
    servers = lambda items: "".join("    server %s %s\n" % item for item in items)  # noqa: E731
    return text % {"port": port, "relays": servers(relays), "databases": servers(databases),
                   "stats": stats_port,
                   "log_global": "    log %s local0\n" % log if log else "",
                   "log_defaults": "    log global\n    option httplog\n" if log else ""}


class HAProxy(object):
    def __init__(self, directory, config_text, port, stats_port):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "haproxy.cfg"
        self.config_path.write_text(config_text)
        self.log_path = self.dir / "haproxy.log"
        self.port, self.stats_port = port, stats_port
        self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(self.config_path)],
                               capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode(errors="replace")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.config_path)],
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.status("relays"), 10, what="haproxy answering")
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)

    def log(self, last=4000):
        try:
            return self.log_path.read_text(errors="replace")[-last:]
        except OSError:
            return ""

    def status(self, backend):
        """{server: "UP" | "DOWN" | ...} of a backend, from the stats page."""
        r = request("GET", "http://127.0.0.1:%d/stats;csv" % self.stats_port, timeout=2)
        rows = csv.DictReader(io.StringIO(r.body.decode().lstrip("# ")))
        return {row["svname"]: row["status"].split()[0] for row in rows
                if row["pxname"] == backend and row["svname"] not in ("FRONTEND", "BACKEND")}

    def wait_status(self, backend, server, wanted, timeout=10):
        wait_until(lambda: self.status(backend).get(server) == wanted, timeout,
                   what="haproxy: %s/%s %s" % (backend, server, wanted))


@pytest.fixture
def haproxy(tmp_path):
    if not (os.access(HAPROXY, os.X_OK) or shutil.which(HAPROXY)):
        if os.environ.get("INFLUX_RELAY_REQUIRE_SYSTEM_TESTS") == "1":
            pytest.fail("%s not found (apt-get install haproxy)" % HAPROXY)
        pytest.skip("%s not found: apt-get install haproxy, or run bash scripts/test.sh" % HAPROXY)
    made = []

    def start(config_text, port, stats_port):
        proxy = HAProxy(tmp_path / "haproxy", config_text, port, stats_port).start()
        made.append(proxy)
        return proxy

    yield start
    for proxy in made:
        proxy.stop()


def relay_config(port, servers):
    text = 'shutdown-timeout = "5s"\n[[http]]\nname = "lb"\nbind-addr = "127.0.0.1:%d"\n' % port
    for name, server in zip(("influxdb1", "influxdb2"), servers):
        text += ('\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "2s"\n'
                 'buffer-size-mb = 64\nmax-delay-interval = "500ms"\n' % (name, server.url))
    return text


def test_writes_survive_a_dead_relay_and_a_dead_influxd_behind_haproxy(
    hub_watch, influxd_pair, db, relay_factory, haproxy
):
    a, b = influxd_pair
    lb_port, stats_port, port1, port2 = free_ports(4)
    relay1 = relay_factory(relay_config(port1, (a, b)), port1, name="relay1")
    relay2 = relay_factory(relay_config(port2, (a, b)), port2, name="relay2")
    lb = haproxy(haproxy_config(
        lb_port,
        [("relay1", "127.0.0.1:%d" % port1), ("relay2", "127.0.0.1:%d" % port2)],
        [("influxdb1", "127.0.0.1:%d" % a.port), ("influxdb2", "127.0.0.1:%d" % b.port)],
        stats_port, log="stdout format raw"), lb_port, stats_port)
    lb.wait_status("relays", "relay1", "UP")
    lb.wait_status("relays", "relay2", "UP")

    writer = Writer(lb.url, db, threads=4, points=5, interval=0.005).start()
    writer.wait_requests(100)
    steps = []

    def step(what):
        steps.append("%s at request %d" % (what, writer.requests))
        writer.wait_requests(200)

    killed = time.monotonic()
    relay1.proc.kill()
    step("relay1 killed")
    lb.wait_status("relays", "relay1", "DOWN")
    down = time.monotonic()
    b.stop()
    step("influxdb2 stopped")
    b.restart()
    step("influxdb2 back")
    relay1 = relay_factory(relay_config(port1, (a, b)), port1, name="relay1-again")
    lb.wait_status("relays", "relay1", "UP")
    step("relay1 back")
    writer.stop()
    print("; ".join(steps))
    print(writer.summary())

    for relay in (relay1, relay2):
        wait_until(lambda: drained(relay.url), 30, what="every backlog delivered")
    figures = check_delivery(writer, (a, b), db)
    print(figures)
    assert_hub_never_blocked(relay1, relay2)
    # Only the requests relay1 was answering when it died can fail: at most one per
    # client thread, each answered between the kill and HAProxy taking relay1 out.
    # HAProxy answers them 502, or closes the client connection without an answer
    # when it had reused the server connection (its way of saying "safe to retry").
    # Every other write went through, influxdb2's outage and relay1's return included.
    failed = writer.requests - writer.statuses[204]
    assert failed <= writer.threads, writer.summary() + "\n" + lb.log()
    assert set(writer.statuses) <= {204, 502, "error"}, writer.summary() + "\n" + lb.log()
    late = [f for f in writer.failures if not killed <= f[0] <= down + 1.0]
    assert not late, "%s\nfailures outside relay1's death (%.3f..%.3f): %s\n%s" % (
        writer.summary(), killed, down, late, lb.log())
    # Queries go to the databases through the same address.
    r = request("GET", lb.url + "/query?db=%s&q=SELECT+count(v)+FROM+m" % db)
    assert r.status == 200, r
    assert r.json()["results"][0]["series"][0]["values"][0][1] >= len(writer.acked)
