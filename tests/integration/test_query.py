"""/query, /api/v2/query and /api/v1/prom/read through the relay (query-enabled),
against fake backends: which backend answers, failover, fallback, refusals,
what passes through, and answers streamed as they come."""

import gzip
import json
import logging
import socket
import struct
from urllib.parse import parse_qsl, urlencode

import pytest
import urllib3
from gevent.event import Event
from gevent.server import StreamServer

from .conftest import body_json, error_of, eventually, http_config, point

ROWS = b'{"results":[{"statement_id":0,"series":[{"name":"m","columns":["time","v"],' \
       b'"values":[[1,1]]}]}]}\n'
ON = "query-enabled = true\nhealth-cache-ms = 0"


def answers(code=200, body=ROWS, headers=None, ping=204, write=204):
    """A fake backend's mode: pings and writes answered ``ping`` and ``write``,
    queries ``code`` with ``body``."""
    def mode(q):
        if q.path.endswith("/ping"):
            return ("status", ping, b"")
        if q.path.endswith("/write"):
            return ("status", write, b"")
        return ("status", code, body, headers or {})
    return mode


def queries(backend):
    return [q for q in backend.requests if not q.path.endswith(("/ping", "/write"))]


def outputs(*backends, extra=""):
    """Inline output tables named a, b, c... (timeout 2s), ``extra`` in each."""
    return ['{ name = "%s", location = "%s/", timeout = "2s"%s }'
            % ("abcdefgh"[i], b.url, ", " + extra if extra else "") for i, b in enumerate(backends)]


def query(r, q="SELECT * FROM m", params="db=test", method="GET", **kwargs):
    url = r.url + "/query?" + params
    if q is not None and method == "GET":
        url += "&" + urlencode({"q": q})
    return r.http.request(method, url, **kwargs)


# -- which backend -----------------------------------------------------------------

def test_first_ready_output_answers_and_says_so(relay, backends):
    a, b = backends(mode=answers()), backends(mode=answers(body=b"from b"))
    r = relay(http_config(*outputs(a, b), listener_extra=ON))
    resp = query(r)
    assert resp.status == 200 and resp.data == ROWS
    assert resp.headers["X-Relay-Backend"] == "a"
    assert resp.headers["Content-Type"] == "application/json"
    assert "X-Relay-Stale" not in resp.headers
    assert len(queries(a)) == 1 and queries(b) == []


def test_query_order_chooses_the_first(relay, backends):
    a, b, c = (backends(mode=answers(body=n)) for n in (b"a", b"b", b"c"))
    r = relay(http_config(*outputs(a, b, c), listener_extra=ON + '\nquery-order = ["c"]'))
    assert query(r).data == b"c"
    c.stop()  # refused: the next in order is a (not named, config order)
    resp = query(r)
    assert (resp.data, resp.headers["X-Relay-Backend"]) == (b"a", "a")


def test_disabled_by_default_query_is_404(relay, backends):
    a = backends(mode=answers())
    r = relay(http_config(*outputs(a)))
    for path in ("/query?q=SHOW+DATABASES", "/api/v2/query", "/api/v1/prom/read"):
        resp = r.http.request("POST" if "api" in path else "GET", r.url + path)
        assert resp.status == 404, path
    assert queries(a) == []


def test_methods(relay, backends):
    a = backends(mode=answers())
    r = relay(http_config(*outputs(a), listener_extra=ON))
    resp = r.http.request("PUT", r.url + "/query?q=SHOW+DATABASES")
    assert resp.status == 405 and resp.headers["Allow"] == "GET, POST"
    resp = r.http.request("GET", r.url + "/api/v1/prom/read")
    assert resp.status == 405 and resp.headers["Allow"] == "POST"
    resp = r.http.request("GET", r.url + "/api/v2/query")
    assert resp.status == 405 and body_json(resp)["code"] == "method not allowed"
    assert queries(a) == []


# -- failover ----------------------------------------------------------------------

def test_a_refused_connection_fails_over_to_the_next_ready_output(relay, backends):
    a, b = backends(mode=answers(body=b"a")), backends(mode=answers(body=b"b"))
    # Pings cached a minute: a still counts as ready when it goes away.
    r = relay(http_config(*outputs(a, b), listener_extra="query-enabled = true\n"
                                                          "health-cache-ms = 60000"))
    assert query(r).data == b"a"
    a.stop()
    resp = query(r)
    assert resp.status == 200 and resp.data == b"b" and resp.headers["X-Relay-Backend"] == "b"


def test_a_5xx_fails_over_a_4xx_is_the_answer(relay, backends):
    a = backends(mode=answers(500, b'{"error":"boom"}'))
    b = backends(mode=answers(body=b"b"))
    r = relay(http_config(*outputs(a, b), listener_extra=ON))
    resp = query(r)
    assert (resp.status, resp.data, resp.headers["X-Relay-Backend"]) == (200, b"b", "b")
    assert len(queries(a)) == 1
    a.mode = answers(400, b'{"error":"error parsing query: found EOF"}',
                     headers={"X-Influxdb-Error": "error parsing query: found EOF"})
    resp = query(r)
    assert resp.status == 400 and error_of(resp) == "error parsing query: found EOF"
    assert resp.headers["X-Influxdb-Error"] == "error parsing query: found EOF"
    assert resp.headers["X-Relay-Backend"] == "a"
    assert len(queries(b)) == 1  # not asked again


def test_when_every_output_fails_the_last_5xx_is_the_answer(relay, backends):
    a = backends(mode=answers(503, b'{"error":"a is busy"}'))
    b = backends(mode=answers(500, b'{"error":"b broke"}'))
    r = relay(http_config(*outputs(a, b), listener_extra=ON))
    resp = query(r)
    assert (resp.status, error_of(resp), resp.headers["X-Relay-Backend"]) == (500, "b broke", "b")
    a.stop()
    b.stop()
    resp = query(r)
    assert resp.status == 503
    assert error_of(resp).startswith("no output is up to answer queries: a: ")


def test_a_backend_that_does_not_answer_in_time_is_not_asked_twice(relay, backends):
    a = backends(mode=lambda q: ("status", 204, b"") if q.path == "/ping" else "hang")
    b = backends(mode=answers())
    outs = ['{ name = "a", location = "%s/", timeout = "300ms" }' % a.url] + outputs(b)[1:]
    r = relay(http_config(*outs, listener_extra=ON))
    resp = query(r)
    assert resp.status == 504 and "no answer within" in error_of(resp)
    assert queries(b) == []


# -- readiness -----------------------------------------------------------------------

def test_down_lagging_and_gap_outputs_are_passed_over(relay, backends):
    a, b, c = (backends(mode=answers(body=n)) for n in (b"a", b"b", b"c"))
    outs = outputs(a, b, extra='buffer-size-mb = 1, max-delay-interval = "200ms"') + outputs(a, b, c)[2:]
    r = relay(http_config(*outs, listener_extra=ON))
    a.mode = answers(body=b"a", ping=500)  # down
    b.mode = answers(body=b"b", write=500)  # its writes wait in its buffer: lagging
    assert r.write(point(1)).status == 204  # c took it
    eventually(lambda: body_json(r.get("/health/b"))["status"] == "lagging")
    resp = query(r)
    assert (resp.data, resp.headers["X-Relay-Backend"]) == (b"c", "c")
    assert queries(a) == [] and queries(b) == []


def test_gap_output_passed_over(relay, backends):
    a, b = backends(mode=answers(body=b"a", write=500)), backends(mode=answers(body=b"b"))
    r = relay(http_config(*outputs(a, b), listener_extra=ON))  # no buffers: a misses the write
    assert r.write(point(1)).status == 204
    eventually(lambda: body_json(r.get("/health/a"))["status"] == "gap")
    assert query(r).data == b"b"


def lagging_pair(relay, backends, listener_extra):
    """Outputs a and b with retry buffers, and c, which takes every write but is
    down for queries (its pings fail): a relay where a lags by two writes and b by one."""
    a, b = backends(mode=answers(body=b"a", write=500)), backends(mode=answers(body=b"b"))
    c = backends(mode=answers(body=b"c", ping=500))
    buffers = 'buffer-size-mb = 1, max-delay-interval = "200ms"'
    r = relay(http_config(*outputs(a, b, extra=buffers) + outputs(a, b, c)[2:],
                          listener_extra=listener_extra))
    assert r.write(point(1)).status == 204
    assert r.write(point(2)).status == 204
    b.mode = answers(body=b"b", write=500)
    assert r.write(point(3)).status == 204
    return r, (a, b, c)


def test_least_lagging_fallback_says_why_it_may_be_stale(relay, backends):
    r, (a, b, c) = lagging_pair(relay, backends, ON)
    resp = query(r)  # b holds less
    assert (resp.status, resp.data, resp.headers["X-Relay-Backend"]) == (200, b"b", "b")
    assert resp.headers["X-Relay-Stale"].startswith("b: lagging: 1 write(s)")
    assert queries(a) == [] and queries(c) == []
    b.mode = answers(500)  # and if b fails, a is next
    resp = query(r)
    assert (resp.data, resp.headers["X-Relay-Backend"]) == (b"a", "a")
    assert resp.headers["X-Relay-Stale"].startswith("a: lagging: 3 write(s)")


def test_refuse_fallback_answers_503(relay, backends):
    r, (a, b, c) = lagging_pair(relay, backends, ON + '\nquery-fallback = "refuse"')
    resp = query(r)
    assert resp.status == 503
    message = error_of(resp)
    assert message.startswith("no output is ready to answer queries")
    assert "b: lagging" in message and "a: lagging" in message
    assert queries(a) == queries(b) == queries(c) == []


# -- what is refused -----------------------------------------------------------------

@pytest.mark.parametrize("q", [
    "DROP DATABASE test",
    "  create\tdatabase x",
    "SELECT * FROM m; delete FROM m",
    "SELECT * INTO copy FROM m",
    "SELECT v FROM m /* a comment */ ;\n-- another\n  Alter RETENTION POLICY p ON d DEFAULT",
    "SHOW DATABASES; GRANT ALL TO bob",
    "KILL QUERY 3",
    "SET PASSWORD FOR bob = 'x'",
])
def test_statements_that_change_data_are_refused_naming_admin(relay, backends, q):
    a = backends(mode=answers())
    r = relay(http_config(*outputs(a), listener_extra=ON))
    for resp in (query(r, q), query(r, None, method="POST", body=urlencode(
            {"q": q}), headers={"Content-Type": "application/x-www-form-urlencoded"})):
        assert resp.status == 400
        assert "/admin" in error_of(resp) and "changes data or schema" in error_of(resp)
    assert queries(a) == []


def test_reads_that_look_like_writes_go_through(relay, backends):
    a = backends(mode=answers())
    r = relay(http_config(*outputs(a), listener_extra=ON))
    for q in ('SELECT "into", "drop" FROM m', "SELECT * FROM m WHERE t = '; DROP DATABASE x'",
              "SHOW TAG VALUES WITH KEY = \"into\"", "SELECT * FROM m -- then DROP it"):
        assert query(r, q).status == 200, q
    assert len(queries(a)) == 4


# -- what passes through -------------------------------------------------------------

def test_parameters_and_credentials_pass_through(relay, backends):
    a = backends(mode=answers())
    r = relay(http_config(*outputs(a), listener_extra=ON))
    params = ("db=test&rp=week&epoch=ms&chunked=true&chunk_size=100&pretty=true&u=bob&p=pw"
              "&params=%7B%22h%22%3A%22x%22%7D")
    resp = query(r, "SELECT * FROM m WHERE h = $h", params=params,
                 headers={"Authorization": "Basic Ym9iOnB3", "Accept": "application/csv"})
    assert resp.status == 200
    (got,) = queries(a)
    assert got.method == "GET" and got.path == "/query"
    assert dict(parse_qsl(got.query)) == {
        "db": "test", "rp": "week", "epoch": "ms", "chunked": "true", "chunk_size": "100",
        "pretty": "true", "u": "bob", "p": "pw", "params": '{"h":"x"}',
        "q": "SELECT * FROM m WHERE h = $h"}
    assert got.headers["authorization"] == "Basic Ym9iOnB3"
    assert got.headers["accept"] == "application/csv"


def test_q_in_a_form_body_wins_and_only_the_checked_q_is_sent(relay, backends):
    a = backends(mode=answers())
    r = relay(http_config(*outputs(a), listener_extra=ON))
    resp = r.http.request("POST", r.url + "/query?db=test&q=DROP+DATABASE+test",
                          body="q=SHOW+DATABASES&chunked=true",
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status == 200
    (got,) = queries(a)
    assert got.method == "POST" and parse_qsl(got.query) == [("db", "test")]
    assert parse_qsl(got.body.decode()) == [("chunked", "true"), ("q", "SHOW DATABASES")]
    resp = r.http.request("POST", r.url + "/query?db=test", body=b"--x\r\n",
                          headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert resp.status == 415
    assert query(r, "  ").status == 400
    assert error_of(query(r, None, params="db=x")) == 'missing required parameter "q"'


def test_gzip_asked_by_the_client_passes_both_ways(relay, backends):
    a = backends(mode=answers(body=gzip.compress(ROWS), headers={"Content-Encoding": "gzip"}))
    r = relay(http_config(*outputs(a), listener_extra=ON))
    resp = query(r, headers={"Accept-Encoding": "gzip"}, decode_content=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(resp.data) == ROWS
    assert queries(a)[0].headers["accept-encoding"] == "gzip"


# -- streaming -----------------------------------------------------------------------

class ChunkedBackend(object):
    """Answers pings 204 and each query with a chunked answer: ``parts``, then
    the last chunk, or, with ``reset``, a connection reset instead. It waits for
    ``go`` after the first part (5 s at most)."""

    def __init__(self, parts, reset=False):
        self.parts, self.reset = parts, reset
        self.go = Event()
        self.gone = Event()  # set when the relay closed the connection of an answer
        self.heads = []
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()
        self.url = "http://127.0.0.1:%d" % self.server.server_port

    def handle(self, conn, address):
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, _, data = data.partition(b"\r\n\r\n")
                self.heads.append(head)
                if head.startswith(b"GET /ping"):
                    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
                    continue
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
                try:
                    for i, part in enumerate(self.parts):
                        conn.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                        if i == 0:
                            self.go.wait(5)
                except OSError:
                    self.gone.set()
                    return
                if self.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                conn.sendall(b"0\r\n\r\n")
        finally:
            conn.close()

    def stop(self):
        self.server.stop(timeout=0)


@pytest.fixture
def chunked():
    made = []

    def make(*args, **kwargs):
        b = ChunkedBackend(*args, **kwargs)
        made.append(b)
        return b
    yield make
    for b in made:
        b.stop()


def test_the_answer_streams_as_the_backend_sends_it(relay, chunked):
    parts = [b'{"results":[{"statement_id":0,"partial":true}]}\n', b'{"results":[{"x":1}]}\n']
    a = chunked(parts)
    r = relay(http_config(*outputs(a), listener_extra=ON))
    resp = query(r, params="db=test&chunked=true", preload_content=False)
    assert resp.status == 200 and resp.headers["Transfer-Encoding"] == "chunked"
    # The first part reaches the client while the backend holds back the rest.
    assert resp.read(len(parts[0])) == parts[0]
    a.go.set()
    assert resp.read() == parts[1]
    resp.release_conn()


def test_a_backend_failing_mid_answer_breaks_the_clients_answer(relay, chunked, caplog):
    first = b'{"results":[{"statement_id":0,"partial":true}]}\n'
    a = chunked([first, b"more"], reset=True)
    r = relay(http_config(*outputs(a), listener_extra=ON))
    with caplog.at_level(logging.ERROR, logger="influx_relay.query"):
        resp = query(r, params="db=test&chunked=true", preload_content=False)
        assert resp.status == 200
        assert resp.read(len(first)) == first  # the client has it: no failover now
        a.go.set()
        # The answer does not end as if it were whole: the client sees it broke.
        with pytest.raises(urllib3.exceptions.ProtocolError):
            while resp.read(1024):
                pass
        eventually(lambda: any("broke after" in m for m in caplog.messages))
    assert any(m.startswith("output a: a query's answer broke after") for m in caplog.messages)


def test_a_client_that_goes_away_lets_go_of_the_backend(relay, chunked):
    # The backend's rest is more than the sockets between it and the relay hold:
    # sending it fails once the relay closed its connection.
    a = chunked([b'{"results":[{"statement_id":0,"partial":true}]}\n'] + [b"x" * 65536] * 200)
    r = relay(http_config(*outputs(a), listener_extra=ON))
    resp = query(r, params="db=test&chunked=true", preload_content=False)
    assert resp.read(10) == b'{"results"'
    resp.connection.sock.shutdown(socket.SHUT_RDWR)  # the client leaves in mid-answer
    a.go.set()
    assert a.gone.wait(5), "the relay kept reading an answer nobody wanted"


def test_a_backend_that_resets_before_its_first_byte_fails_over(relay, backends):
    a = backends(mode=lambda q: ("status", 204, b"") if q.path == "/ping" else "reset")
    b = backends(mode=answers(body=b"b"))
    r = relay(http_config(*outputs(a, b), listener_extra=ON))
    resp = query(r)
    assert (resp.status, resp.data) == (200, b"b")


def test_the_backend_gets_the_clients_accept_encoding_only(relay, chunked):
    a = chunked([b"x"])
    a.go.set()
    r = relay(http_config(*outputs(a), listener_extra=ON))
    assert query(r, headers={"Accept-Encoding": "gzip"}).status == 200
    head = [h for h in a.heads if h.startswith(b"GET /query")][0].lower()
    assert head.count(b"accept-encoding") == 1 and b"accept-encoding: gzip" in head


# -- InfluxDB 2.x and Prometheus ------------------------------------------------------

def test_v2_query_goes_to_v2_outputs_only(relay, backends):
    one = backends(mode=answers(body=b"v1"))
    two = backends(mode=answers(body=b"_result,table\n"))
    r = relay(http_config(
        '{ name = "one", location = "%s/", timeout = "2s" }' % one.url,
        '{ name = "two", location = "%s/", api = "v2", org = "acme", timeout = "2s" }' % two.url,
        listener_extra=ON))
    flux = json.dumps({"query": 'from(bucket: "b") |> range(start: -1h)', "type": "flux"})
    resp = r.http.request("POST", r.url + "/api/v2/query", body=flux,
                          headers={"Content-Type": "application/json",
                                   "Authorization": "Token t"})
    assert resp.status == 200 and resp.data == b"_result,table\n"
    assert resp.headers["X-Relay-Backend"] == "two"
    (got,) = queries(two)
    assert (got.path, got.query, got.body) == ("/api/v2/query", "org=acme", flux.encode())
    assert got.headers["content-type"] == "application/json"
    assert queries(one) == []
    # A 1.x query may go to either: the first ready one.
    assert query(r).data == b"v1"


@pytest.mark.parametrize("body, ctype", [
    (json.dumps({"query": 'from(bucket: "b") |> to(bucket: "c")'}), "application/json"),
    ('import "experimental"\nfrom(bucket: "b") |> experimental.to(bucket: "c")',
     "application/vnd.flux"),
    (json.dumps({"Query": "ok", "query": 'x = "${to(bucket: "c")}"'}), "application/json"),
    (json.dumps({"query": "DROP DATABASE x", "type": "influxql"}), "application/json"),
    (json.dumps({"query": "from(bucket: \"b\")", "extern": {
        "type": "File", "body": [{"type": "ExpressionStatement", "expression": {
            "type": "Identifier", "name": "to"}}]}}), "application/json"),
])
def test_v2_queries_that_write_are_refused(relay, backends, body, ctype):
    two = backends(mode=answers())
    r = relay(http_config('{ name = "two", location = "%s/", api = "v2" }' % two.url,
                          listener_extra=ON))
    resp = r.http.request("POST", r.url + "/api/v2/query", body=body,
                          headers={"Content-Type": ctype})
    assert resp.status == 400
    err = body_json(resp)
    assert err["code"] == "invalid" and "/admin" in err["message"]
    assert queries(two) == []


def test_v2_query_without_v2_outputs_or_with_a_bad_body(relay, backends):
    one = backends(mode=answers())
    r = relay(http_config(*outputs(one), listener_extra=ON))
    resp = r.http.request("POST", r.url + "/api/v2/query", body=b"{}")
    assert resp.status == 404 and 'api = "v2"' in body_json(resp)["message"]
    two = backends(mode=answers())
    r = relay(http_config('{ name = "two", location = "%s/", api = "v2" }' % two.url,
                          listener_extra=ON))
    resp = r.http.request("POST", r.url + "/api/v2/query", body=b"{not json")
    assert resp.status == 400 and body_json(resp)["code"] == "invalid"


def test_prometheus_remote_read_goes_to_read_prom_as_it_came(relay, backends):
    answer_headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}
    a = backends(mode=answers(500, b"down"))
    b = backends(mode=answers(body=b"\x00proto", headers=answer_headers))
    r = relay(http_config(*outputs(a, b, extra='endpoints = { read_prom = "/pr" }'),
                          listener_extra=ON))
    body = b"\xff\x00snappy-protobuf"
    resp = r.http.request("POST", r.url + "/api/v1/prom/read?db=prom&u=x&p=y", body=body,
                          headers={"Content-Type": "application/x-protobuf",
                                   "Content-Encoding": "snappy",
                                   "X-Prometheus-Remote-Read-Version": "0.1.0"})
    assert resp.status == 200 and resp.data == b"\x00proto"
    assert resp.headers["Content-Encoding"] == "snappy"
    assert resp.headers["X-Relay-Backend"] == "b"
    for backend in (a, b):
        (got,) = queries(backend)
        assert (got.path, got.query, got.body) == ("/pr", "db=prom&u=x&p=y", body)
        assert got.headers["content-encoding"] == "snappy"
        assert got.headers["x-prometheus-remote-read-version"] == "0.1.0"
