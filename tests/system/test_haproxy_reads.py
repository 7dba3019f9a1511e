"""Reads behind HAProxy, gated by the relays: two relays, two influxd, and
HAProxy configured as docs-query.md (the README) says. Each influxd is in the
/query rotation only while every relay says it is ready (GET /health/<name>:
up, no backlog, no gap). While influxd b is stopped, restarted and replaying
its backlog, every query through HAProxy returns every acknowledged point,
never b's partial answer; once b is ready, it serves queries again. (With
HAProxy checking the influxd's own /ping instead, queries got a third of the
points from b while it replayed.)

:func:`reads_haproxy_config` is the configuration the documentation shows.
"""

import csv
import io
import time
import urllib.parse

from .helpers import free_ports, request, wait_until
from .test_haproxy import haproxy, haproxy_config  # noqa: F401 (haproxy: the fixture)
from .workload import drained

POINTS_PER_WRITE = 20


def reads_haproxy_config(port, relays, databases, stats_port):
    """test_haproxy's HAProxy (writes to the relays, everything else to the
    databases), with each database in rotation only while every relay says it
    is ready; when none is, any database that answers its /ping serves.

    ``relays`` and ``databases`` are lists of ``(name, host, port)``; a
    database's name is the relays' name for it (their output's name).
    """
    text = haproxy_config(port, [(n, "%s:%d" % (h, p)) for n, h, p in relays], [], stats_port)
    head, rest = text.split("\nbackend databases\n")
    stats = rest[rest.index("listen stats\n"):]
    databases_section = ("backend databases\n    balance roundrobin\n    option httpchk\n"
                         "    http-check send meth GET uri /ping\n"
                         "    http-check expect status 204\n")
    for name, host, port_ in databases:
        databases_section += "    server %s %s:%d track complete_%s/%s\n" % (
            name, host, port_, name, name)
    for name, host, port_ in databases:
        databases_section += "    server %s-any %s:%d backup check inter 500ms fall 2 rise 2\n" % (
            name, host, port_)
    for name, host, port_ in databases:
        databases_section += "\nbackend complete_%s\n    option httpchk\n" % name
        for _, relay_host, relay_port in relays:
            databases_section += ("    http-check connect addr %s port %d\n"
                                  "    http-check send meth GET uri /health/%s\n"
                                  "    http-check expect status 200\n"
                                  % (relay_host, relay_port, name))
        databases_section += "    server %s %s:%d check inter 500ms fall 1 rise 2\n" % (
            name, host, port_)
    return head + "\n" + databases_section + "\n" + stats


def relay_config(port, servers):
    text = 'shutdown-timeout = "5s"\n[[http]]\nname = "lb"\nbind-addr = "127.0.0.1:%d"\n' % port
    for name, server in zip(("influxdb1", "influxdb2"), servers):
        # Replay batches of one write (of 20 points) each: b's backlog takes
        # a while to replay, long enough to be seen incomplete while it answers.
        text += ('\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "2s"\n'
                 'buffer-size-mb = 64\nmax-delay-interval = "500ms"\nmax-batch-kb = 1\n'
                 % (name, server.url))
    return text


def served(lb, server):
    """Sessions HAProxy sent to a server of backend "databases" so far."""
    r = request("GET", "http://127.0.0.1:%d/stats;csv" % lb.stats_port, timeout=2)
    for row in csv.DictReader(io.StringIO(r.body.decode().lstrip("# "))):
        if row["pxname"] == "databases" and row["svname"] == server:
            return int(row["stot"])
    raise AssertionError("no server %s in HAProxy's stats" % server)


def count(url, db, timeout=10):
    """Points of m a query to ``url`` counts (its status must be 200)."""
    r = request("GET", url + "/query?" + urllib.parse.urlencode(
        {"db": db, "q": "SELECT count(v) FROM m"}), timeout=timeout)
    assert r.status == 200, r
    series = r.json()["results"][0].get("series")
    return series[0]["values"][0][1] if series else 0


def test_queries_through_haproxy_never_reach_an_influxd_that_replays(
        influxd_pair, db, relay_factory, haproxy):  # noqa: F811
    a, b = influxd_pair
    lb_port, stats_port, port1, port2 = free_ports(4)
    relays = [relay_factory(relay_config(port, (a, b)), port, name=name)
              for name, port in (("relay1", port1), ("relay2", port2))]
    lb = haproxy(reads_haproxy_config(
        lb_port, [("relay1", "127.0.0.1", port1), ("relay2", "127.0.0.1", port2)],
        [("influxdb1", "127.0.0.1", a.port), ("influxdb2", "127.0.0.1", b.port)],
        stats_port), lb_port, stats_port)
    for name in ("influxdb1", "influxdb2"):
        lb.wait_status("databases", name, "UP")
    started = time.monotonic()
    acked = 0

    def write(i):
        nonlocal acked
        first = i * POINTS_PER_WRITE
        body = "\n".join("m v=%di %d" % (n, 1600000000000000000 + n)
                         for n in range(first, first + POINTS_PER_WRITE))
        r = request("POST", lb.url + "/write?db=" + db, body=body.encode())
        assert r.status == 204, r
        acked += POINTS_PER_WRITE

    # Both up: every write reaches both.
    for i in range(20):
        write(i)
    wait_until(lambda: count(a.url, db) == count(b.url, db) == acked, 10,
               what="both influxd hold the first writes")
    assert count(lb.url, db) == acked

    # b stopped: what is acknowledged is on a, and waits in the relays' buffers for b.
    b.stop()
    for i in range(20, 1020):
        write(i)
        if i % 20 == 0:
            assert count(lb.url, db) == acked, "write %d" % i
    lb.wait_status("databases", "influxdb2", "DOWN", timeout=5)

    # b back: it answers, but lacks its backlog until the relays have replayed
    # it. Queries keep getting everything (from a) meanwhile.
    before = served(lb, "influxdb2")
    b.restart()
    restarted = time.monotonic()
    seen_partial = False
    deadline = time.monotonic() + 20
    queries = 0
    while lb.status("databases").get("influxdb2") != "UP":
        assert time.monotonic() < deadline, "influxdb2 never came back into rotation"
        assert count(lb.url, db) == acked, "a query through HAProxy after b's restart"
        queries += 1
        seen_partial = seen_partial or count(b.url, db) < acked
    replayed = time.monotonic()
    assert seen_partial, "b was never seen incomplete: the test saw no replay"
    assert served(lb, "influxdb2") == before  # not a single query while b replayed

    # b complete again: back in rotation, answering its share.
    for _ in range(10):
        assert count(lb.url, db) == acked
    assert served(lb, "influxdb2") > before
    assert count(b.url, db) == acked
    for relay in relays:
        assert drained(relay.url)
    print("%d queries through HAProxy while b replayed its backlog (%.1fs, from its restart "
          "until it was back in rotation); %.1fs in all" % (
              queries, replayed - restarted, time.monotonic() - started))
