"""Hostile and broken input against the real relay process, over real sockets.

One relay (read-timeout 1s, the default 25 MB body limit, a UDP listener) in
front of one real influxd serves the whole module; after every abuse a
well-behaved client writes a point and finds it in the database. At the end
the relay must have logged no traceback and no credential.

Each abuse is answered with a clear status, or closed, or (UDP) dropped and
counted, within a bounded time.
"""

import random
import resource
import select
import socket
import time
import zlib
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from influx_relay.errors import LineProtocolError
from influx_relay.lineprotocol import scan

from .helpers import HOST, Influxd, Relay, free_port, influxd_available, request, wait_until

LIMIT = 25 * 1024 * 1024  # the default max-body-size
MB = 1024 * 1024


class Target:
    """The module's influxd and relay, and a well-behaved client of theirs."""

    def __init__(self, influxd, relay, db, udp_port):
        self.influxd = influxd
        self.relay = relay
        self.db = db
        self.udp_port = udp_port
        self.healthy_writes = 0

    @property
    def port(self):
        return self.relay.port

    @property
    def pid(self):
        return self.relay.proc.pid

    def healthy(self, step):
        """A good write through the relay is answered 204 and lands in influxd."""
        assert self.relay.proc.poll() is None, "the relay died"
        self.healthy_writes += 1
        n = self.healthy_writes
        resp = self.relay.write("healthy,step=%s v=%di %d" % (step, n, 1_600_000_000_000_000_000 + n),
                                db=self.db, timeout=5)
        assert resp.status == 204, resp
        rows = self.influxd.rows(self.db, "healthy")
        assert {(r["step"], r["v"]) for r in rows} >= {(step, n)}

    def metrics(self):
        resp = request("GET", "%s/metrics" % self.relay.url)
        out = {}
        for family in text_string_to_metric_families(resp.body.decode()):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    if not influxd_available():
        pytest.fail("influxd not found")
    d = tmp_path_factory.mktemp("hostile")
    influxd = Influxd(d / "influxd", udp_database="udpdb").start()
    port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    config = (
        '[[http]]\nname = "h"\nbind-addr = "%s:%d"\nread-timeout = "1s"\n'
        'output = [ { name = "a", location = "%s/write", timeout = "5s" } ]\n'
        '[[udp]]\nname = "u"\nbind-addr = "%s:%d"\n'
        'output = [ { name = "a", location = "%s:%d" } ]\n'
        % (HOST, port, influxd.url, HOST, udp_port, HOST, influxd.udp_port)
    )
    relay = Relay(d / "relay", config, port)
    try:
        relay.start()
        influxd.create_database("hostile")
        yield Target(influxd, relay, "hostile", udp_port)
        stderr = relay.stderr()
    finally:
        status = relay.stop()
        influxd.stop()
    # Whatever clients sent, the relay logged one line per event: no traceback,
    # and no credential (several requests below carry p=s3cret).
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "s3cret" not in stderr
    assert status == 0


# ---------------------------------------------------------------------------
# Raw HTTP over a socket


def exchange(port, data, timeout=5.0):
    """Send raw bytes, then read until the relay closes the connection.

    Returns ``(response bytes, closed)``: ``closed`` is False when the relay
    still held the connection open after ``timeout`` seconds.
    """
    s = socket.create_connection((HOST, port), timeout=timeout)
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # refused mid-way: what did it answer?
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                return out, False
            except OSError:
                return out, True  # reset: closed
            if not chunk:
                return out, True
            out += chunk
        return out, False
    finally:
        s.close()


def push(port, head, pieces, limit_seconds=20.0):
    """Send ``head`` then the body ``pieces`` while reading what the relay
    answers, as curl or Go clients do. Stops when the relay closes the
    connection. Returns ``(response, body bytes sent)``."""
    s = socket.create_connection((HOST, port))
    s.setblocking(False)
    pending = head
    sent = -len(head)
    response = b""
    deadline = time.monotonic() + limit_seconds
    pieces = iter(pieces)
    try:
        while time.monotonic() < deadline:
            if not pending:
                pending = next(pieces, b"")
            readable, writable, _ = select.select([s], [s] if pending else [], [], 0.5)
            if readable:
                try:
                    chunk = s.recv(65536)
                except OSError:
                    break
                if not chunk:
                    break
                response += chunk
            if writable and pending:
                try:
                    n = s.send(pending)
                except OSError:
                    break
                sent += n
                pending = pending[n:]
        return response, max(sent, 0)
    finally:
        s.close()


def status_of(response):
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else None


def write_head(extra=b"", query=b"db=hostile"):
    return b"POST /write?" + query + b" HTTP/1.1\r\nHost: relay\r\n" + extra


# ---------------------------------------------------------------------------
# Huge headers

HUGE = {
    "request line over 8 KB": (b"POST /write?db=hostile&" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "10 KB query string": (b"POST /write?db=hostile&" + b"pad=x&" * 1700 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "one 70 KB header": (write_head(b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n"), 400),
    "5000 small headers": (write_head(b"".join(b"X-H%d: v\r\n" % i for i in range(5000)) + b"\r\n"), 400),
    "1 MB of headers": (write_head(b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(1000)) + b"\r\n"), 400),
    "unsupported version with p=s3cret": (b"POST /write?db=hostile&p=s3cret HTTP/9.9\r\n\r\n", 505),
    "malformed request line with p=s3cret": (b"POST /write?db=hostile&p=s3cret HTTP/1.1 x\r\n\r\n", 400),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "negative Content-Length": (write_head(b"Content-Length: -5\r\n\r\n"), 400),
    "Content-Length not a number": (write_head(b"Content-Length: 12abc\r\n\r\n"), 400),
    "chunk size not hex": (write_head(b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"), 400),
    "chunk size too large": (write_head(b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\nab\r\n"), 400),
}


@pytest.mark.parametrize("kind", sorted(HUGE))
def test_oversized_and_malformed_requests_get_a_clear_4xx_and_are_closed(target, kind):
    data, expected = HUGE[kind]
    response, closed = exchange(target.port, data)
    assert status_of(response) == expected, response[:200]
    assert closed
    target.healthy("huge-%d" % sorted(HUGE).index(kind))


# ---------------------------------------------------------------------------
# Chunked bodies and bodies over the limit


def chunked(pieces):
    for piece in pieces:
        yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def test_a_valid_chunked_body_is_written(target):
    lines = [b"chunked,i=%d v=%di %d" % (i, i, 1_600_000_000_000_000_000 + i) for i in range(100)]
    body = b"\n".join(lines)
    pieces = [body[i:i + 37] for i in range(0, len(body), 37)]  # cut mid-line
    data = write_head(b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    data += b"5;ext=1\r\n" + pieces[0][:5] + b"\r\n" + b"".join(chunked([pieces[0][5:]] + pieces[1:]))
    response, _ = exchange(target.port, data)
    assert status_of(response) == 204, response
    assert len(target.influxd.rows("hostile", "chunked")) == 100
    target.healthy("chunked")


def test_a_chunked_body_over_the_limit_is_413_and_not_read_further(target):
    piece = (b"cpu v=1 1\n" * 6554)  # 64 KB
    total = 64 * MB
    response, sent = push(target.port, write_head(b"Transfer-Encoding: chunked\r\n\r\n"),
                          chunked([piece] * (total // len(piece))))
    assert status_of(response) == 413, response[:200]
    assert b"too large" in response
    # The relay read up to the limit, answered, and closed: past it, only what
    # the sockets' buffers held got out of the client.
    assert sent < LIMIT + 16 * MB
    target.healthy("chunked-413")


def test_a_declared_length_over_the_limit_is_413_before_any_body_is_sent(target):
    head = write_head(b"Content-Length: %d\r\n\r\n" % (100 * MB))
    response, closed = exchange(target.port, head)
    assert status_of(response) == 413
    assert b"Connection: close" in response
    assert closed
    target.healthy("length-413")


def test_a_client_that_sends_100_mb_anyway_is_cut_off(target):
    head = write_head(b"Content-Length: %d\r\n\r\n" % (100 * MB))
    piece = b"x" * 65536
    response, sent = push(target.port, head, [piece] * (100 * MB // len(piece)))
    assert status_of(response) == 413
    # The relay never read the body: only what the sockets' buffers held got out.
    assert sent < 16 * MB
    target.healthy("push-413")


def test_expect_100_continue_over_the_limit_gets_413_and_no_continue(target):
    head = write_head(b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (30 * MB))
    response, closed = exchange(target.port, head)
    assert status_of(response) == 413
    assert b"100 Continue" not in response
    target.healthy("expect-413")


# ---------------------------------------------------------------------------
# Gzip bombs


def bomb(decoded_mb):
    """A gzip body that decodes to ``decoded_mb`` MB of zeros (about 1000:1)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(MB)
    return b"".join(z.compress(zeros) for _ in range(decoded_mb)) + z.flush()


def memory_kb(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


def test_gzip_bombs_are_413_and_memory_stays_flat(target):
    body = bomb(200)  # about 200 KB, 200 MB decoded: 8 times the limit
    assert len(body) < MB
    headers = {"Content-Encoding": "gzip"}
    # One first, so that what the allocator keeps after one is the baseline.
    assert target.relay.write(body, headers=headers, db="hostile").status == 413
    before = memory_kb(target.pid)
    statuses = [target.relay.write(body, headers=headers, db="hostile").status for _ in range(10)]
    after = memory_kb(target.pid)
    assert statuses == [413] * 10
    grown_mb = (after["VmRSS"] - before["VmRSS"]) / 1024
    peak_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    print("gzip bombs: RSS %+.1f MB after 10 bombs of 200 MB; peak %.1f MB over the baseline"
          % (grown_mb, peak_mb))
    assert grown_mb < 50
    assert peak_mb < 100  # decoding stopped at the limit: never 200 MB
    # A gzip body under the limit still works.
    line = b"gz v=1i 1600000000000000000"
    assert target.relay.write(line, gzip=True, db="hostile").status == 204
    target.healthy("gzip-bomb")


# ---------------------------------------------------------------------------
# Slowloris: read-timeout (1s here) bounds a whole request, not each byte


def trickle(port, first, rest, every=0.25, limit=10.0):
    """Send ``first`` at once, then ``rest`` one byte every ``every`` seconds,
    until the relay answers or closes. Returns ``(response, seconds, bytes of rest sent)``."""
    s = socket.create_connection((HOST, port))
    started = time.monotonic()
    response = b""
    sent = 0
    try:
        if first:
            s.sendall(first)
        for byte in rest:
            if time.monotonic() - started > limit:
                break
            readable, _, _ = select.select([s], [], [], every)
            if readable:
                break
            try:
                s.send(bytes([byte]))
            except OSError:
                break
            sent += 1
        s.settimeout(max(0.1, limit - (time.monotonic() - started)))
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                response += chunk
        except OSError:
            pass
        return response, time.monotonic() - started, sent
    finally:
        s.close()


def test_headers_trickled_byte_by_byte_are_cut_off_after_the_read_timeout(target):
    request_bytes = write_head(b"Content-Length: 9\r\n\r\n") + b"cpu v=1 1"
    response, took, sent = trickle(target.port, b"", request_bytes)
    assert took < 4  # read-timeout is 1s; a byte every 0.25s would take 20s
    assert sent < len(request_bytes)
    assert response == b"" or status_of(response) == 408
    target.healthy("slow-headers")


def test_a_body_trickled_byte_by_byte_is_408_after_the_read_timeout(target):
    body = b"cpu v=1 1\n" * 10
    response, took, sent = trickle(target.port, write_head(b"Content-Length: %d\r\n\r\n" % len(body)), body)
    assert took < 4
    assert sent < len(body)
    assert status_of(response) == 408
    target.healthy("slow-body")


def test_an_idle_connection_is_closed_after_the_read_timeout(target):
    response, closed = exchange(target.port, b"", timeout=4)
    assert closed and response == b""
    target.healthy("idle")


# ---------------------------------------------------------------------------
# NUL bytes and invalid UTF-8: the relay answers what InfluxDB answers


@pytest.mark.parametrize("line", [
    b"nul,t=a\x00b v=1 1600000000000000000",
    b"nul v=1,s=\"a\x00b\" 1600000000000000000",
    b"utf,t=\xff\xfe v=1 1600000000000000000",
    b"utf v=1,s=\"\xc3\x28\" 1600000000000000000",
    b"\xc0\xafutf v=1 1600000000000000000",
])
def test_nul_bytes_and_invalid_utf8_get_influxdbs_own_answer(target, line):
    direct = target.influxd.write("hostile", line)
    relayed = target.relay.write(line, db="hostile")
    assert relayed.status == direct.status, (relayed, direct)
    if relayed.status >= 400:
        assert relayed.json()["error"]
    target.healthy("bytes")


# ---------------------------------------------------------------------------
# Thousands of idle connections, on a relay with the default read-timeout (30s)


def test_thousands_of_idle_connections_do_not_lock_out_healthy_clients(tmp_path, target):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 8192 and hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))  # the relay inherits it
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4500:
        pytest.skip("needs 4500 open files")
    port = free_port()
    config = ('[[http]]\nname = "idle"\nbind-addr = "%s:%d"\n'
              'output = [ { name = "a", location = "%s/write" } ]\n' % (HOST, port, target.influxd.url))
    relay = Relay(tmp_path / "idle", config, port).start()
    idle = []
    try:
        fds_before = open_fds(relay.proc.pid)
        # 2000 clients connect and send nothing. The relay serves 1000 at once:
        # open them in batches it can accept, until it holds all it will.
        for _ in range(40):
            for _ in range(50):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((HOST, port))
                idle.append(s)
            held = min(len(idle), 1000) + fds_before - 5
            try:
                wait_until(lambda: open_fds(relay.proc.pid) >= held, 1)
            except AssertionError:
                pass  # full: the rest wait in (or overflow) the kernel's backlog
        assert open_fds(relay.proc.pid) >= 1000
        latencies = []
        for i in range(5):
            started = time.monotonic()
            resp = relay.write("idle,i=%d v=1i %d" % (i, 1_600_000_000_000_000_000 + i),
                               db="hostile", timeout=15)
            latencies.append(time.monotonic() - started)
            assert resp.status == 204
        print("with 2000 idle connections: healthy writes took %s s"
              % ", ".join("%.3f" % t for t in latencies))
        # Not the 30s an idle connection may otherwise hold its slot (a SYN
        # the full backlog dropped is sent again after 1s, then 3s).
        assert max(latencies) < 5
        for s in idle:
            s.close()
        idle = []
        # Nothing leaks: the relay is back to its own few descriptors.
        wait_until(lambda: open_fds(relay.proc.pid) < fds_before + 20, 35,
                   what="the relay's descriptors back to normal")
        assert "Traceback" not in relay.stderr()
    finally:
        for s in idle:
            s.close()
        status = relay.stop()
    assert status == 0


def test_out_of_file_descriptors_one_line_no_traceback_and_it_goes_on(tmp_path, target):
    """With the relay's open files limit at 300, a flood of connections runs it
    out of descriptors: it says so once (not a traceback per attempt), keeps
    serving the connections it has, and accepts again once some are closed."""
    port = free_port()
    config = ('[[http]]\nname = "fds"\nbind-addr = "%s:%d"\n'
              'output = [ { name = "a", location = "%s/write" } ]\n' % (HOST, port, target.influxd.url))
    relay = Relay(tmp_path / "fds", config, port).start()
    flood = []
    keep = socket.create_connection((HOST, port), timeout=10)
    try:
        resource.prlimit(relay.proc.pid, resource.RLIMIT_NOFILE, (300, 300))

        def write_on(sock, i):
            body = b"fds,i=%d v=1i %d" % (i, 1_600_000_000_000_000_000 + i)
            sock.sendall(write_head(b"Content-Length: %d\r\n\r\n" % len(body)) + body)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            return status_of(data)

        assert write_on(keep, 0) == 204  # and the relay keeps its backend connection
        for _ in range(400):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((HOST, port))
            flood.append(s)
        wait_until(lambda: "cannot accept a connection" in relay.stderr(), 15,
                   what="the relay to run out of descriptors")
        assert open_fds(relay.proc.pid) >= 290
        assert write_on(keep, 1) == 204  # a connection it has is still served
        time.sleep(1)  # ten pauses between attempts to accept: no line for them
        for s in flood:
            s.close()
        flood = []
        wait_until(lambda: open_fds(relay.proc.pid) < 100, 35, what="the flood's descriptors closed")
        fresh = socket.create_connection((HOST, port), timeout=10)
        try:
            assert write_on(fresh, 2) == 204  # accepting again
        finally:
            fresh.close()
        stderr = relay.stderr()
        assert stderr.count("cannot accept a connection") == 1, stderr[-3000:]
        assert "Traceback" not in stderr
        assert "LimitNOFILE" in stderr
        assert len(target.influxd.rows("hostile", "fds")) == 3
    finally:
        for s in flood:
            s.close()
        keep.close()
        status = relay.stop()
    assert status == 0


def open_fds(pid):
    return len(list(Path("/proc/%d/fd" % pid).iterdir()))


def _connected(s):
    try:
        s.getpeername()
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------
# UDP: random datagrams are dropped and counted; good ones still land


def udp_garbage(rng):
    kind = rng.randrange(4)
    n = rng.randrange(1, 1400)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(n))
    if kind == 1:
        return bytes(rng.choice(b' ,="\\\n\r#=abc019ti-.') for _ in range(n))
    if kind == 2:  # a good line with a bad one after it: the whole datagram goes
        return b"udpbad v=1i 1600000000000000000\n" + bytes(rng.randrange(256) for _ in range(n))
    return b"udpbad,t=" + b"x" * n  # no field set


def test_random_datagrams_are_dropped_and_counted_while_good_ones_land(target):
    rng = random.Random(8)
    garbage = [udp_garbage(rng) for _ in range(300)]

    def malformed(data):
        try:
            scan(data, b"1")
            return False
        except LineProtocolError:
            return True

    expected_bad = sum(map(malformed, garbage))
    before = target.metrics()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        good = 0
        for i, data in enumerate(garbage):
            s.sendto(data, (HOST, target.udp_port))
            if i % 10 == 0:
                s.sendto(b"udpgood,i=%d v=%di %d\n" % (good, good, 1_600_000_000_000_000_000 + good),
                         (HOST, target.udp_port))
                good += 1
            time.sleep(0.001)
    labels = (("listener", "u"),)

    def count(name):
        return target.metrics().get((name, labels), 0) - before.get((name, labels), 0)

    wait_until(lambda: count("influx_relay_udp_packets_received_total") >= 300 + good, 10,
               what="every datagram received")
    assert count("influx_relay_udp_packets_malformed_total") == expected_bad
    print("udp: %d random datagrams, %d malformed (dropped, counted), %d good ones"
          % (len(garbage), expected_bad, good))
    assert expected_bad > 250
    wait_until(lambda: len(target.influxd.rows("udpdb", "udpgood")) == good, 10,
               what="the good datagrams in influxd")
    target.healthy("udp")
