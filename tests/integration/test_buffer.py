"""Retry buffers in memory, end to end: a backend goes away and comes back."""

import json
import logging

import gevent

from .conftest import buffered, error_of, eventually, http_config, point, status


def test_a_backend_that_comes_back_gets_every_write_in_order(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    for i in range(20):
        assert r.write(point(i)).status == 204
    s = status(r)["b1"]
    assert s["backlog"] and s["buffered_writes"] == 20
    assert status(r)["b0"]["buffered_writes"] == 0
    b.start()
    # Writes made while the backlog drains come after it.
    for i in range(20, 40):
        assert r.write(point(i)).status == 204
        gevent.sleep(0.01)
    eventually(lambda: len(b.lines) >= 40, timeout=10)
    assert b.lines == [point(i) for i in range(40)]
    assert a.lines == [point(i) for i in range(40)]
    # Batches were aggregated within max-batch-kb while replaying.
    assert len(b.bodies) < 40
    assert all(len(body) <= 1024 for body in b.bodies)
    eventually(lambda: status(r)["b1"]["direct"])
    n = len(b.requests)
    assert r.write(point(40)).status == 204
    eventually(lambda: len(b.requests) == n + 1)
    assert b.lines[-1] == point(40)


def test_writes_nobody_acknowledged_are_not_buffered(relay, backends):
    a, b = backends(mode=("status", 500, b"")), backends()
    b.stop()
    r = relay(buffered(a, b))
    resp = r.write(point(1))
    assert resp.status == 503
    assert all(s["buffered_writes"] == 0 for s in status(r).values())
    a.mode = ("status", 204, b"")
    b.start()
    assert r.write(point(2)).status == 204
    eventually(lambda: a.lines and b.lines)
    gevent.sleep(0.3)
    assert a.lines == [point(1), point(2)]  # the first one was answered 500
    assert b.lines == [point(2)]


def test_a_backend_with_a_backlog_cannot_acknowledge_alone(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    assert r.write(point(1)).status == 204  # b now has a backlog
    a.mode = ("status", 503, b"")
    resp = r.write(point(2))  # a fails, b may not take it behind its backlog alone
    assert resp.status == 503
    assert status(r)["b1"]["buffered_writes"] == 1
    a.mode = ("status", 204, b"")
    b.start()
    eventually(lambda: status(r)["b1"]["direct"], timeout=5)
    assert b.lines == [point(1)]


def test_a_hanging_backlog_and_a_dead_backend_is_503(relay, backends):
    a, b = backends(), backends()
    r = relay(buffered(a, b))
    a.stop()
    assert r.write(point(1)).status == 204
    a.start()
    b.stop()
    # Until a drains, a has a backlog and b is down: nobody can take a write directly.
    a.mode = "hang"  # a's backlog stays: its retries hang
    resp = r.write(point(2))
    assert resp.status == 503
    assert error_of(resp).startswith("unable to write points")
    assert status(r)["b0"]["buffered_writes"] == 1


def test_a_full_buffer_drops_and_counts(relay, backends, caplog):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    big = b"\n".join(point(i) for i in range(20000))  # ~ 500 kB a write, 1 MB buffer
    caplog.set_level(logging.ERROR)
    results = [r.write(big).status for _ in range(3)]
    assert results == [204, 204, 204]  # a has them all: the client is answered
    s = status(r)["b1"]
    assert s["buffered_writes"] == 2 and s["dropped_full"] == 1
    assert s["buffered_bytes"] <= s["limit_bytes"] == 1024 * 1024
    assert any("buffer full" in rec.getMessage() for rec in caplog.records)


def test_a_rejected_batch_is_dropped_and_does_not_block_the_next(relay, backends, caplog):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    r.write(point(1))
    r.write(b"other f=1i 5", query="db=other")  # another query string: another batch
    b.script = [("status", 400, b'{"error":"field type conflict"}')]
    caplog.set_level(logging.ERROR)
    b.start()
    eventually(lambda: status(r)["b1"]["direct"])
    assert b.lines == [point(1), b"other f=1i 5"]
    assert b.requests[0].query == "db=test" and b.requests[1].query == "db=other"
    assert status(r)["b1"]["dropped_rejected"] == 1
    assert any("rejected" in rec.getMessage() and "400" in rec.getMessage() for rec in caplog.records)


def test_a_slow_backend_keeps_its_order(relay, backends):
    a, b = backends(), backends(mode=("slow", 0.3, 204))
    r = relay(buffered(a, b))
    for i in range(10):
        assert r.write(point(i)).status == 204
    eventually(lambda: len(b.lines) == 10, timeout=10)
    assert b.lines == [point(i) for i in range(10)]
    eventually(lambda: status(r)["b1"]["direct"])


def test_buffered_writes_expire_after_max_age(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b, extra=', buffer-max-age = "300ms"'))
    r.write(point(1))
    eventually(lambda: status(r)["b1"]["dropped_expired"] == 1, timeout=5)
    b.start()
    r.write(point(2))
    eventually(lambda: b.lines, timeout=5)
    assert b.lines == [point(2)]


def test_admin_flush_empties_buffers_and_says_how_much(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b, listener_extra="admin-enabled = true"))
    r.write(point(0))
    # The client has its answer once a took the write; b's request may still be
    # on its way (a connection being opened). Once it has failed, b's output
    # takes writes through its buffer only: nothing more is in flight to b, and
    # a write cannot reach b after the flush except through the buffer.
    eventually(lambda: not status(r)["b1"]["direct"])
    for i in range(1, 3):
        r.write(point(i))
    resp = r.http.request("POST", r.url + "/admin/flush?output=b1")
    assert resp.status == 200
    flushed = json.loads(resp.data)["flushed"]
    assert flushed == {"b1": {"writes": 3, "bytes": sum(len(point(i)) for i in range(3))}}
    assert status(r)["b1"]["buffered_writes"] == 0
    assert r.http.request("POST", r.url + "/admin/flush?output=nope").status == 404
    assert r.http.request("GET", r.url + "/admin/flush").status == 405
    b.start()
    r.write(point(9))
    eventually(lambda: b.lines)
    assert b.lines == [point(9)]


def test_without_a_buffer_a_failed_backend_just_misses_the_write(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(http_config(a, b))
    assert r.write(point(1)).status == 204
    assert status(r)["b1"]["buffer"] is None
    b.start()
    r.write(point(2))
    eventually(lambda: b.lines)
    assert b.lines == [point(2)]


def test_a_slow_backend_takes_the_write_when_the_fast_one_fails(relay, backends):
    a, b = backends(mode=("slow", 0.3, 204)), backends()
    r = relay(buffered(a, b))
    assert r.write(point(0)).status == 204  # b answers first; a's request is still out
    assert not status(r)["b0"]["direct"]
    b.stop()
    # b fails this one; a is well, only slow: it takes the write behind point 0.
    assert r.write(point(1)).status == 204
    assert eventually(lambda: a.lines == [point(0), point(1)], timeout=5)
    assert status(r)["b1"]["buffered_writes"] == 1


def test_a_backlog_that_is_failing_does_not_make_the_client_wait(relay, backends):
    a, b = backends(), backends()
    a.stop()
    r = relay(buffered(a, b))
    assert r.write(point(0)).status == 204  # a failing: backlog, retries failing
    eventually(lambda: status(r)["b0"]["retries"] >= 1)
    b.mode = ("status", 500, b"")
    resp = r.write(point(1))
    assert resp.status == 503
    assert resp.headers["Content-Type"] == "application/json"


def test_stopping_gives_a_memory_backlog_time_then_says_what_is_lost(relay, backends, caplog):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    for i in range(3):
        r.write(point(i) + b"\n" + point(i + 100))
    caplog.set_level(logging.INFO)
    r.relay.stop(timeout=0.3)
    lost = [rec.getMessage() for rec in caplog.records if "lost" in rec.getMessage()]
    assert lost == ["output b1: shutting down with 3 buffered write(s): 6 point(s) lost"]


def test_stopping_delivers_a_memory_backlog_when_the_backend_returns_in_time(relay, backends, caplog):
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    for i in range(3):
        r.write(point(i))
    caplog.set_level(logging.INFO)
    gevent.spawn_later(0.2, b.start)
    r.relay.stop(timeout=5)
    assert b.lines == [point(i) for i in range(3)]
    assert not [rec for rec in caplog.records if "lost" in rec.getMessage()]


def test_a_disk_buffer_is_replayed_in_order_by_the_next_relay(relay, backends, tmp_path, caplog):
    a, b = backends(), backends()
    b.stop()
    text = buffered(a, b, extra=', buffer-path = "%s/buf-NAME", buffer-sync = "write"' % tmp_path)
    text = text.replace("buf-NAME", "buf-0", 1).replace("buf-NAME", "buf-1", 1)
    first = relay(text)
    for i in range(30):
        assert first.write(point(i)).status == 204
    assert status(first)["b1"]["durable"] is True
    caplog.set_level(logging.INFO)
    first.relay.stop(timeout=0)
    assert any("stay buffered on disk" in rec.getMessage() for rec in caplog.records)
    assert not [rec for rec in caplog.records if "lost" in rec.getMessage()]
    b.start()
    second = relay(text)
    assert second.write(point(30)).status == 204
    eventually(lambda: len(b.lines) == 31, timeout=10)
    assert b.lines == [point(i) for i in range(31)]


def test_a_backlog_replayed_from_disk_does_not_stall_the_relay(relay, backends, tmp_path):
    """Restarted with a disk backlog for a backend that takes its time, the relay answers
    new writes from the other backend at once (it once spun the hub for b's timeout)."""
    a, b = backends(), backends()
    b.stop()
    text = buffered(a, b, extra=', buffer-path = "%s/{}"' % tmp_path)
    text = text.replace("{}", "b0", 1).replace("{}", "b1", 1)
    first = relay(text)
    for i in range(3):
        assert first.write(point(i)).status == 204
    first.relay.stop(timeout=0)
    b.mode = "hang"  # b's replay of the backlog takes its whole timeout
    b.start()
    r = relay(text)
    assert status(r)["b1"]["buffered_writes"] == 3
    started = gevent.get_hub().loop.now()
    assert r.write(point(3)).status == 204
    assert gevent.get_hub().loop.now() - started < 0.5
    assert eventually(lambda: a.lines == [point(i) for i in range(4)])


def test_a_backlog_being_replayed_says_how_far_it_is(relay, backends, caplog, monkeypatch):
    """In the log at a steady pace and in /status: percent, points/s, time left."""
    from influx_relay import output as output_mod

    monkeypatch.setattr(output_mod, "REPLAY_LOG_EVERY", 0.0)
    caplog.set_level(logging.INFO, logger="influx_relay.output")
    a, b = backends(), backends()
    b.stop()
    r = relay(buffered(a, b, size_mb=1))
    for i in range(6):  # 40 lines each: one write per batch (max-batch-kb = 1)
        assert r.write(b"\n".join(point(i * 40 + j) for j in range(40))).status == 204
    eventually(lambda: status(r)["b1"]["buffered_writes"] == 6)
    assert status(r)["b1"]["replay"] is None
    b.mode = ("slow", 0.3, 204)
    b.start()
    replay = eventually(lambda: status(r)["b1"]["replay"])
    assert 0 < replay["percent"] < 100
    assert replay["delivered_points"] >= 1 and replay["backlog_bytes"] > 0
    assert replay["points_per_s"] > 0 and replay["eta_s"] is not None
    eventually(lambda: not status(r)["b1"]["backlog"], timeout=10)
    assert status(r)["b1"]["replay"] is None
    progress = [m for m in caplog.messages if "replaying its backlog" in m]
    assert progress and "% delivered" in progress[0] and "points/s" in progress[0]
    done = [m for m in caplog.messages if "backlog delivered (6 write(s), 240 point(s)" in m]
    assert len(done) == 1, caplog.messages
