"""InfluxDB 2.x's write API in and out, against fake 1.x and 2.x backends."""

import gzip
import json
import time
from urllib.parse import parse_qs

import gevent

from .conftest import body_json, error_of, eventually, http_config


def v2_output(backend, name="v2", extra=""):
    return ('{ name = "%s", location = "%s/", api = "v2", timeout = "2s"%s }'
            % (name, backend.url, ", " + extra if extra else ""))


def v1_output(backend, name="v1", extra=""):
    return ('{ name = "%s", location = "%s/", timeout = "2s"%s }'
            % (name, backend.url, ", " + extra if extra else ""))


def write_v2(r, body, query="org=acme&bucket=telegraf", headers=None, gzipped=False,
             method="POST"):
    headers = dict(headers or {})
    if gzipped:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    return r.http.request(method, r.url + "/api/v2/write?" + query, body=body, headers=headers)


def v2_error(resp):
    assert resp.headers["Content-Type"].startswith("application/json")
    return json.loads(resp.data)


def only_request(backend):
    eventually(lambda: backend.requests)
    gevent.sleep(0.05)
    assert len(backend.requests) == 1, backend.requests
    return backend.requests[0]


# -- /api/v2/write in ------------------------------------------------------------

def test_v2_write_reaches_v1_and_v2_outputs_translated(relay, backends):
    one, two = backends(), backends()
    r = relay(http_config(v1_output(one), v2_output(two)))
    before = time.time_ns() // 1000
    resp = write_v2(r, b"cpu,host=a v=1 1600000000000000\ncpu,host=b v=2",
                    query="org=acme&bucket=telegraf/week&precision=us",
                    headers={"Authorization": "Token t0k"})
    after = time.time_ns() // 1000
    assert resp.status == 204 and resp.data == b""
    v1, v2 = only_request(one), only_request(two)
    assert (v1.path, v1.query) == ("/write", "db=telegraf&rp=week&precision=u")
    assert (v2.path, v2.query) == ("/api/v2/write", "org=acme&bucket=telegraf/week&precision=us")
    for req in (v1, v2):
        assert req.headers["authorization"] == "Token t0k"
        assert req.headers["content-type"] == "text/plain; charset=utf-8"
    # One body for both, stamped once, in the request's precision.
    assert v1.body == v2.body
    first, second = v1.body.split(b"\n")
    assert first == b"cpu,host=a v=1 1600000000000000"
    assert before <= int(second.rsplit(b" ", 1)[1]) <= after


def test_v2_write_default_precision_is_ns_and_gzip_is_decoded(relay, backends):
    one, two = backends(), backends()
    r = relay(http_config(v1_output(one), v2_output(two)))
    before = time.time_ns()
    assert write_v2(r, b"cpu v=1\n", gzipped=True).status == 204
    after = time.time_ns()
    v1, v2 = only_request(one), only_request(two)
    assert v1.query == "db=telegraf&precision=n"
    assert v2.query == "org=acme&bucket=telegraf"  # as the client sent it
    assert "content-encoding" not in v2.headers
    assert v1.body == v2.body
    assert before <= int(v2.body.rsplit(b" ", 1)[1]) <= after


def test_v2_output_org_bucket_and_token_replace_the_clients(relay, backends):
    two = backends()
    r = relay(http_config(v2_output(two, extra='org = "theirs", bucket = "all", token = "srv"')))
    resp = write_v2(r, b"cpu v=1 1", query="orgID=0123&org=mine&bucket=b&precision=s",
                    headers={"Authorization": "Token client"})
    assert resp.status == 204
    req = only_request(two)
    assert parse_qs(req.query) == {"org": ["theirs"], "bucket": ["all"], "precision": ["s"]}
    assert req.headers["authorization"] == "Token srv"


def test_v2_errors_are_in_v2_shape_and_nothing_is_forwarded(relay, backends):
    one, two = backends(), backends()
    r = relay(http_config(v1_output(one), v2_output(two), listener_extra="max-body-size = 1000"))
    cases = [
        (write_v2(r, b"cpu v=1", query="org=acme"), 400, "invalid", "missing parameter: bucket"),
        (write_v2(r, b"cpu v=1", query="org=acme&bucket="), 400, "invalid",
         "missing parameter: bucket"),
        (write_v2(r, b"cpu v=1", query="bucket=b&precision=n"), 400, "invalid",
         "invalid precision; valid precision units are ns, us, ms, and s"),
        (write_v2(r, b"cpu v=1", query="bucket=b&precision=h"), 400, "invalid",
         "invalid precision; valid precision units are ns, us, ms, and s"),
        (write_v2(r, b"cpu v=1", query="bucket=/rp"), 400, "invalid",
         'bucket "/rp" names no database before "/" for the InfluxDB 1.x outputs of this relay'),
        (write_v2(r, b"cpu v=1 1\n" * 200), 413, "request too large",
         "request body too large (limit 1000 bytes)"),
        (write_v2(r, b"not gzip", headers={"Content-Encoding": "gzip"}), 400, "invalid", None),
        (write_v2(r, b"cpu v=1 1\ncpu,host=a\n"), 400, "invalid", None),
        (write_v2(r, b"", method="GET"), 405, "method not allowed", "method not allowed: GET"),
    ]
    for resp, status, code, message in cases:
        assert resp.status == status, (resp.status, resp.data)
        err = v2_error(resp)
        assert err["code"] == code
        assert message is None or err["message"] == message, err
    assert "line 2" in v2_error(cases[-2][0])["message"]
    assert cases[-1][0].headers["Allow"] == "POST"
    resp = write_v2(r, b"", method="OPTIONS")
    assert resp.status == 204 and "POST" in resp.headers["Allow"]
    gevent.sleep(0.1)
    assert one.requests == [] and two.requests == []
    # An empty body is a no-op, as in InfluxDB.
    assert write_v2(r, b"\n# nothing\n").status == 204
    gevent.sleep(0.05)
    assert one.requests == [] and two.requests == []
    assert write_v2(r, b"cpu v=1 1").status == 204


def test_v2_bucket_without_db_is_fine_with_only_v2_outputs(relay, backends):
    two = backends()
    r = relay(http_config(v2_output(two)))
    assert write_v2(r, b"cpu v=1 1", query="org=o&bucket=/odd").status == 204
    assert only_request(two).query == "org=o&bucket=/odd"


def test_v2_client_gets_a_v1_backends_4xx_in_v2_shape(relay, backends):
    one = backends(mode=("status", 400, b'{"error":"partial write: field type conflict"}'))
    two = backends(mode="hang")
    r = relay(http_config(v1_output(one), v2_output(two)))
    resp = write_v2(r, b"cpu v=1 1")
    assert resp.status == 400
    assert v2_error(resp) == {"code": "invalid", "message": "partial write: field type conflict"}


def test_v2_backend_errors_pass_through_to_v2_clients(relay, backends):
    for status, body in [
        (401, b'{"code":"unauthorized","message":"unauthorized access"}'),
        (404, b'{"code":"not found","message":"bucket \\"nope\\" not found"}'),
        (413, b'{"code":"request too large","message":"too large"}'),
        (422, b'{"code":"unprocessable entity","message":"failure writing points"}'),
    ]:
        two = backends(mode=("status", status, body))
        r = relay(http_config(v2_output(two)))
        resp = write_v2(r, b"cpu v=1 1")
        assert (resp.status, resp.data) == (status, body)


def test_all_backends_failing_is_503_in_v2_shape(relay, backends):
    one, two = backends(mode=("status", 500, b"")), backends()
    two.stop()
    r = relay(http_config(v1_output(one), v2_output(two)))
    resp = write_v2(r, b"cpu v=1 1")
    assert resp.status == 503
    assert v2_error(resp) == {"code": "unavailable", "message": "unable to write points"}


# -- /write in, to 2.x outputs ---------------------------------------------------

def test_v1_write_reaches_a_v2_output_as_bucket_db_rp(relay, backends):
    one, two = backends(), backends()
    r = relay(http_config(v1_output(one), v2_output(two, extra='org = "acme"')))
    query = "db=telegraf&rp=week&precision=s&u=joe&p=s3cret&consistency=one"
    assert r.write(b"cpu v=1 1\ncpu v=2", query=query).status == 204
    v1, v2 = only_request(one), only_request(two)
    assert (v1.path, v1.query) == ("/write", query)  # unchanged for the 1.x backend
    assert "authorization" not in v1.headers
    assert (v2.path, v2.query) == ("/api/v2/write", "org=acme&bucket=telegraf/week&precision=s")
    assert v2.headers["authorization"] == "Token s3cret"  # the password is the 2.x token
    assert v1.body == v2.body


def test_v1_write_without_rp_goes_to_autogen_or_the_default_rp(relay, backends):
    two = backends()
    r = relay(http_config(v2_output(two, extra='org = "acme"')))
    assert r.write(b"cpu v=1 1", query="db=t&precision=n").status == 204
    assert only_request(two).query == "org=acme&bucket=t/autogen&precision=ns"
    two.requests.clear()
    r = relay(http_config(v2_output(two, extra='org = "acme"'),
                          listener_extra='default-retention-policy = "month"'))
    assert r.write(b"cpu v=1 1", query="db=t&precision=u").status == 204
    assert only_request(two).query == "org=acme&bucket=t/month&precision=us"


def test_v1_write_with_precision_us_is_nanoseconds_on_every_output(relay, backends):
    """InfluxDB 1.x reads /write?precision=us as nanoseconds: the relay stamps in
    nanoseconds, the 1.x output gets the request as sent, the 2.x output "ns"."""
    one, two = backends(), backends()
    r = relay(http_config(one, v2_output(two, extra='org = "acme"')))
    before = time.time_ns()
    assert r.write(b"cpu v=1\ncpu v=2 1700000000000000000", query="db=t&precision=us").status == 204
    after = time.time_ns()
    assert only_request(one).query == "db=t&precision=us"
    assert only_request(two).query == "org=acme&bucket=t/autogen&precision=ns"
    assert only_request(one).body == only_request(two).body
    stamped, kept = only_request(one).body.split(b"\n")
    assert kept == b"cpu v=2 1700000000000000000"
    assert before <= int(stamped.rsplit(b" ", 1)[1]) <= after


def test_v1_write_to_a_v2_output_with_fixed_bucket_and_token(relay, backends):
    two = backends()
    r = relay(http_config(v2_output(two, extra='org = "o", bucket = "fixed", token = "srv"')))
    resp = r.write(b"cpu v=1 1", query="db=t&rp=r&precision=ms",
                   headers={"Authorization": "Token client"})
    assert resp.status == 204
    req = only_request(two)
    assert req.query == "org=o&bucket=fixed&precision=ms"
    assert req.headers["authorization"] == "Token srv"


def test_v1_write_in_minutes_or_hours_is_refused_with_a_v2_output(relay, backends):
    one, two = backends(), backends()
    r = relay(http_config(v1_output(one), v2_output(two)))
    for precision in ("m", "h"):
        resp = r.write(b"cpu v=1 1", query="db=t&precision=" + precision)
        assert resp.status == 400
        assert error_of(resp) == ('precision "%s" cannot be written to the InfluxDB 2.x outputs '
                                  "of this relay (use n, u, ms or s)" % precision)
    gevent.sleep(0.1)
    assert one.requests == [] and two.requests == []


def test_v1_client_gets_a_v2_backends_4xx_in_v1_shape(relay, backends):
    two = backends(mode=("status", 422, b'{"code":"unprocessable entity","message":"bad point"}'))
    one = backends(mode="hang")
    r = relay(http_config(v1_output(one), v2_output(two)))
    resp = r.write(b"cpu v=1 1")
    assert resp.status == 422
    assert json.loads(resp.data) == {"error": "bad point"}


def test_ping_ready_and_build_header(relay, backends):
    r = relay(http_config(backends()))
    resp = r.get("/ping")
    assert resp.status == 204
    assert resp.headers["X-Influxdb-Build"] == "OSS"
    assert resp.headers["X-Influxdb-Version"]
    resp = r.get("/ready")
    assert resp.status == 200
    ready = body_json(resp)
    assert ready["status"] == "ready"
    assert ready["started"].endswith("Z") and ready["up"].endswith("s")
    assert r.http.request("POST", r.url + "/ready").status == 405


# -- buffering: each output's own request is kept and replayed -------------------

def buffered(output):
    return output[:-2] + ', buffer-size-mb = 1, max-delay-interval = "200ms" }'


def test_a_v2_output_that_comes_back_gets_translated_replays(relay, backends):
    one, two = backends(), backends()
    two.stop()
    r = relay(http_config(buffered(v1_output(one)),
                          buffered(v2_output(two, extra='org = "acme", token = "srv"'))))
    for i in range(3):
        assert r.write(b"cpu v=%d %d" % (i, i), query="db=t&rp=r&precision=s").status == 204
    assert write_v2(r, b"cpu v=3 3", query="org=x&bucket=t/r&precision=s").status == 204
    assert body_json(r.get("/status"))["outputs"]["v2"]["buffered_writes"] == 4
    # The retry loop tried (and failed) once already: its next try takes all four.
    eventually(lambda: body_json(r.get("/status"))["outputs"]["v2"]["retries"] >= 1)
    two.start()
    eventually(lambda: len(two.lines) == 4, timeout=10)
    assert two.lines == [b"cpu v=%d %d" % (i, i) for i in range(4)]
    for req in two.requests:
        assert req.path == "/api/v2/write"
        assert req.headers["authorization"] == "Token srv"
        assert parse_qs(req.query) == {"org": ["acme"], "bucket": ["t/r"], "precision": ["s"]}
    # The 1.x and 2.x writes became one request: same translated key, one batch.
    assert len(two.requests) == 1
    assert one.lines == two.lines


def test_a_v1_output_that_comes_back_gets_db_rp_replays(relay, backends):
    one, two = backends(), backends()
    one.stop()
    r = relay(http_config(buffered(v1_output(one)), buffered(v2_output(two))))
    for i in range(3):
        assert write_v2(r, b"cpu v=%d %d" % (i, i), query="org=o&bucket=d/r&precision=ms",
                        headers={"Authorization": "Token t"}).status == 204
    one.start()
    eventually(lambda: len(one.lines) == 3, timeout=10)
    assert one.lines == two.lines
    for req in one.requests:
        assert (req.path, req.query) == ("/write", "db=d&rp=r&precision=ms")
        assert req.headers["authorization"] == "Token t"


def test_a_422_is_returned_and_never_buffered(relay, backends):
    one = backends()
    two = backends(mode=("status", 422, b'{"code":"unprocessable entity","message":"no"}'))
    r = relay(http_config(buffered(v1_output(one)), buffered(v2_output(two))))
    one.mode = ("slow", 0.3, 204)  # the 422 comes first: it is the client's answer
    resp = write_v2(r, b"cpu v=1 1")
    assert resp.status == 422
    assert v2_error(resp)["message"] == "no"
    gevent.sleep(0.5)
    status = body_json(r.get("/status"))["outputs"]
    assert status["v2"]["buffered_writes"] == 0 and status["v1"]["buffered_writes"] == 0
    assert len(two.requests) == 1


TOO_MANY = b'{"code":"too many requests","message":"org exceeded its write rate"}'


def test_a_429_is_retried_from_the_buffer_not_dropped(relay, backends):
    one, two = backends(), backends(mode=("status", 429, TOO_MANY))
    r = relay(http_config(buffered(v1_output(one)), buffered(v2_output(two))))
    for i in range(3):
        assert write_v2(r, b"cpu v=%d %d" % (i, i)).status == 204
    eventually(lambda: body_json(r.get("/status"))["outputs"]["v2"]["retries"] >= 1)
    two.mode = ("status", 204, b"")

    def delivered():
        s = body_json(r.get("/status"))["outputs"]["v2"]
        return s["replayed_batches"] >= 1 and s["buffered_writes"] == 0 and s
    status = eventually(delivered, timeout=10)
    assert status["dropped_rejected"] == 0
    # Every request but the last was answered 429; the last carried the whole backlog.
    assert two.requests[-1].body.split(b"\n") == one.lines == [
        b"cpu v=%d %d" % (i, i) for i in range(3)]


def test_every_backend_answering_429_gives_the_client_the_429(relay, backends):
    one = backends(mode=("status", 429, TOO_MANY))
    r = relay(http_config(v2_output(one), v2_output(backends(mode=("status", 503, b"")), "b")))
    resp = write_v2(r, b"cpu v=1 1")
    assert resp.status == 429
    assert v2_error(resp)["code"] == "too many requests"
