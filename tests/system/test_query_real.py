"""/query through the relay against a real influxd: a chunked answer of millions
of rows streams through, every row reaches the client, and the relay's memory
stays flat (its peak RSS, VmHWM, grows by far less than the answer's size)."""

import http.client
import json
import time
import urllib.parse

from .helpers import Relay, free_port, request, wait_until

#: Points written straight to influxd, then read back through the relay.
POINTS = 2000000
BATCH = 100000
#: What the relay's peak RSS may grow by while it streams the answer (which is
#: some 70 MB of JSON: a relay that held it would grow by more).
RSS_BOUND_MB = 50


def vm_hwm_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmHWM for pid %d" % pid)


def write_points(server, db):
    """POINTS points of m (fields a and b, one series, 1 s apart), in batches."""
    start = 1600000000
    for first in range(0, POINTS, BATCH):
        body = "\n".join("m a=%di,b=%di %d" % (i, POINTS - i, start + i)
                         for i in range(first, min(first + BATCH, POINTS)))
        r = server.write(db, body.encode(), precision="s")
        assert r.status == 204, r


def stream_rows(url, db, q):
    """GET a chunked query; (rows, bytes) read from the answer, each row's a
    checked to be the next one, as it comes."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    params = urllib.parse.urlencode({"db": db, "q": q, "chunked": "true", "chunk_size": "20000"})
    conn.request("GET", "/query?" + params)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()[:500]
    backend = resp.getheader("X-Relay-Backend")
    rows = size = 0
    pending = b""
    while True:
        data = resp.read1(256 * 1024)
        if not data:
            break
        size += len(data)
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            result = json.loads(line)["results"][0]
            assert "error" not in result, result
            for series in result.get("series", []):
                for _, a, b in series["values"]:
                    assert (a, b) == (rows, POINTS - rows), (rows, a, b)
                    rows += 1
    conn.close()
    assert pending.strip() == b""
    return rows, size, backend


def test_a_chunked_answer_of_millions_of_rows_streams_through_in_bounded_memory(
        influxd_factory, relay_factory):
    server = influxd_factory("a")
    db = "big"
    server.create_database(db)
    started = time.monotonic()
    write_points(server, db)
    wrote = time.monotonic() - started
    port = free_port()
    relay = relay_factory(
        '[[http]]\nname = "q"\nbind-addr = "127.0.0.1:%d"\nquery-enabled = true\n'
        'output = [ { name = "a", location = "%s/", timeout = "30s" } ]\n' % (port, server.url),
        port)
    # Warm up the query path, then the peak RSS of the idle relay.
    r = request("GET", relay.url + "/query?" + urllib.parse.urlencode(
        {"db": db, "q": "SELECT count(a) FROM m"}), timeout=30)
    assert r.status == 200 and r.json()["results"][0]["series"][0]["values"][0][1] == POINTS, r
    idle = vm_hwm_mb(relay.proc.pid)

    started = time.monotonic()
    rows, size, backend = stream_rows(relay.url, db, "SELECT a, b FROM m")
    took = time.monotonic() - started
    peak = vm_hwm_mb(relay.proc.pid)
    print("wrote %d points in %.1fs; read %d rows (%.1f MB) through the relay in %.1fs; "
          "relay peak RSS %.1f MB idle, %.1f MB after" % (
              POINTS, wrote, rows, size / 1e6, took, idle, peak))
    assert (rows, backend) == (POINTS, "a")
    assert size > 1.5 * RSS_BOUND_MB * 1e6  # a relay that held the answer would break the bound
    assert peak - idle < RSS_BOUND_MB, "relay's peak RSS grew from %.1f to %.1f MB" % (idle, peak)


def test_with_workers_an_output_one_worker_finds_incomplete_is_not_asked(
        tmp_path, influxd_pair, db):
    # One write while a is stopped: a has no retry buffer, so the worker that
    # took the write records that a misses it (a gap). Once a is back, every
    # query, whichever worker answers it, must go to b, though a is first in
    # query-order and the other worker saw nothing wrong.
    a, b = influxd_pair
    port = free_port()
    relay = Relay(tmp_path / "relay", (
        'workers = 2\n[[http]]\nname = "main"\nbind-addr = "127.0.0.1:%d"\n'
        'query-enabled = true\nquery-order = ["a", "b"]\n'
        'output = [ { name = "a", location = "%s/", timeout = "2s" },\n'
        '           { name = "b", location = "%s/", timeout = "2s" } ]\n'
        % (port, a.url, b.url)), port).start()
    q = "/query?db=%s&q=SHOW+MEASUREMENTS" % db
    try:
        wait_until(lambda: request("GET", relay.url + "/health/a").status == 200, 10,
                   what="both workers answering")
        assert request("GET", relay.url + q).headers["X-Relay-Backend"] == "a"
        a.stop()
        assert relay.write(b"m v=1 1", db=db).status == 204
        a.restart()
        wait_until(lambda: request("GET", relay.url + "/health/a").json().get("status") == "gap",
                   10, what="a's gap, as the workers see it together")
        answered = set()
        for _ in range(20):  # each on a new connection: both workers answer some
            r = request("GET", relay.url + q)
            assert r.status == 200, r
            answered.add(r.headers["X-Relay-Backend"])
        assert answered == {"b"}
    finally:
        assert relay.stop() == 0
