"""Concurrent small writes merged into fewer backend requests: each client keeps its own answer."""

import gevent

from .conftest import body_json, error_of, eventually, http_config

SLOW = ("slow", 0.3, 204)


def output(i, backend, extra="", coalesce=True, timeout="2s"):
    extra = (", coalesce = true" if coalesce else ", coalesce = false") + extra
    return '{ name = "b%d", location = "%s/write", timeout = "%s"%s }' % (
        i, backend.url, timeout, extra)


def point(i, tag="c"):
    return b"cpu,client=%s v=%di %d" % (tag.encode(), i, 1000 + i)


def status(r):
    return body_json(r.get("/status"))["outputs"]


def concurrently(r, bodies, query="db=test", busy=2):
    """``busy`` writes first, to take the backend's slot(s), then ``bodies`` all at once;
    returns the responses of ``bodies``, in order."""
    first = [gevent.spawn(r.write, point(900 + i, "first"), query) for i in range(busy)]
    gevent.sleep(0.1)  # the first writes are in flight at the backend
    rest = [gevent.spawn(r.write, body, q) for body, q in bodies]
    gevent.joinall(first + rest, raise_error=True)
    for g in first:
        assert g.value.status == 204
    return [g.value for g in rest]


def test_concurrent_small_writes_go_as_fewer_requests(relay, backends):
    a = backends(mode=SLOW)
    r = relay(http_config(output(0, a)))
    responses = concurrently(r, [(point(i), "db=test") for i in range(10)])
    assert [resp.status for resp in responses] == [204] * 10
    # the two first alone, the ten others merged
    assert len(a.requests) < 12
    assert sorted(a.lines) == sorted([point(i) for i in range(10)] +
                                     [point(900 + i, "first") for i in range(2)])
    s = status(r)["b0"]
    assert s["coalesced_requests"] >= 1 and s["coalesced_writes"] >= 2


def test_a_bad_write_merged_with_good_ones_fails_alone(relay, backends):
    refusal = b'{"error":"partial write: field type conflict"}'

    def answer(request):
        return ("slow", 0.3, 400, refusal) if b"BAD" in request.body else SLOW

    a = backends(mode=answer)
    r = relay(http_config(output(0, a)))
    bodies = [point(i) for i in range(8)]
    bodies[3] = b"cpu,client=BAD v=\"text\" 1003"
    responses = concurrently(r, [(b, "db=test") for b in bodies])
    assert responses[3].status == 400
    assert responses[3].data == refusal  # the backend's own answer, to the right client
    assert [resp.status for i, resp in enumerate(responses) if i != 3] == [204] * 7
    # The merged request was refused, then each write went again alone: every good
    # line is in a request the backend took.
    taken = [line for req in a.requests if b"BAD" not in req.body
             for line in req.body.split(b"\n") if line]
    assert set(bodies) - {bodies[3]} <= set(taken)
    assert status(r)["b0"]["coalesced_split"] >= 1


def test_a_failed_merged_request_is_buffered_per_write(relay, backends):
    a, b = backends(), backends(mode=("slow", 0.3, 500))
    buffered = ', buffer-size-mb = 1, max-delay-interval = "200ms"'
    r = relay(http_config(output(0, a, buffered), output(1, b, buffered)))
    bodies = [point(i) for i in range(8)]
    responses = concurrently(r, [(body, "db=test") for body in bodies])
    assert [resp.status for resp in responses] == [204] * 8  # a took them
    eventually(lambda: status(r)["b1"]["buffered_writes"] == 10)  # each write, for b
    assert len(b.requests) < 10  # b failed them merged
    b.mode = ("status", 204, b"")
    eventually(lambda: status(r)["b1"]["buffered_writes"] == 0)
    # every write reached b once it came back (after its failed attempts)
    assert set(bodies) <= set(b.lines)


def test_a_failed_merged_request_fails_each_client_when_no_backend_takes_it(relay, backends):
    a = backends(mode=("slow", 0.3, 500))
    r = relay(http_config(output(0, a)))
    first = [gevent.spawn(r.write, point(900 + i)) for i in range(2)]
    gevent.sleep(0.1)
    rest = [gevent.spawn(r.write, point(i)) for i in range(6)]
    gevent.joinall(first + rest, raise_error=True)
    assert [g.value.status for g in first + rest] == [503] * 8
    assert len(a.requests) < 8


def test_writes_with_different_queries_are_never_merged(relay, backends):
    a = backends(mode=SLOW)
    r = relay(http_config(output(0, a)))
    writes = []
    for i in range(12):
        db = "db%d" % (i % 3)
        writes.append((point(i, db), "db=" + db))
    responses = concurrently(r, writes, query="db=db0")
    assert [resp.status for resp in responses] == [204] * 12
    assert len(a.requests) < 14
    for req in a.requests:
        db = req.query.split("=")[1]
        assert all(b"client=" + db.encode() in line or b"client=first" in line
                   for line in req.body.split(b"\n"))
    assert sorted(a.lines) == sorted([w[0] for w in writes] +
                                     [point(900 + i, "first") for i in range(2)])


def test_each_clients_writes_arrive_in_its_order(relay, backends):
    a = backends(mode=("slow", 0.02, 204))
    r = relay(http_config(output(0, a)))

    def client(name):
        for i in range(15):
            assert r.write(point(i, name)).status == 204

    gevent.joinall([gevent.spawn(client, "c%d" % n) for n in range(6)], raise_error=True)
    assert len(a.requests) < 90  # some were merged
    for n in range(6):
        mine = [line for line in a.lines if b"client=c%d " % n in line]
        assert mine == [point(i, "c%d" % n) for i in range(15)]


def test_merged_requests_stay_under_coalesce_max_kb(relay, backends):
    a = backends(mode=SLOW)
    r = relay(http_config(output(0, a, ", coalesce-max-kb = 1")))
    big = [b"cpu,client=c,pad=%s v=%di %d" % (b"x" * 400, i, 1000 + i) for i in range(10)]
    huge = b"cpu,client=huge,pad=%s v=1i 1" % (b"y" * 2000)
    responses = concurrently(r, [(body, "db=test") for body in big + [huge]])
    assert [resp.status for resp in responses] == [204] * 11
    assert all(len(req.body) <= 1024 for req in a.requests if b"huge" not in req.body)
    assert [req.body for req in a.requests if b"huge" in req.body] == [huge]  # alone
    assert any(req.body.count(b"\n") >= 1 for req in a.requests)  # some merged
    assert sorted(a.lines) == sorted(big + [huge] + [point(900 + i, "first") for i in range(2)])


def test_coalescing_is_off_by_default(relay, backends):
    a = backends(mode=SLOW)
    r = relay(http_config(output(0, a, coalesce=False)))
    responses = concurrently(r, [(point(i), "db=test") for i in range(8)])
    assert [resp.status for resp in responses] == [204] * 8
    assert len(a.requests) == 10
    assert "coalesced_requests" not in status(r)["b0"]


def test_writes_waiting_behind_a_stuck_backend_fail_within_twice_the_timeout(relay, backends):
    a = backends(mode="hang")
    r = relay(http_config(output(0, a, timeout="1s")))
    first = [gevent.spawn(r.write, point(900 + i)) for i in range(2)]
    gevent.sleep(0.1)
    rest = [gevent.spawn(r.write, point(i)) for i in range(5)]
    # The waiting ones go, merged, when the first ones time out, and that
    # request has the timeout too: at most twice the timeout in all.
    with gevent.Timeout(3):
        gevent.joinall(first + rest, raise_error=True)
    for g in first + rest:
        assert g.value.status == 503
        assert "no answer within 1s" in error_of(g.value)
    assert len(a.requests) < 7  # not one each


def test_prometheus_writes_are_never_merged(relay, backends):
    a = backends(mode=SLOW)
    r = relay(http_config(output(0, a)))
    headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "snappy"}

    def prom(i):
        return r.http.request("POST", r.url + "/api/v1/prom/write?db=prom",
                              body=b"\x00protobuf%d" % i, headers=headers)

    greenlets = [gevent.spawn(prom, i) for i in range(6)]
    gevent.joinall(greenlets, raise_error=True)
    assert [g.value.status for g in greenlets] == [204] * 6
    sent = sorted(b"\x00protobuf%d" % i for i in range(6))
    assert sorted(req.body for req in a.requests) == sent  # one request each
