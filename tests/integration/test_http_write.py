"""The HTTP write path against scripted fake backends: what clients and backends see."""

import gzip
import re
import socket
import time

import gevent

from .conftest import body_json, error_of, eventually, http_config


def test_write_reaches_every_backend_with_query_and_auth(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(a, b))
    resp = r.write(
        b"cpu,host=a value=1 1500000000000000000\n",
        query="db=test&rp=week&precision=ns&u=joe&p=secret&consistency=one",
        headers={"Authorization": "Token abc"},
    )
    assert resp.status == 204
    assert resp.data == b""
    for backend in (a, b):
        eventually(lambda: backend.requests)
        req = backend.requests[0]
        assert req.method == "POST"
        assert req.path == "/write"
        assert req.query == "db=test&rp=week&precision=ns&u=joe&p=secret&consistency=one"
        assert req.headers["authorization"] == "Token abc"
        assert req.body == b"cpu,host=a value=1 1500000000000000000"


def test_lines_with_timestamps_are_forwarded_byte_for_byte(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(a, b))
    body = b'm,t=x\\ y f="a b\\"c",g=1i 123\nn v=1.5 -5'
    assert r.write(body).status == 204
    eventually(lambda: a.bodies and b.bodies)
    assert a.bodies == [body] and b.bodies == [body]


def test_missing_timestamps_are_stamped_once_with_the_same_time(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(a, b))
    before = time.time_ns()
    assert r.write(b"cpu v=1\ncpu v=2 7\r\n\n# a comment\nmem free=3i\n").status == 204
    after = time.time_ns()
    eventually(lambda: a.bodies and b.bodies)
    assert a.bodies == b.bodies
    lines = a.bodies[0].split(b"\n")
    assert len(lines) == 3
    assert lines[1] == b"cpu v=2 7"
    ts1 = int(lines[0].rsplit(b" ", 1)[1])
    ts2 = int(lines[2].rsplit(b" ", 1)[1])
    assert ts1 == ts2
    assert before <= ts1 <= after


def test_stamps_in_the_request_precision(relay, backends):
    a = backends()
    r = relay(http_config(a))
    for precision, factor in [("s", 10 ** 9), ("ms", 10 ** 6), ("u", 10 ** 3), ("h", 3600 * 10 ** 9)]:
        before = time.time_ns() // factor
        assert r.write(b"cpu v=1", query="db=test&precision=" + precision).status == 204
        after = time.time_ns() // factor
        ts = int(eventually(lambda: a.bodies)[-1].rsplit(b" ", 1)[1])
        assert before <= ts <= after, precision
        a.requests.clear()


def test_quoted_strings_with_newlines_are_not_split(relay, backends):
    a = backends()
    r = relay(http_config(a))
    body = b'log msg="line one\nline two, with = and \\"quotes\\""\nlog msg="x" 5'
    assert r.write(body).status == 204
    sent = eventually(lambda: a.bodies)[0]
    first, second = sent.rsplit(b"\n", 1)
    assert first.startswith(b'log msg="line one\nline two, with = and \\"quotes\\"" ')
    assert re.fullmatch(rb"\d+", first.rsplit(b" ", 1)[1])
    assert second == b'log msg="x" 5'


def test_gzip_body_is_decoded_and_forwarded(relay, backends):
    a = backends()
    r = relay(http_config(a))
    assert r.write(b"cpu v=1 1\ncpu v=2 2", gzipped=True).status == 204
    assert eventually(lambda: a.bodies) == [b"cpu v=1 1\ncpu v=2 2"]
    assert "content-encoding" not in a.requests[0].headers


def test_corrupt_gzip_is_400_and_nothing_is_forwarded(relay, backends):
    a = backends()
    r = relay(http_config(a))
    resp = r.write(b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert resp.status == 400
    assert "gzip" in error_of(resp)
    truncated = gzip.compress(b"cpu v=1 1" * 100)[:-12]
    resp = r.write(truncated, headers={"Content-Encoding": "gzip"})
    assert resp.status == 400
    gevent.sleep(0.1)
    assert a.requests == []
    # The listener keeps serving.
    assert r.write(b"cpu v=1 1").status == 204


def test_bad_line_is_400_naming_it_and_nothing_is_forwarded(relay, backends):
    a = backends()
    r = relay(http_config(a))
    resp = r.write(b"cpu v=1 1\ncpu v=2 2\ncpu,host=a\ncpu v=3")
    assert resp.status == 400
    assert resp.headers["Content-Type"] == "application/json"
    message = error_of(resp)
    assert "line 3" in message and "cpu,host=a" in message and "missing fields" in message
    gevent.sleep(0.1)
    assert a.requests == []


def test_long_bad_line_is_truncated_in_the_error(relay, backends):
    a = backends()
    r = relay(http_config(a))
    resp = r.write(b"x" * 10000)
    assert resp.status == 400
    assert len(error_of(resp)) < 300


def test_missing_db_is_400(relay, backends):
    a = backends()
    r = relay(http_config(a))
    resp = r.write(b"cpu v=1", query="precision=s")
    assert resp.status == 400
    assert error_of(resp) == "missing parameter: db"
    resp = r.write(b"cpu v=1", query="db=")
    assert resp.status == 400
    gevent.sleep(0.1)
    assert a.requests == []


def test_bad_precision_is_400(relay, backends):
    r = relay(http_config(backends()))
    resp = r.write(b"cpu v=1", query="db=test&precision=fortnight")
    assert resp.status == 400
    assert "precision" in error_of(resp)


def test_methods(relay, backends):
    r = relay(http_config(backends()))
    resp = r.write(b"", method="GET")
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"
    assert "method not allowed" in error_of(resp)
    resp = r.write(b"", method="OPTIONS")
    assert resp.status == 204
    assert "POST" in resp.headers["Allow"]


def test_ping_and_unknown_paths(relay, backends):
    r = relay(http_config(backends()))
    resp = r.get("/ping")
    assert resp.status == 204
    assert resp.headers["X-Influxdb-Version"]
    resp = r.http.request("HEAD", r.url + "/ping")
    assert resp.status == 204
    resp = r.get("/ping?verbose=true")
    assert resp.status == 200
    assert body_json(resp)["version"] == resp.headers["X-Influxdb-Version"]
    resp = r.get("/query?q=show+databases")
    assert resp.status == 404
    assert error_of(resp)


def test_one_backend_down_client_still_gets_204(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(http_config(a, b))
    assert r.write(b"cpu v=1 1").status == 204
    assert eventually(lambda: a.bodies) == [b"cpu v=1 1"]


def test_backend_4xx_is_returned_as_is(relay, backends):
    body = b'{"error":"partial write: field type conflict"}'
    a = backends(mode=("status", 400, body))
    b = backends(mode="hang")
    r = relay(http_config(a, b))
    start = time.monotonic()
    resp = r.write(b"cpu v=1 1")
    assert time.monotonic() - start < 1.5  # at once, not after the hanging backend's timeout
    assert resp.status == 400
    assert resp.data == body
    assert resp.headers["Content-Type"] == "application/json"


def test_database_not_found_404_is_returned(relay, backends):
    body = b'{"error":"database not found: \\"nope\\""}'
    r = relay(http_config(backends(mode=("status", 404, body)), backends(mode=("status", 404, body))))
    resp = r.write(b"cpu v=1 1", query="db=nope")
    assert resp.status == 404
    assert resp.data == body


def test_first_success_answers_without_waiting_for_a_hanging_backend(relay, backends):
    a, b = backends(), backends(mode="hang")
    r = relay(http_config(a, b))
    start = time.monotonic()
    assert r.write(b"cpu v=1 1").status == 204
    assert time.monotonic() - start < 1.5


def test_all_backends_failing_is_503(relay, backends):
    a = backends(mode=("status", 500, b""))
    b = backends()
    b.stop()
    r = relay(http_config(a, b))
    resp = r.write(b"cpu v=1 1")
    assert resp.status == 503
    assert error_of(resp).startswith("unable to write points")


def test_all_backends_failing_passes_a_useful_5xx_body(relay, backends):
    body = b'{"error":"timeout"}'
    r = relay(http_config(backends(mode=("status", 500, body)), backends(mode="reset")))
    resp = r.write(b"cpu v=1 1")
    assert resp.status == 500
    assert resp.data == body


def test_hanging_garbage_and_reset_backends_all_fail_within_the_timeout(relay, backends):
    r = relay(http_config(backends(mode="hang"), backends(mode="garbage"), backends(mode="reset")))
    start = time.monotonic()
    resp = r.write(b"cpu v=1 1")
    assert resp.status == 503
    assert time.monotonic() - start < 4  # timeout = "2s"


def test_default_retention_policy_is_added_only_when_missing(relay, backends):
    a = backends()
    r = relay(http_config(a, listener_extra='default-retention-policy = "two weeks"'))
    assert r.write(b"cpu v=1 1").status == 204
    assert r.write(b"cpu v=1 1", query="db=test&rp=mine").status == 204
    eventually(lambda: len(a.requests) == 2)
    queries = sorted(req.query for req in a.requests)
    assert queries == ["db=test&rp=mine", "db=test&rp=two%20weeks"]


def test_body_over_the_limit_is_413(relay, backends):
    a = backends()
    r = relay(http_config(a, listener_extra="max-body-size = 1000"))
    resp = r.write(b"cpu v=1 1\n" * 200)
    assert resp.status == 413
    assert "too large" in error_of(resp)
    # Decoded size counts too: a small gzip that inflates past the limit.
    resp = r.write(b"cpu v=1 1\n" * 200, gzipped=True)
    assert resp.status == 413
    # Chunked upload without a length.
    resp = r.http.urlopen(
        "POST", r.url + "/write?db=test", body=iter([b"cpu v=1 1\n"] * 200), chunked=True
    )
    assert resp.status == 413
    gevent.sleep(0.1)
    assert a.requests == []
    assert r.write(b"cpu v=1 1").status == 204


def test_custom_endpoints_and_base_url(relay, backends):
    a = backends()
    out = '{ name = "v", location = "%s/prefix/", endpoints = { write = "/api/write" } }' % a.url
    r = relay(http_config(out))
    assert r.write(b"cpu v=1 1").status == 204
    assert eventually(lambda: a.requests)[0].path == "/prefix/api/write"


def test_stalled_client_is_let_go(relay, backends):
    r = relay(http_config(backends(), listener_extra='read-timeout = "500ms"'))
    port = int(r.url.rsplit(":", 1)[1])
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /write?db=test HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\ncpu v=")
    s.settimeout(5)
    start = time.monotonic()
    data = s.recv(65536)
    while data and b"\r\n\r\n" not in data:
        data += s.recv(65536)
    assert time.monotonic() - start < 3
    # Either an explicit 408 or a closed connection: never held forever.
    assert data == b"" or data.startswith(b"HTTP/1.1 408")
    s.close()
    assert r.write(b"cpu v=1 1").status == 204


def test_stopping_waits_for_requests_in_flight_but_not_for_idle_connections(relay, backends):
    a = backends(mode=("slow", 0.5, 204))
    r = relay(http_config(a))
    port = int(r.url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port))
    idle.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(65536).startswith(b"HTTP/1.1 204")  # and the connection stays open
    writer = gevent.spawn(r.write, b"cpu v=1 1")
    gevent.sleep(0.1)  # the write is now waiting on the slow backend
    start = time.monotonic()
    r.relay.stop(timeout=5)
    took = time.monotonic() - start
    assert writer.get(timeout=5).status == 204
    assert took < 2  # not the 5 s an idle keep-alive connection would have held it
    idle.settimeout(2)
    assert idle.recv(65536) == b""  # closed by the relay
    idle.close()
