"""The HTTPS listener (ssl-combined-pem) of the real relay process, with real TLS
clients; and the warning that skip-tls-verification logs at start.

(Backend certificate checks, ca-file and skip-tls-verification per request are
in tests/integration/test_api.py.)
"""

import contextlib
import http.client
import signal
import socket
import ssl
import subprocess
import time

import pytest

from .helpers import HOST, Relay, free_port, wait_until


@pytest.fixture(scope="module")
def pem(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and its key, in one PEM file."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=influx-relay test",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, cwd=str(d))
    combined = d / "combined.pem"
    combined.write_bytes((d / "cert.pem").read_bytes() + (d / "key.pem").read_bytes())
    return combined, d / "cert.pem"


@contextlib.contextmanager
def https_relay(directory, combined_pem, extra=""):
    """A relay serving HTTPS with ``combined_pem``, whose one output always
    answers 204; it must stop cleanly (exit 0, no traceback)."""
    backend = _NoContent()
    port = free_port()
    config = ('[[http]]\nname = "tls"\nbind-addr = "%s:%d"\nssl-combined-pem = "%s"\n%s'
              'output = [ { name = "a", location = "http://%s:%d/write" } ]\n'
              % (HOST, port, combined_pem, extra, HOST, backend.port))
    relay = Relay(directory, config, port).start(wait_http=False)
    try:
        yield relay
        stderr = relay.stderr()
    finally:
        status = relay.stop()
        backend.close()
    assert "Traceback" not in stderr, stderr[-3000:]
    assert status == 0


@pytest.fixture(scope="module")
def tls_relay(tmp_path_factory, pem):
    """A relay serving HTTPS (read-timeout 1s) whose one output always answers 204."""
    with https_relay(tmp_path_factory.mktemp("tls-relay"), pem[0],
                     'read-timeout = "1s"\n') as relay:
        wait_until(lambda: https(relay.port, pem[1], "GET", "/ping")[0] == 204, 15,
                   what="the relay answering /ping over TLS")
        yield relay


class _NoContent:
    """A backend that answers every request 204 (a thread, raw sockets)."""

    def __init__(self):
        import threading
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.bodies = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        f = conn.makefile("rb")
        try:
            while True:
                length = None
                line = f.readline()
                if not line:
                    return
                while True:
                    h = f.readline()
                    if h in (b"\r\n", b""):
                        break
                    if h.lower().startswith(b"content-length:"):
                        length = int(h.split(b":")[1])
                self.bodies.append(f.read(length or 0))
                conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        except OSError:
            return
        finally:
            conn.close()

    def close(self):
        self.sock.close()


def client_context(cafile, minimum=None, maximum=None):
    ctx = ssl.create_default_context(cafile=str(cafile))
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx


def https(port, cafile, method, path, body=None, context=None):
    ctx = context or client_context(cafile)
    conn = http.client.HTTPSConnection(HOST, port, context=ctx, timeout=5)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, resp.read(), conn.sock.version()
    finally:
        conn.close()


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_12_and_13_clients_write(tls_relay, pem, version):
    ctx = client_context(pem[1], minimum=version, maximum=version)
    status, _, negotiated = https(tls_relay.port, pem[1], "POST", "/write?db=x",
                                  b"cpu v=1 1", context=ctx)
    assert status == 204
    assert negotiated == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_10_and_11_are_refused_by_the_relay(tls_relay, pem, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        # Let this client offer the old versions at all (OpenSSL 3 hides them).
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.minimum_version = version
        ctx.maximum_version = version
    except (ValueError, ssl.SSLError) as e:
        pytest.skip("this OpenSSL cannot offer %s: %s" % (version.name, e))
    with socket.create_connection((HOST, tls_relay.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError) as refused:
            ctx.wrap_socket(raw, server_hostname=HOST)
    if "NO_PROTOCOLS_AVAILABLE" in str(refused.value) or "NO_CIPHERS" in str(refused.value):
        pytest.skip("this OpenSSL will not offer %s: %s" % (version.name, refused.value))
    # The relay's alert: it does not speak that version.
    assert "PROTOCOL_VERSION" in str(refused.value) or "UNSUPPORTED_PROTOCOL" in str(refused.value)


def test_a_plain_http_client_on_the_tls_port_fails_cleanly(tls_relay, pem):
    with socket.create_connection((HOST, tls_relay.port), timeout=5) as s:
        s.sendall(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\ncpu v=1 1")
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    # No HTTP answer (at most a TLS alert), and the connection is closed.
    assert not data.startswith(b"HTTP")
    assert https(tls_relay.port, pem[1], "GET", "/ping")[0] == 204


def test_a_client_that_never_starts_its_handshake_is_let_go(tls_relay, pem):
    with socket.create_connection((HOST, tls_relay.port), timeout=10) as s:
        started = time.monotonic()
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        took = time.monotonic() - started
    assert data == b""
    assert took < 5  # read-timeout is 1s
    assert https(tls_relay.port, pem[1], "GET", "/ping")[0] == 204


def test_skip_tls_verification_logs_a_warning_at_start(tmp_path):
    port = free_port()
    config = ('[[http]]\nname = "t"\nbind-addr = "%s:%d"\n'
              'output = [ { name = "insecure", location = "https://%s:%d/write", '
              'skip-tls-verification = true } ]\n' % (HOST, port, HOST, free_port()))
    relay = Relay(tmp_path, config, port).start()
    try:
        stderr = relay.stderr()
    finally:
        assert relay.stop() == 0
    warnings = [line for line in stderr.splitlines() if "skip-tls-verification" in line]
    assert len(warnings) == 1
    assert "WARNING" in warnings[0] and "insecure" in warnings[0]


def _self_signed(d, name):
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", "%s.key" % name, "-out", "%s.crt" % name, "-subj", "/CN=%s" % name,
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, cwd=str(d))
    return (d / ("%s.crt" % name)).read_bytes() + (d / ("%s.key" % name)).read_bytes()


def _served_subject(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((HOST, port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    text = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"],
                          input=der, capture_output=True, check=True).stdout.decode()
    return text.strip()


def test_sighup_reads_a_certificate_renewed_at_the_same_path(tmp_path):
    """A renewal tool (certbot, say) replaces the PEM in place and reloads: new
    connections get the new certificate, with no restart and no lost write."""
    combined = tmp_path / "relay.pem"
    combined.write_bytes(_self_signed(tmp_path, "first-cert"))
    with https_relay(tmp_path / "relay", combined) as relay:
        port = relay.port
        wait_until(lambda: _served_subject(port), 15, what="the relay serving TLS")
        assert "first-cert" in _served_subject(port)
        combined.write_bytes(_self_signed(tmp_path, "renewed-cert"))
        relay.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "certificate read again" in relay.stderr(), 10,
                   what="the reload log line")
        assert "renewed-cert" in _served_subject(port)

        # A renewal that left a broken file: the reload is refused, the old
        # certificate stays in use.
        combined.write_bytes(b"not a certificate\n")
        relay.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in relay.stderr(), 10, what="the rejection")
        assert "is not a certificate and its private key in PEM" in relay.stderr()
        assert "renewed-cert" in _served_subject(port)
