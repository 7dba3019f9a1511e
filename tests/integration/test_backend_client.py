"""The lean keep-alive client that posts writes to plain-HTTP backends.

Each test runs a scripted server that answers with the exact bytes given, and
checks what the backend's post() returns: the answers an InfluxDB (or a proxy
in front of one) may give, kept-alive connections it closed, broken answers.
"""

import gevent
import pytest
from gevent.server import StreamServer

from influx_relay.backend import HTTPBackend
from influx_relay.config import Endpoints, HTTPOutputConfig
from influx_relay.errors import BackendError

from .fakes import Scripted, post


@pytest.fixture
def scripted():
    made = []

    def make(*answers, **kwargs):
        s = Scripted(answers, **kwargs)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_answers_are_read_whole_and_the_connection_is_kept(scripted):
    s = scripted(
        b"HTTP/1.1 204 No Content\r\nX-Influxdb-Version: 1.8\r\n\r\n",
        b'HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n'
        b'{"error":"bad"}\n\n',
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
        b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    )
    b = s.backend()
    assert post(b)[:3] == (204, b"", "")
    assert post(b)[:3] == (400, b'{"error":"bad"}\n\n', "application/json")
    assert post(b)[:3] == (500, b"hello world", "text/plain")
    assert post(b).status == 204
    assert s.connections == 1
    head, body = s.requests[0]
    assert head.startswith(b"POST /write?db=x HTTP/1.1\r\n")
    assert body == b"cpu v=1 1"


def test_an_answer_ended_by_closing_the_connection(scripted):
    s = scripted(b"HTTP/1.0 503 Busy\r\nContent-Type: text/plain\r\n\r\nlater", close_after=True)
    b = s.backend()
    assert post(b)[:3] == (503, b"later", "text/plain")
    assert post(b).status == 204  # on a new connection
    assert s.connections == 2


def test_a_kept_alive_connection_the_server_closed_is_replaced(scripted):
    s = scripted(b"HTTP/1.1 204 No Content\r\n\r\n", close_after=True)
    b = s.backend()
    assert post(b).status == 204
    gevent.sleep(0.05)
    assert post(b).status == 204
    assert s.connections == 2
    assert len(s.requests) == 2


def test_large_bodies_and_credentials(scripted):
    s = scripted()
    b = s.backend(username="relay", password="pw")
    body = b"cpu v=1 1\n" * 50000
    assert post(b, body, query="db=x&u=client&p=secret", headers={"Authorization": "Basic x"}).status == 204
    head, got = s.requests[0]
    assert got == body
    assert b"u=client" not in head and b"secret" not in head
    assert b"Authorization: Basic cmVsYXk6cHc=" in head
    assert b"Basic x" not in head


def test_unsafe_characters_in_the_query_are_escaped(scripted):
    s = scripted()
    post(s.backend(), query="db=a b\xe9")
    assert s.requests[0][0].startswith(b"POST /write?db=a%20b%E9 HTTP/1.1\r\n")


def test_broken_answers_are_backend_errors(scripted):
    s = scripted(b"SSH-2.0-OpenSSH\r\n\r\n", None,
                 b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", close_after=True)
    b = s.backend()
    for _ in range(3):
        with pytest.raises(BackendError):
            post(b)


def test_refused_and_hanging(scripted):
    s = scripted()
    b = s.backend()
    s.stop()
    with pytest.raises(BackendError, match="connection failed"):
        post(b)
    hang = Scripted([])
    hang.handle = lambda conn, address: gevent.sleep(10)
    hang.server = StreamServer(("127.0.0.1", 0), hang.handle)
    hang.server.start()
    try:
        with pytest.raises(BackendError, match="no answer within 0.2s"):
            post(hang.backend(timeout=0.2))
    finally:
        hang.stop()


def test_an_ip_address_is_connected_to_without_the_resolver(scripted, monkeypatch):
    """gevent resolves host names in a thread pool: an IP address skips it (and a
    refused connection is then known at once), a host name still goes through it."""
    import gevent.socket

    asked = []
    real = gevent.socket.getaddrinfo

    def counting(*args, **kwargs):
        asked.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(gevent.socket, "getaddrinfo", counting)
    s = scripted()
    assert post(s.backend()).status == 204
    assert asked == []
    port = s.server.address[1]
    named = HTTPBackend(HTTPOutputConfig(name="n", location="http://localhost:%d" % port, scheme="http",
                                   host="localhost", port=port, endpoints=Endpoints()))
    assert post(named).status == 204
    assert asked == ["localhost"]


@pytest.mark.parametrize("value", ["Token abc\rX-Injected: yes", "Token abc\r\nX-Injected: yes",
                                   "Token abc\nX-Injected: yes", "Token a\x00b"])
def test_a_header_that_would_not_go_out_as_one_is_never_sent(scripted, value):
    """Whatever reaches the client (a client header, a config token), a value
    with a CR, LF or NUL is refused before any byte goes to the backend."""
    s = scripted()
    with pytest.raises(BackendError, match="control character"):
        post(s.backend(), headers={"Authorization": value})
    assert s.requests == []
