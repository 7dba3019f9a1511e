"""In-process fixtures: the relay's real listeners on port 0, scripted fake backends.

Everything here runs on gevent in the test process, so the module patches the
standard library first, as ``influx-relay run`` does.
"""

from gevent import monkey

monkey.patch_all()

import gzip  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import subprocess  # noqa: E402

import gevent  # noqa: E402
import pytest  # noqa: E402
import urllib3  # noqa: E402

from influx_relay import config  # noqa: E402
from influx_relay.service import Relay  # noqa: E402

from .fakes import FakeBackend, UDPSink  # noqa: E402


@pytest.fixture
def backends():
    """Factory of fake backends, all stopped at teardown."""
    made = []

    def make(**kwargs):
        b = FakeBackend(**kwargs)
        b.start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def udp_sinks():
    made = []

    def make():
        s = UDPSink()
        s.start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


class RunningRelay(object):
    def __init__(self, relay):
        self.relay = relay
        self.http = urllib3.PoolManager(retries=False, timeout=10)

    @property
    def url(self):
        host, port = self.relay.http[0].address[:2]
        return "http://127.0.0.1:%d" % port

    @property
    def udp_address(self):
        return ("127.0.0.1", self.relay.udp[0].address[1])

    def write(self, body, query="db=test", headers=None, gzipped=False, method="POST"):
        headers = dict(headers or {})
        if gzipped:
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        return self.http.request(method, self.url + "/write?" + query, body=body, headers=headers)

    def get(self, path, **kwargs):
        return self.http.request("GET", self.url + path, **kwargs)


@pytest.fixture
def relay(tmp_path):
    """Factory: ``relay(toml_text)`` starts a relay from a config, stopped at teardown."""
    started = []

    def make(text):
        path = tmp_path / "relay.toml"
        path.write_text(text)
        r = Relay(config.load(str(path)))
        r.start()
        started.append(r)
        return RunningRelay(r)

    yield make
    for r in started:
        r.stop(timeout=1)


def http_config(*outputs, listener_extra=""):
    """A one-listener config on 127.0.0.1:0 writing to the given fake backends.

    Each output is a backend (named after its position) or a ``(name, location)``
    pair, or a raw inline-table string.
    """
    items = []
    for i, o in enumerate(outputs):
        if isinstance(o, str):
            items.append(o)
        elif isinstance(o, tuple):
            items.append('{ name = "%s", location = "%s", timeout = "2s" }' % o)
        else:
            items.append(
                '{ name = "b%d", location = "%s", timeout = "2s" }' % (i, o.url + "/write")
            )
    return '[[http]]\nname = "test"\nbind-addr = "127.0.0.1:0"\n%s\noutput = [\n  %s,\n]\n' % (
        listener_extra,
        ",\n  ".join(items),
    )


def error_of(response):
    return json.loads(response.data)["error"]


def eventually(predicate, timeout=5.0):
    """Wait (bounded) for ``predicate()`` to hold; return its last value."""
    with gevent.Timeout(timeout, False):
        while True:
            value = predicate()
            if value:
                return value
            gevent.sleep(0.01)
    return predicate()


def body_json(response):
    """A response's JSON body (urllib3 1.26, Debian 12's, has no ``.json()``)."""
    return json.loads(response.data)


def buffered(*backends, size_mb=1, extra="", listener_extra=""):
    outputs = [
        '{ name = "b%d", location = "%s/write", timeout = "1s", buffer-size-mb = %d, '
        'max-delay-interval = "200ms", max-batch-kb = 1%s }' % (i, b.url, size_mb, extra)
        for i, b in enumerate(backends)
    ]
    return http_config(*outputs, listener_extra=listener_extra)


def point(i):
    return b"cpu,host=h v=%di %d" % (i, 1000 + i)


def status(r):
    return body_json(r.get("/status"))["outputs"]


def udp_config(*sinks, mtu=1024, precision="n"):
    outputs = ",\n  ".join(
        '{ name = "s%d", location = "%s", mtu = %d }' % (i, s.location, mtu) for i, s in enumerate(sinks)
    )
    return (
        '[[udp]]\nname = "u"\nbind-addr = "127.0.0.1:0"\nprecision = "%s"\nread-buffer = 1048576\n'
        "output = [\n  %s,\n]\n" % (precision, outputs)
    )


def send(relay, *datagrams):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for d in datagrams:
        s.sendto(d, relay.udp_address)
    s.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    d = tmp_path_factory.mktemp("pki")

    def openssl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=str(d))

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=influx-relay test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(d / "server.pem"), str(d / "server.key"))
    return str(d / "ca.pem"), ctx
