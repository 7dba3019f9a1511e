"""GET /health/<output>: whether one backend may serve reads, for a load balancer."""

import gevent

from .conftest import body_json, buffered, eventually, http_config, point


def health(r, name, method="GET"):
    resp = r.http.request(method, r.url + "/health/" + name)
    return resp.status, (body_json(resp) if resp.data else None)


def pings(backend):
    return sum(1 for q in backend.requests if q.path == "/ping")


def test_a_backend_that_answers_with_nothing_pending_is_ready(relay, backends):
    a, b = backends(), backends()
    r = relay(buffered(a, b))
    assert health(r, "b0") == (200, {"status": "ready"})
    assert health(r, "b1", "HEAD") == (200, None)
    status, body = health(r, "nope")
    assert status == 404 and "nope" in body["error"]


def test_down_then_lagging_while_it_replays_then_ready(relay, backends):
    a, b = backends(), backends()
    b.mode = ("status", 500, b'{"error":"down"}')
    r = relay(buffered(a, b, listener_extra="health-cache-ms = 0"))
    for i in range(3):
        assert r.write(point(i)).status == 204  # a took them; b's wait in its buffer
    status, body = health(r, "b1")
    assert status == 503 and body["status"] == "down"
    assert "HTTP 500" in body["reason"]
    assert body["backlog_bytes"] > 0
    # Back: pings at once, writes slowly, so its backlog takes a while to deliver.
    b.mode = lambda q: ("status", 204, b"") if q.path == "/ping" else ("slow", 0.5, 204)
    status, body = health(r, "b1")
    assert status == 503 and body["status"] == "lagging"
    assert body["backlog_bytes"] > 0 and body["oldest_s"] >= 0
    assert "retry buffer" in body["reason"]
    eventually(lambda: health(r, "b1")[0] == 200, timeout=10)
    assert health(r, "b0")[0] == 200


def test_a_backend_that_misses_points_is_not_ready_until_repaired(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(a, b))  # no buffers: what b fails, it misses
    b.mode = ("status", 500, b"")
    assert r.write(point(1)).status == 204
    b.mode = ("status", 204, b"")
    eventually(lambda: health(r, "b1")[1]["status"] == "gap")
    status, body = health(r, "b1")
    assert status == 503 and body["gap_points"] == 1 and body["backlog_bytes"] == 0
    assert health(r, "b0")[0] == 200


def test_pings_are_cached_so_a_checker_does_not_add_traffic(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(a, b, listener_extra="health-cache-ms = 60000"))
    jobs = [gevent.spawn(health, r, "b0") for _ in range(20)]
    gevent.joinall(jobs)
    assert all(job.value[0] == 200 for job in jobs)
    assert pings(a) == 1  # twenty checks at once, and later ones: one ping
    assert health(r, "b0")[0] == 200
    assert pings(a) == 1


def test_a_write_one_backend_refuses_and_another_stores_is_a_gap(relay, backends):
    """The client hears the first answer (a 404: no such database on b0), but b1
    stored the point: the two now differ, and b0's readiness says so."""
    a, b = backends(), backends()
    a.mode = lambda q: ("status", 204, b"") if q.path == "/ping" else (
        "status", 404, b'{"error":"database not found: \\"only_on_b\\""}')
    b.mode = ("slow", 0.2, 204)  # answers after the client got a's 404
    r = relay(http_config(a, b))
    assert r.write(point(7), query="db=only_on_b").status == 404
    gap = eventually(lambda: health(r, "b0")[1] if health(r, "b0")[1]["status"] == "gap" else None)
    assert gap["gap_points"] == 1
    ranges = body_json(r.get("/status"))["outputs"]["b0"]["gaps"]["ranges"]
    assert [(x["db"], x["reasons"]) for x in ranges] == [("only_on_b", {"rejected 404": 1})]
    assert health(r, "b1")[0] == 200
