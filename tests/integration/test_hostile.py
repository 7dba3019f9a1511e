"""Hostile and odd input against scripted fake backends, where the bytes each
backend receives can be checked exactly: redirects from a backend, odd query
strings, NUL bytes and invalid UTF-8 in lines. (Abuse of the HTTP server
itself, and memory, are in tests/system/test_hostile.py, against the real
process.)"""

import base64
import socket

import gevent
import pytest

from .conftest import body_json, error_of, eventually, http_config


def redirecting(backends, code, target):
    # With a JSON body, as a proxy might send: still never passed to the client.
    return backends(mode=("status", code, b'{"error":"moved"}',
                          {"Location": target.url + "/write?db=stolen"}))


# ---------------------------------------------------------------------------
# A backend that answers with a redirect


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_is_a_failure(relay, backends, code):
    elsewhere = backends()
    r = relay(http_config(redirecting(backends, code, elsewhere)))
    auth = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    resp = r.write(b"cpu v=1 1", query="db=test&u=alice&p=s3cret", headers={"Authorization": auth})
    # The only backend did not take the write: the client must retry, as for a 5xx.
    assert resp.status == 503
    assert "Location" not in resp.headers
    assert "unable to write points" in error_of(resp)
    gevent.sleep(0.2)
    # Nothing (and no credential) went where the redirect pointed.
    assert elsewhere.requests == []


def test_a_redirecting_backend_does_not_spoil_the_write_for_the_others(relay, backends):
    elsewhere, good = backends(), backends()
    r = relay(http_config(redirecting(backends, 307, elsewhere), good))
    for _ in range(5):
        resp = r.write(b"cpu v=1 1", query="db=test&p=s3cret")
        assert resp.status == 204
    assert eventually(lambda: len(good.bodies) == 5)
    assert elsewhere.requests == []


def test_a_redirected_write_is_buffered_and_delivered_once_the_backend_is_fixed(relay, backends):
    elsewhere, good = backends(), backends()
    moved = redirecting(backends, 308, elsewhere)
    outputs = ['{ name = "b%d", location = "%s/write", timeout = "1s", buffer-size-mb = 1, '
               'max-delay-interval = "200ms" }' % (i, b.url) for i, b in enumerate((moved, good))]
    r = relay(http_config(*outputs))
    assert r.write(b"cpu v=1 1").status == 204
    status = body_json(r.get("/status"))["outputs"]["b0"]
    assert status["buffered_writes"] == 1  # kept, not dropped as a rejection
    moved.mode = ("status", 204, b"")
    # The write it redirected, then the same write again from the buffer.
    assert eventually(lambda: len(moved.bodies) == 2, timeout=5)
    assert moved.bodies == [b"cpu v=1 1", b"cpu v=1 1"]
    assert eventually(lambda: body_json(r.get("/status"))["outputs"]["b0"]["buffered_writes"] == 0)
    assert elsewhere.requests == []


# ---------------------------------------------------------------------------
# Odd query strings: checked as InfluxDB would (first value wins), forwarded as sent


@pytest.mark.parametrize("query", [
    "db=a&db=b",
    "db=a&precision=s&precision=zz",
    "=&&db=a&=1&&x",
    "db=%00%FF&rp=%00",
    "db=a&u=&p=",
    "db=a&" + "pad=x&" * 300,  # a long one that still fits a request line (8 KB)
])
def test_odd_query_strings_are_forwarded_as_sent(relay, backends, query):
    a = backends()
    r = relay(http_config(a))
    resp = r.write(b"cpu v=1 1", query=query)
    assert resp.status == 204
    assert eventually(lambda: a.requests)[0].query == query


def test_broken_percent_escapes_pass_through_as_sent(relay, backends):
    """A '%' that starts no valid escape reaches the backend as the client
    sent it (neither decoded nor escaped again): InfluxDB reads what it would
    have read without the relay."""
    a = backends()
    r = relay(http_config(a))
    port = int(r.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /write?db=a&%zz=%z&%=% HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: 9\r\nConnection: close\r\n\r\ncpu v=1 1")
        assert s.recv(65536).startswith(b"HTTP/1.1 204")
    assert eventually(lambda: a.requests)[0].query == "db=a&%zz=%z&%=%"


def test_the_first_precision_is_the_one_stamped_even_when_blank(relay, backends):
    """InfluxDB reads the first value of a repeated parameter, blank or not: a
    stamp in another precision than the one it reads would land decades away."""
    a = backends()
    r = relay(http_config(a))
    assert r.write(b"cpu v=1", query="db=a&precision=&precision=s").status == 204
    assert r.write(b"cpu v=2", query="db=a&precision=s&precision=").status == 204
    eventually(lambda: len(a.lines) == 2)
    stamps = [line.rsplit(b" ", 1)[1] for line in a.lines]
    assert [len(s) for s in stamps] == [19, 10]  # nanoseconds, then seconds


@pytest.mark.parametrize("query, error", [
    ("db=&db=a", "missing parameter: db"),        # the first db is the one InfluxDB reads
    ("x=1&&=", "missing parameter: db"),
    ("db=a&precision=%zz", 'invalid precision "%zz"'),
    ("db=a&precision=", None),                     # empty: the default, ns
])
def test_odd_query_strings_that_are_refused(relay, backends, query, error):
    a = backends()
    r = relay(http_config(a))
    resp = r.write(b"cpu v=1", query=query)
    if error is None:
        assert resp.status == 204
        return
    assert resp.status == 400
    assert error in error_of(resp)
    gevent.sleep(0.1)
    assert a.requests == []


# ---------------------------------------------------------------------------
# NUL bytes and invalid UTF-8: the relay splits bytes, it does not decode them


@pytest.mark.parametrize("line", [
    b"cpu,host=a\x00b v=1 1",
    b"cpu,host=\xff\xfe\xfd v=1 1",
    b'log msg="\x00\xc3\x28 half a character" 1',
    b"\xc0\xafcpu v=1 1",
    b"cpu \xff=1 1",
])
def test_nul_bytes_and_invalid_utf8_are_forwarded_byte_for_byte(relay, backends, line):
    a = backends()
    r = relay(http_config(a))
    assert r.write(line).status == 204
    assert r.write(line, gzipped=True).status == 204
    eventually(lambda: len(a.bodies) == 2)
    assert a.bodies == [line, line]


def test_a_bad_line_with_invalid_utf8_is_named_readably(relay, backends):
    a = backends()
    r = relay(http_config(a))
    resp = r.write(b"cpu v=1 1\n\xff\xfe\x00 broken")
    assert resp.status == 400
    message = error_of(resp)  # valid JSON, whatever the bytes were
    assert "line 2" in message
    assert a.requests == []


# ---------------------------------------------------------------------------
# https backends: a certificate from a trusted CA, but for another name


def test_a_trusted_certificate_for_another_host_name_is_refused(relay, backends, pki):
    """ca-file trusts the CA, not any name: the certificate is for 127.0.0.1,
    the output says localhost."""
    from .fakes import FakeBackend

    tls = FakeBackend(tls=pki[1])
    tls.start()
    try:
        plain = backends()
        wrong_name = '{ name = "b1", location = "https://localhost:%d/", timeout = "2s", ca-file = "%s" }' % (
            tls.port, pki[0])
        r = relay(http_config(plain, wrong_name))
        assert r.write(b"cpu v=1 1").status == 204  # plain took it
        gevent.sleep(0.3)
        assert tls.requests == []
        status = body_json(r.get("/health"))
        assert "b1" in status["problem"]
        problem = status["problem"]["b1"]
        # urllib3 2 says "Hostname mismatch", 1.26 (Debian 12's) "hostname ... doesn't match".
        assert "Hostname mismatch" in problem or "doesn't match" in problem
    finally:
        tls.stop()
