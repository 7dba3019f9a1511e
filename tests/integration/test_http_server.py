"""The listener's HTTP/1.1 server (influx_relay.httpserver), over raw sockets.

What clients see on the wire: keep-alive and its end, HTTP/1.0, pipelined
requests, Expect: 100-continue, HEAD, chunked bodies, a body left unread, and
the requests the server refuses itself (each with a JSON error, then closed).
"""

import json

import gevent

from influx_relay import workers

from .conftest import eventually, http_config
from .wire import closed, connect, post, read_response


def test_keep_alive_serves_many_requests_on_one_connection(relay, backends):
    b = backends()
    r = relay(http_config(b))
    s = connect(r)
    for i in range(5):
        s.sendall(post(b"cpu v=%d %d" % (i, i + 1)))
        status, headers, body = read_response(s)
        assert status == 204
        assert "connection" not in headers
        assert headers["x-influxdb-version"].startswith("relay-")
        assert headers["date"].endswith(" GMT")
    s.close()
    assert b.bodies == [b"cpu v=%d %d" % (i, i + 1) for i in range(5)]


def test_pipelined_requests_are_answered_in_order(relay, backends):
    b = backends()
    r = relay(http_config(b))
    s = connect(r)
    s.sendall(post(b"cpu v=1 1") + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
              + post(b"cpu v=2 2", extra=b"Connection: close\r\n"))
    assert read_response(s)[0] == 204
    status, headers, _ = read_response(s)
    assert status == 204 and "x-influxdb-build" in headers
    status, headers, _ = read_response(s)
    assert status == 204 and headers["connection"] == "close"
    assert closed(s)
    assert b.bodies == [b"cpu v=1 1", b"cpu v=2 2"]


def test_http_10_closes_unless_asked_to_keep_alive(relay, backends):
    r = relay(http_config(backends()))
    s = connect(r)
    s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
    status, headers, _ = read_response(s)
    assert status == 204 and headers["connection"] == "close"
    assert closed(s)
    s = connect(r)
    s.sendall(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    status, headers, _ = read_response(s)
    assert status == 204 and headers["connection"] == "keep-alive"
    s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
    assert read_response(s)[0] == 204
    assert closed(s)


def test_expect_100_continue_is_answered_when_the_body_is_wanted(relay, backends):
    b = backends()
    r = relay(http_config(b))
    s = connect(r)
    body = b"cpu v=1 1"
    s.sendall(b"POST /write?db=test HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % len(body))
    assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    s.sendall(body)
    assert read_response(s)[0] == 204
    assert b.bodies == [body]
    # A request refused before its body is read never gets the 100.
    s.sendall(b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n"
              b"Expect: 100-continue\r\n\r\n")
    status, headers, answer = read_response(s)
    assert status == 400 and b"db" in answer
    assert headers["connection"] == "close"  # the body it never asked for may come yet
    assert closed(s)


def test_head_gets_the_headers_without_the_body(relay, backends):
    r = relay(http_config(backends()))
    s = connect(r)
    s.sendall(b"HEAD /status HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while data.count(b"\r\n\r\n") < 2:
        data += s.recv(65536)
    first, second = data.split(b"\r\n\r\n")[:2]
    assert first.startswith(b"HTTP/1.1 200 ")
    assert b"Content-Length: " in first  # of the body a GET would have had
    assert second.startswith(b"HTTP/1.1 204 ")  # nothing between the two heads


def test_a_body_left_unread_is_skipped_if_it_came_and_else_closes(relay, backends):
    r = relay(http_config(backends()))
    s = connect(r)
    s.sendall(post(b"x" * 1000, path=b"/nowhere") + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(s)[0] == 404
    assert read_response(s)[0] == 204  # the 1000 bytes were not taken for a request
    # A body still to come is not waited for (nor read): the connection closes.
    s.sendall(b"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
    status, headers, _ = read_response(s)
    assert status == 404 and headers["connection"] == "close"
    assert closed(s)


def test_a_chunked_body_with_trailers_is_written(relay, backends):
    b = backends()
    r = relay(http_config(b))
    s = connect(r)
    s.sendall(b"POST /write?db=test HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"4\r\ncpu \r\n5;x=y\r\nv=1 1\r\n0\r\nX-Trailer: t\r\n\r\n"
              b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(s)[0] == 204
    assert read_response(s)[0] == 204
    assert b.bodies == [b"cpu v=1 1"]


REFUSED = {
    b"POST /write?db=test HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n":
        "both Content-Length and Transfer-Encoding",
    b"POST /write?db=test HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n":
        "unsupported Transfer-Encoding",
    b"POST /write?db=test HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd":
        "conflicting Content-Length",
    b"POST /write?db=test HTTP/1.1\r\nNo colon here\r\n\r\n": "malformed header line",
    b"POST /write?db=test HTTP/1.1\r\n Folded: x\r\n\r\n": "malformed header line",
    b"GET /ping\r\n\r\n": "malformed request line",
    b"GET /ping HTTP/3\r\n\r\n": "unsupported HTTP version",
}


def test_requests_the_server_refuses_get_a_json_error_and_are_closed(relay, backends):
    b = backends()
    r = relay(http_config(b))
    for request, reason in REFUSED.items():
        s = connect(r)
        s.sendall(request)
        status, headers, body = read_response(s)
        assert status == 400, request
        assert reason in json.loads(body)["error"], (request, body)
        assert headers["content-type"] == "application/json"
        assert headers["connection"] == "close"
        assert closed(s), request
    assert b.bodies == []
    assert r.write(b"cpu v=1 1").status == 204


def test_header_names_with_underscores_are_dropped(relay, backends):
    b = backends()
    r = relay(http_config(b))
    s = connect(r)
    # "Content_Length" must not pass for Content-Length (nor X_A for X-A).
    s.sendall(b"POST /write?db=test HTTP/1.1\r\nHost: x\r\nContent_Length: 9\r\n"
              b"Connection: close\r\n\r\ncpu v=1 1")
    assert read_response(s)[0] == 204  # an empty body: nothing to write
    assert b.bodies == []


def test_an_error_in_the_application_is_a_500_and_the_relay_goes_on(relay, backends, caplog):
    r = relay(http_config(backends()))
    app = r.relay.http[0].app

    def broken(request):
        raise RuntimeError("boom")

    app.routes["/broken"] = broken
    s = connect(r)
    s.sendall(b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = read_response(s)
    assert status == 500 and json.loads(body) == {"error": "internal error"}
    assert closed(s)
    assert "boom" in caplog.text
    assert r.write(b"cpu v=1 1").status == 204


def test_sends_run_on_reused_workers(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(a, b))
    assert r.write(b"cpu v=0 1").status == 204
    eventually(lambda: workers.idle() >= 2)
    made = []
    real_spawn = gevent.spawn

    def counting_spawn(*args, **kwargs):
        made.append(args[0])
        return real_spawn(*args, **kwargs)

    gevent.spawn, spawned = counting_spawn, made
    try:
        for i in range(20):
            assert r.write(b"cpu v=%d %d" % (i, i + 2)).status == 204
    finally:
        gevent.spawn = real_spawn
    # 40 sends, but no greenlet made for each: the workers of earlier sends ran
    # them (a new one only while every worker is busy, as when b is still
    # answering the previous write when a has answered this one).
    assert len(spawned) <= 4, spawned
    assert len(a.bodies) == len(b.bodies) == 21


def test_waiting_workers_hold_no_body(relay, backends):
    """A worker waiting for its next job must not keep the last write's body
    alive: 64 clients' 1 MB writes would otherwise stay in memory when idle."""
    import gc

    from greenlet import greenlet

    r = relay(http_config(backends(), backends()))
    body = b"\n".join(b"cpu,i=%d v=%di %d" % (i, i, i + 1) for i in range(20000))
    assert r.write(body).status == 204
    eventually(lambda: workers.idle() >= 2)
    waiting = [g for g in gc.get_objects()
               if isinstance(g, greenlet) and g.gr_frame is not None
               and g.gr_frame.f_code is workers._work.__code__]
    assert len(waiting) >= 2
    for g in waiting:
        held = [v for v in g.gr_frame.f_locals.values()
                if isinstance(v, tuple) and any(isinstance(x, bytes) and len(x) > 1000 for x in v)]
        assert held == []
