"""Steady write load through a relay, and the check of what the databases hold after it.

A :class:`Writer` runs client threads that post line protocol to a URL until
stopped. Every point is distinct, and its lines carry no timestamp, so the
relay stamps them::

    m,w=<thread>,k=<line> v=<id>i            id: unique over the whole run
    last,w=<thread> v=<seq>i 1600000000000000000   one point, overwritten by each request

A point is known by its value. Two requests of one thread never get the same
stamp (they are sequential), so no two points share a series and a time: a
point stored twice (stamped twice, say) shows as two rows. (One series per
point would say the same but runs into influxd's max-values-per-tag, 100,000,
within minutes.)

It records which points the client got 204 for (acknowledged), which it got
anything else for (503, a refused connection, a timeout: unacknowledged, they
may or may not be stored), and the value of the overwritten point in each
thread's last acknowledged request.

:func:`check_delivery` then states what a user of a relay may count on, for
each database: every acknowledged point is there, with the value sent, and
at the same relay-stamped time everywhere, once; nothing is there that was
never sent; the overwritten point holds the last acknowledged value (a replayed
backlog never lands after newer writes). ``SELECT count(v), sum(v)`` agree
with the rows.
"""

import http.client
import itertools
import json
import os
import threading
import time
import urllib.parse
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from .helpers import request

OVERWRITTEN_TIME = 1600000000000000000


class Writer(object):
    def __init__(self, url, db, threads=2, points=5, interval=0.01, timeout=10.0):
        self.url = url
        self.db = db
        self.threads = threads
        self.points = points
        self.interval = interval
        self.timeout = timeout
        self.acked = set()  # point ids the client got 204 for
        self.unacked = set()  # point ids of writes that got anything else
        self.last = {}  # thread -> value of "last" in its last acknowledged request
        self.last_ok = {}  # thread -> whether its very last request was acknowledged
        self.statuses = Counter()  # 204, 503, "error", ...
        self.failures = []  # (monotonic time answered, status, detail) of each non-204
        self.max_latency = 0.0  # of acknowledged writes, seconds
        self.requests = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers = []

    def start(self):
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self):
        self._stop.set()
        for worker in self._workers:
            worker.join(self.timeout + 5)
        return self

    def wait_requests(self, n, timeout=30.0):
        """Wait (bounded) until ``n`` more requests were answered."""
        target = self.requests + n
        deadline = time.monotonic() + timeout
        while self.requests < target:
            assert time.monotonic() < deadline, "the writers made no progress"
            time.sleep(0.01)

    def _run(self, thread):
        url = "%s/write?%s" % (self.url, urllib.parse.urlencode({"db": self.db}))
        for seq in itertools.count(1):
            if self._stop.is_set():
                return
            with self._lock:
                ids = [next(self._ids) for _ in range(self.points)]
            lines = ["m,w=%d,k=%d v=%di" % (thread, k, i) for k, i in enumerate(ids)]
            lines.append("last,w=%d v=%di %d" % (thread, seq, OVERWRITTEN_TIME))
            started = time.monotonic()
            try:
                answer = request("POST", url, body="\n".join(lines).encode(),
                                 timeout=self.timeout)
                status, detail = answer.status, answer.body[:200]
            except OSError as exc:
                status, detail = "error", repr(exc)
            answered = time.monotonic()
            took = answered - started
            with self._lock:
                self.requests += 1
                if status != 204:
                    self.failures.append((answered, status, detail))
                self.statuses[status] += 1
                if status == 204:
                    self.acked.update(ids)
                    self.last[thread] = seq
                    self.max_latency = max(self.max_latency, took)
                else:
                    self.unacked.update(ids)
                self.last_ok[thread] = status == 204
            if status != 204:
                time.sleep(0.05)  # a client backs off a little
            elif self.interval:
                time.sleep(self.interval)

    def summary(self):
        return ("%d requests %s, %d points acknowledged, %d not, max latency %.3fs%s"
                % (self.requests, dict(self.statuses), len(self.acked), len(self.unacked),
                   self.max_latency,
                   "".join("; %s: %s" % (status, detail)
                           for _, status, detail in self.failures[:5])))


def select(server, db, q, chunk_size=50000):
    """Rows of a query as dicts, streamed in chunks (a soak's million points fit)."""
    params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ns", "chunked": "true",
                                     "chunk_size": chunk_size})
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("GET", "/query?" + params)
        resp = conn.getresponse()
        assert resp.status == 200, (server.url, q, resp.status, resp.read()[:300])
        for line in resp:
            if not line.strip():
                continue
            result = json.loads(line)["results"][0]
            assert "error" not in result, (server.url, q, result)
            for series in result.get("series", []):
                columns = series["columns"]
                for values in series["values"]:
                    yield dict(zip(columns, values))
    finally:
        conn.close()


def stored(server, db):
    """(points {id: (time, series)}, overwritten {thread: value}) a server holds."""
    points = {}
    for row in select(server, db, "SELECT * FROM m"):
        v = row["v"]
        assert v not in points, "%s holds point %d twice: %s and %s" % (
            server.url, v, points[v], (row["time"], row["w"], row["k"]))
        points[v] = (row["time"], row["w"], row["k"])
    last = {}
    for row in select(server, db, "SELECT * FROM last"):
        assert row["time"] == OVERWRITTEN_TIME, row
        last[int(row["w"])] = row["v"]
    return points, last


def count_and_sum(server, db):
    out = server.query("SELECT count(v), sum(v) FROM m", db=db)["results"][0]
    if "series" not in out:
        return 0, 0
    _, count, total = out["series"][0]["values"][0]
    return count, total


def check_delivery(writer, servers, db):
    """Assert what every server holds against what the writer was told; return figures."""
    holdings = [stored(server, db) for server in servers]
    sent = writer.acked | writer.unacked
    figures = {"acknowledged": len(writer.acked), "unacknowledged": len(writer.unacked)}
    for server, (points, last) in zip(servers, holdings):
        missing = writer.acked - set(points)
        assert not missing, "%s lacks %d acknowledged point(s), e.g. %s" % (
            server.url, len(missing), sorted(missing)[:10])
        never_sent = set(points) - sent
        assert not never_sent, "%s holds points never sent: %s" % (
            server.url, sorted(never_sent)[:10])
        count, total = count_and_sum(server, db)
        assert (count, total) == (len(points), sum(points)), (server.url, count, total)
        # The overwritten point: the value of the last request, when it was acknowledged.
        for thread, ok in writer.last_ok.items():
            if ok:
                assert last.get(thread) == writer.last[thread], (
                    "%s: overwritten point of writer %d holds %s, the last acknowledged value "
                    "is %s" % (server.url, thread, last.get(thread), writer.last[thread]))
        figures.setdefault("stored", []).append(len(points))
        figures.setdefault("unacknowledged_stored", []).append(len(set(points) & writer.unacked))
    # The same relay-stamped time for a point everywhere.
    first = holdings[0][0]
    for server, (points, _) in zip(servers[1:], holdings[1:]):
        differ = [p for p in writer.acked if points[p] != first[p]]
        assert not differ, "%s and %s differ on %d point(s), e.g. %s: %s vs %s" % (
            servers[0].url, server.url, len(differ), differ[0], first[differ[0]], points[differ[0]])
    return figures


# -- the relay process, from outside -------------------------------------------------


def assert_hub_never_blocked(*relays):
    for relay in relays:
        text = relay.stderr()
        at = text.find("Blocked Stack")
        assert at < 0, "%s: the gevent hub was blocked:\n%s" % (
            relay.config_path.name, text[max(0, at - 400):at + 2500])



def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_bytes(pid):
    with open("/proc/%d/statm" % pid) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def metrics(relay_url):
    """{sample name: value} of the relay's unlabelled samples, and the labelled ones by
    (name, sorted labels)."""
    resp = request("GET", relay_url + "/metrics")
    assert resp.status == 200, resp
    out = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
            if not s.labels:
                out[s.name] = s.value
    return out


def greenlets(relay_url):
    return int(metrics(relay_url)["influx_relay_greenlets"])


def status(relay_url):
    return request("GET", relay_url + "/status").json()["outputs"]


def drained(relay_url):
    """Whether every buffered output of the relay is writing directly again."""
    return all(s["direct"] for s in status(relay_url).values())
