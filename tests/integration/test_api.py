"""veepee's endpoints and keys against scripted fake backends: /ping, rate limits,
/health, /admin, Prometheus remote write, [[filter]] and per-output credentials."""

import base64
import json
import time
from urllib.parse import parse_qs

import gevent
import pytest

from influx_relay import __version__, lineprotocol

from .conftest import body_json, error_of, eventually, http_config
from .fakes import FakeBackend


def out(i, backend, extra=""):
    return '{ name = "b%d", location = "%s/", timeout = "2s"%s }' % (i, backend.url, extra)


# ---------------------------------------------------------------------------
# /ping and rate limits

def test_ping_answers_the_configured_status(relay, backends):
    a = backends()
    r = relay(http_config(a))
    assert r.get("/ping").status == 204
    r2 = relay(http_config(a, listener_extra="default-ping-response = 200"))
    resp = r2.get("/ping")
    assert resp.status == 200 and resp.data == b""
    assert resp.headers["X-Influxdb-Version"].startswith("relay-")
    verbose = r2.get("/ping?verbose=true")
    assert verbose.status == 200 and "version" in body_json(verbose)


def test_writes_over_the_rate_get_429_with_retry_after(relay, backends):
    a = backends()
    r = relay(http_config(a, listener_extra="rate-limit = 0.5\nburst-limit = 2"))
    statuses = [r.write(b"cpu v=%d 1" % i) for i in range(3)]
    assert [s.status for s in statuses] == [204, 204, 429]
    refused = statuses[2]
    assert error_of(refused) == "rate limit exceeded"
    assert refused.headers["Content-Type"] == "application/json"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    gevent.sleep(0.2)
    assert len(a.bodies) == 2  # the refused write went nowhere
    # Only writes are limited.
    assert r.get("/ping").status == 204
    assert r.get("/status").status == 200


def test_status_says_the_version_and_which_line_scanner_runs(relay, backends):
    r = relay(http_config(out(0, backends())))
    body = body_json(r.get("/status"))
    assert body["version"] == __version__
    assert body["line_scanner"] == lineprotocol.IMPLEMENTATION
    assert body["line_scanner"] in ("c", "python")


def test_without_a_rate_limit_nothing_is_refused(relay, backends):
    a = backends()
    r = relay(http_config(a))
    assert {r.write(b"cpu v=1 1").status for _ in range(50)} == {204}


# ---------------------------------------------------------------------------
# /health

def health(r):
    resp = r.get("/health")
    return resp.status, json.loads(resp.data)


def test_health_when_every_backend_answers(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(out(0, a), out(1, b)))
    status, body = health(r)
    assert status == 200
    assert body["status"] == "healthy" and body["problem"] == {}
    assert set(body["healthy"]) == {"b0", "b1"}
    assert all(v.startswith("OK. Time taken ") and v.endswith("ms")
               for v in body["healthy"].values())
    assert [(q.method, q.path) for q in a.requests] == [("GET", "/ping")]


def test_health_with_one_backend_down_is_a_problem(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(http_config(out(0, a), out(1, b)))
    status, body = health(r)
    assert status == 200
    assert body["status"] == "problem"
    assert list(body["healthy"]) == ["b0"]
    assert body["problem"]["b1"].startswith("KO. connection failed")


def test_health_with_every_backend_failing_is_critical(relay, backends):
    a, b = backends(mode=("status", 500, b"")), backends()
    b.stop()
    r = relay(http_config(out(0, a), out(1, b)))
    status, body = health(r)
    assert status == 503
    assert body["status"] == "critical" and body["healthy"] == {}
    assert body["problem"]["b0"] == "KO. HTTP 500 from /ping"


def test_health_waits_at_most_health_timeout_ms(relay, backends):
    a, b = backends(), backends(mode="hang")
    r = relay(http_config(out(0, a), out(1, b), listener_extra="health-timeout-ms = 300"))
    start = time.monotonic()
    status, body = health(r)
    assert time.monotonic() - start < 1.5
    assert status == 200 and body["status"] == "problem"
    assert body["problem"]["b1"] == "KO. no answer within 0.3s"


def test_health_uses_each_outputs_ping_endpoint(relay, backends):
    a = backends()
    r = relay(http_config(
        '{ name = "a", location = "%s/influx", endpoints = { ping = "/health-check" } }' % a.url))
    assert health(r)[0] == 200
    assert a.requests[0].path == "/influx/health-check"


# ---------------------------------------------------------------------------
# /admin and /admin/flush

ADMIN = "admin-enabled = true"


def admin(r, body=None, query="", headers=None, method="POST"):
    headers = dict(headers or {})
    if body is not None:
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
    return r.http.request(method, r.url + "/admin" + ("?" + query if query else ""),
                          body=body, headers=headers)


def test_admin_is_off_unless_enabled(relay, backends):
    a = backends()
    r = relay(http_config(a))
    for path in ("/admin", "/admin/flush"):
        resp = r.http.request("POST", r.url + path, body=b"q=DROP DATABASE x")
        assert resp.status == 404 and error_of(resp) == "not found"
    assert a.requests == []


def test_admin_sends_the_query_to_every_backend_with_the_clients_credentials(relay, backends):
    a, b = backends(mode=("status", 200, b'{"results":[{"statement_id":0}]}')), backends()
    r = relay(http_config(out(0, a), out(1, b), listener_extra=ADMIN))
    resp = admin(r, body=b"q=CREATE+DATABASE+%22x%22&db=ignored", query="u=joe&p=pw&pretty=true",
                 headers={"Authorization": "Token abc"})
    assert resp.status == 200
    assert resp.data == b'{"results":[{"statement_id":0}]}'
    assert resp.headers["X-Relay-Backends"] == "b0=200, b1=204"
    for backend in (a, b):
        (req,) = backend.requests
        assert (req.method, req.path) == ("POST", "/query")
        assert parse_qs(req.query) == {"db": ["ignored"], "u": ["joe"], "p": ["pw"],
                                       "pretty": ["true"]}
        assert parse_qs(req.body.decode()) == {"q": ['CREATE DATABASE "x"']}
        assert req.headers["authorization"] == "Token abc"
        assert req.headers["content-type"] == "application/x-www-form-urlencoded"


def test_admin_takes_q_from_the_query_string(relay, backends):
    a = backends()
    r = relay(http_config(a, listener_extra=ADMIN))
    assert admin(r, query="q=SHOW+DATABASES").status == 204
    assert parse_qs(a.requests[0].body.decode()) == {"q": ["SHOW DATABASES"]}


def test_admin_result_rules(relay, backends):
    a, b = backends(mode=("status", 500, b"")), backends(mode=("status", 200, b"{}"))
    r = relay(http_config(out(0, a), out(1, b), listener_extra=ADMIN))
    # One success is enough.
    assert admin(r, query="q=x").status == 200
    # No success: the first 4xx, as the backend sent it.
    b.mode = ("status", 401, b'{"error":"authorization failed"}')
    resp = admin(r, query="q=x")
    assert resp.status == 401 and error_of(resp) == "authorization failed"
    assert resp.headers["X-Relay-Backends"] == "b0=500, b1=401"
    # Every backend failed: 503.
    b.stop()
    resp = admin(r, query="q=x")
    assert resp.status == 503
    assert error_of(resp) == "unable to run the query: every backend failed"
    assert resp.headers["X-Relay-Backends"] == "b0=500, b1=failed"


def test_admin_failures_are_logged_without_the_query(relay, backends, caplog):
    a, b = backends(mode=("status", 400, b'{"error":"found hunter2"}')), backends()
    b.stop()
    r = relay(http_config(out(0, a), out(1, b), listener_extra=ADMIN))
    resp = admin(r, body=b"q=CREATE+USER+x+WITH+PASSWORD+hunter2")
    assert resp.status == 400
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert "admin query to b0 failed: HTTP 400" in logged
    assert "admin query to b1 failed: connection failed" in logged
    assert "hunter2" not in logged


def test_admin_request_errors(relay, backends):
    a = backends()
    r = relay(http_config(a, listener_extra=ADMIN))
    resp = admin(r, body=b"db=x")
    assert resp.status == 400 and error_of(resp) == 'missing required parameter "q"'
    resp = admin(r, method="GET", query="q=SHOW+DATABASES")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    resp = admin(r, body=b"SHOW DATABASES", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert a.requests == []


def test_admin_token(relay, backends):
    a, b = backends(), backends()
    b.stop()
    r = relay(http_config(out(0, a), out(1, b, ', buffer-size-mb = 1'),
                          listener_extra=ADMIN + '\nadmin-token = "s3cret"'))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Token s3cret"}):
        for path in ("/admin?q=SHOW+DATABASES", "/admin/flush"):
            resp = r.http.request("POST", r.url + path, headers=headers)
            assert resp.status == 401, (headers, path)
            assert error_of(resp) == "authorization failed"
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert a.requests == []
    good = {"Authorization": "Bearer s3cret"}
    resp = admin(r, query="q=SHOW+DATABASES&u=joe&p=pw", headers=good)
    assert resp.status == 204
    (req,) = a.requests
    assert "authorization" not in req.headers  # our token is not InfluxDB's
    assert parse_qs(req.query) == {"u": ["joe"], "p": ["pw"]}
    resp = r.http.request("POST", r.url + "/admin/flush", headers=good)
    assert resp.status == 200 and json.loads(resp.data)["flushed"]["b1"]["writes"] == 0


# ---------------------------------------------------------------------------
# Prometheus remote write

SNAPPY = bytes(range(256)) + b"\n\x00\xff not line protocol"
PROM_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
    "Authorization": "Basic am9lOnB3",
}


def prom(r, body=SNAPPY, query="db=prom", headers=PROM_HEADERS):
    return r.http.request("POST", r.url + "/api/v1/prom/write?" + query, body=body,
                          headers=headers)


def test_prom_write_is_passed_through_as_is(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(out(0, a), '{ name = "b1", location = "%s/", '
                          'endpoints = { write_prom = "/receive" } }' % b.url))
    assert prom(r, query="db=prom&rp=week").status == 204
    eventually(lambda: a.requests and b.requests)
    for backend, path in ((a, "/api/v1/prom/write"), (b, "/receive")):
        (req,) = backend.requests
        assert (req.method, req.path, req.query) == ("POST", path, "db=prom&rp=week")
        assert req.body == SNAPPY
        assert req.headers["content-encoding"] == "snappy"
        assert req.headers["content-type"] == "application/x-protobuf"
        assert req.headers["x-prometheus-remote-write-version"] == "0.1.0"
        assert req.headers["authorization"] == "Basic am9lOnB3"


def test_prom_write_response_rules(relay, backends):
    a, b = backends(mode=("status", 500, b"")), backends()
    r = relay(http_config(out(0, a), out(1, b)))
    assert prom(r).status == 204
    b.mode = ("status", 400, b'{"error":"bad snappy"}')
    resp = prom(r)
    assert resp.status == 400 and error_of(resp) == "bad snappy"
    b.mode = ("status", 503, b"")
    assert prom(r).status == 503


def test_prom_write_obeys_max_body_size_and_the_rate_limit(relay, backends):
    a = backends()
    limits = "max-body-size = 100\nrate-limit = 0.1\nburst-limit = 2"
    r = relay(http_config(a, listener_extra=limits))
    assert prom(r, body=b"x" * 101).status == 413
    assert prom(r, body=b"x" * 100).status == 204
    assert prom(r, body=b"x" * 100).status == 429


def test_buffered_prom_writes_are_replayed_one_by_one_in_order(relay, backends):
    a, b = backends(), backends()
    b.stop()
    buffered = ', buffer-size-mb = 1, max-delay-interval = "200ms"'
    r = relay(http_config(out(0, a, buffered), out(1, b, buffered)))
    bodies = [SNAPPY + bytes([i]) for i in range(5)]
    for body in bodies:
        assert prom(r, body=body).status == 204
    assert r.write(b"cpu v=1 1").status == 204
    b.start()
    eventually(lambda: len(b.requests) >= 6, timeout=10)
    assert [q.body for q in b.requests] == bodies + [b"cpu v=1 1"]
    assert [q.path for q in b.requests] == ["/api/v1/prom/write"] * 5 + ["/write"]
    assert all(q.headers["content-encoding"] == "snappy" for q in b.requests[:5])


# ---------------------------------------------------------------------------
# [[filter]]

MIXED = (
    b"cpu,host=a v=1 1\n"
    b"mem,host=a free=2i\n"            # no timestamp: stamped before filtering
    b"cpu,host=b,dc=x v=3 3\n"
    b"disk,host=a used=4i 4\n"
    b'cpu,host=c msg="a b\nc" 5'
)


def filtered(a, b, *filters):
    text = http_config(out(0, a), out(1, b))
    for f in filters:
        text += "[[filter]]\n%s\n" % f
    return text


def test_filters_pick_points_per_output(relay, backends):
    a, b = backends(), backends()
    r = relay(filtered(a, b, 'measurement-expression = "^(cpu|mem)$"\noutputs = ["b1"]',
                       'tag-expression = "^host$"\noutputs = ["b1"]'))
    assert r.write(MIXED).status == 204
    eventually(lambda: a.lines and b.lines)
    (all_lines,) = a.bodies
    stamped = all_lines.split(b"\n")[1]
    assert stamped.startswith(b"mem,host=a free=2i ")
    assert b.bodies == [b"cpu,host=a v=1 1\n" + stamped + b'\ncpu,host=c msg="a b\nc" 5']


def test_an_output_that_takes_nothing_is_not_sent_anything(relay, backends):
    a, b = backends(), backends()
    r = relay(filtered(a, b, 'measurement-expression = "^nothing$"\noutputs = ["b0"]'))
    assert r.write(MIXED).status == 204
    eventually(lambda: b.bodies)
    gevent.sleep(0.1)
    assert a.requests == []
    # When the only output that takes the points fails, the client hears it.
    b.mode = ("status", 500, b"")
    assert r.write(MIXED).status == 503
    # And when nobody takes anything, there is nothing to write.
    r2 = relay(filtered(a, b, 'measurement-expression = "^nothing$"\noutputs = ["b0", "b1"]'))
    n = len(b.requests)
    assert r2.write(MIXED).status == 204
    gevent.sleep(0.1)
    assert a.requests == [] and len(b.requests) == n


def test_a_filtered_output_buffers_only_its_points(relay, backends):
    a, b = backends(), backends()
    b.stop()
    buffered = ', buffer-size-mb = 1, max-delay-interval = "200ms"'
    text = http_config(out(0, a, buffered), out(1, b, buffered))
    text += '[[filter]]\nmeasurement-expression = "^disk$"\noutputs = ["b1"]\n'
    r = relay(text)
    assert r.write(MIXED).status == 204
    assert r.write(b"cpu v=1 9").status == 204  # nothing for b1: not buffered
    status = body_json(r.get("/status"))["outputs"]["b1"]
    assert status["buffered_writes"] == 1
    b.start()
    eventually(lambda: b.bodies, timeout=5)
    assert b.bodies == [b"disk,host=a used=4i 4"]


# ---------------------------------------------------------------------------
# Per-output credentials

def test_output_credentials_replace_the_clients(relay, backends):
    a, b, c = backends(), backends(), backends()
    r = relay(http_config(
        out(0, a, ', username = "relay", password = "p\u00e4ss"'),
        out(1, b, ', token = "tok"'),
        out(2, c),
    ))
    query = "db=test&u=joe&p=secret&precision=ns&p=again"
    resp = r.write(b"cpu v=1 1", query=query, headers={"Authorization": "Token client"})
    assert resp.status == 204
    eventually(lambda: a.requests and b.requests and c.requests)
    basic = "Basic " + base64.b64encode("relay:p\u00e4ss".encode()).decode()
    assert a.requests[0].headers["authorization"] == basic
    assert b.requests[0].headers["authorization"] == "Token tok"
    assert a.requests[0].query == b.requests[0].query == "db=test&precision=ns"
    # An output without credentials of its own gets the client's.
    assert c.requests[0].headers["authorization"] == "Token client"
    assert c.requests[0].query == query


def test_output_credentials_apply_to_health_admin_and_prom(relay, backends):
    a = backends()
    r = relay(http_config(out(0, a, ', token = "tok"'), listener_extra=ADMIN))
    assert r.get("/health").status == 200
    assert admin(r, query="q=SHOW+DATABASES&u=joe&p=pw").status == 204
    assert prom(r).status == 204
    assert [q.headers["authorization"] for q in a.requests] == ["Token tok"] * 3
    assert parse_qs(a.requests[1].query) == {}


# ---------------------------------------------------------------------------
# TLS: ca-file and skip-tls-verification

@pytest.fixture
def tls_backend(pki):
    backend = FakeBackend(tls=pki[1])
    backend.start()
    yield backend
    backend.stop()


def test_ca_file_trusts_a_private_ca(relay, backends, pki, tls_backend):
    plain = backends()
    r = relay(http_config(out(0, plain), out(1, tls_backend, ', ca-file = "%s"' % pki[0]),
                          listener_extra=ADMIN))
    assert r.write(b"cpu v=1 1").status == 204
    eventually(lambda: tls_backend.bodies)
    assert tls_backend.bodies == [b"cpu v=1 1"]
    status, body = health(r)
    assert body["status"] == "healthy"
    assert admin(r, query="q=SHOW+DATABASES").headers["X-Relay-Backends"] == "b0=204, b1=204"


def test_an_unknown_ca_is_refused_everywhere(relay, backends, tls_backend):
    plain = backends()
    r = relay(http_config(out(0, plain), out(1, tls_backend)))
    assert r.write(b"cpu v=1 1").status == 204  # plain took it
    status, body = health(r)
    assert body["status"] == "problem"
    assert "CERTIFICATE_VERIFY_FAILED" in body["problem"]["b1"]
    assert tls_backend.requests == []


def test_skip_tls_verification_applies_to_every_request(relay, backends, tls_backend, caplog):
    r = relay(http_config(out(0, tls_backend, ", skip-tls-verification = true"),
                          listener_extra=ADMIN))
    assert any("skip-tls-verification is set" in rec.getMessage() for rec in caplog.records)
    assert r.write(b"cpu v=1 1").status == 204
    assert health(r)[0] == 200
    assert admin(r, query="q=SHOW+DATABASES").status == 204
    assert [q.path for q in tls_backend.requests] == ["/write", "/ping", "/query"]
