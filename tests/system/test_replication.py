"""The relay against two real InfluxDB 1.x servers: what a client sees, what the databases hold."""

import signal
import socket
import time

import pytest

from .conftest import http_relay_config
from .helpers import HOST, assert_204, free_port, ping_status, rows_on_both, run_cli, wait_until

NS = 10**9


@pytest.mark.parametrize("style", ["seed", "veepee"])
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_write_lands_identically_on_both(influxd_pair, db, relay_for, style, gzip):
    relay = relay_for(influxd_pair, style=style)
    before = time.time_ns()
    body = (
        "cpu,host=a,region=eu value=1.5,count=3i 1600000000000000000\n"
        "cpu,host=b,region=eu value=2.5,count=4i 1600000000000000001\n"
        "cpu,host=c,region=us value=3.5,ok=true\n"      # no timestamp: the relay stamps it
        "cpu,host=d,region=us value=4.5,count=5i\n"
    )
    assert_204(relay.write(body, gzip=gzip, db=db))
    after = time.time_ns()

    a, b = rows_on_both(influxd_pair, db, "cpu", 4)
    assert a == b
    assert len(a) == 4
    by_host = {row["host"]: row for row in a}
    assert by_host["a"]["time"] == 1600000000000000000
    assert by_host["b"]["time"] == 1600000000000000001
    assert by_host["a"]["value"] == 1.5 and by_host["a"]["count"] == 3
    assert by_host["c"]["ok"] is True
    # Both unstamped lines got one time, taken when the request arrived, on both servers.
    assert by_host["c"]["time"] == by_host["d"]["time"]
    assert before - NS <= by_host["c"]["time"] <= after + NS


@pytest.mark.parametrize("precision,unit", [("s", NS), ("ms", 10**6)])
def test_precision_stamps_whole_units(influxd_pair, db, relay_for, precision, unit):
    relay = relay_for(influxd_pair)
    explicit = 1600000000 * (NS // unit) + 7  # 7 units after 2020-09-13T12:26:40Z
    before = time.time_ns()
    resp = relay.write("mem,kind=explicit used=1i %d\nmem,kind=stamped used=2i\n" % explicit,
                       db=db, precision=precision)
    assert_204(resp)
    after = time.time_ns()

    a, b = rows_on_both(influxd_pair, db, "mem", 2)
    assert a == b
    by_kind = {row["kind"]: row for row in a}
    assert by_kind["explicit"]["time"] == explicit * unit
    stamped = by_kind["stamped"]["time"]
    assert stamped % unit == 0, "relay stamp %d is not a whole %s" % (stamped, precision)
    assert before - unit - NS <= stamped <= after + NS


def test_quoted_string_field_arrives_intact(influxd_pair, db, relay_for):
    relay = relay_for(influxd_pair)
    # A string field with spaces, commas, '=', escaped quotes and a real newline, then a
    # second line and a line without timestamp, so a naive line splitter would break them.
    body = (
        'log,app=web msg="GET /x?a=1,b=2 said \\"hi there\\"\nsecond line = ok",n=1i 1600000000000000000\n'
        'log,app=db msg="plain",n=2i 1600000000000000001\n'
        'log,app=cron msg="no, timestamp = \\"here\\"",n=3i\n'
    )
    assert_204(relay.write(body, db=db))
    a, b = rows_on_both(influxd_pair, db, "log", 3)
    assert a == b
    by_app = {row["app"]: row["msg"] for row in a}
    assert by_app == {
        "web": 'GET /x?a=1,b=2 said "hi there"\nsecond line = ok',
        "db": "plain",
        "cron": 'no, timestamp = "here"',
    }


def test_influxdb_400_reaches_the_client(influxd_pair, db, relay_for):
    relay = relay_for(influxd_pair)
    # Same shard (field types are per shard in InfluxDB 1.x), so the second write conflicts.
    assert_204(relay.write("conflict f=1i 1600000000000000000\n", db=db))
    rows_on_both(influxd_pair, db, "conflict", 1)
    resp = relay.write('conflict f="x" 1600000000000000001\n', db=db)
    assert resp.status == 400, resp
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    assert "field type conflict" in resp.json()["error"], resp
    # What InfluxDB itself answers to the same write.
    direct = influxd_pair[0].write(db, b'conflict f="x" 1600000000000000001\n')
    assert direct.status == 400
    assert resp.json()["error"].split(":")[0] == direct.json()["error"].split(":")[0]


def test_unknown_database_404_reaches_the_client(influxd_pair, relay_for):
    relay = relay_for(influxd_pair)
    resp = relay.write("m v=1\n", db="nosuchdb")
    assert resp.status == 404, resp
    assert resp.json() == {"error": 'database not found: "nosuchdb"'}


def test_missing_db_parameter_is_400(influxd_pair, relay_for):
    relay = relay_for(influxd_pair)
    resp = relay.write("m v=1\n")
    assert resp.status == 400, resp
    assert resp.json() == {"error": "missing parameter: db"}


def test_one_backend_down_writes_still_succeed(influxd_pair, db, relay_for):
    a, b = influxd_pair
    relay = relay_for(influxd_pair)
    b.kill()
    for i in range(5):
        assert_204(relay.write("up v=%di %d\n" % (i, 1600000000000000000 + i), db=db))
    assert [r["v"] for r in rows_on_both([a], db, "up", 5)[0]] == [0, 1, 2, 3, 4]

    # And with both down, the client is told the write failed.
    a.kill()
    resp = relay.write("up v=9i\n", db=db)
    assert resp.status == 503, resp
    assert "error" in resp.json(), resp


def test_sigterm_exits_zero_promptly(influxd_pair, db, relay_factory, relay_port):
    relay = relay_factory(http_relay_config(relay_port, influxd_pair), relay_port)
    assert_204(relay.write("bye v=1i\n", db=db))
    started = time.monotonic()
    relay.proc.send_signal(signal.SIGTERM)
    status = relay.proc.wait(timeout=10)
    took = time.monotonic() - started
    assert status == 0, relay.stderr()
    assert took < 5, "relay took %.1fs to exit after SIGTERM" % took
    assert ping_status(relay_port) is None  # nothing listens any more


def test_udp_datagrams_land_on_both(influxd_pair, relay_factory, relay_port):
    a, b = influxd_pair
    udp_port = free_port(socket.SOCK_DGRAM)
    config = (
        http_relay_config(relay_port, influxd_pair)
        + '\n[[udp]]\nname = "u"\nbind-addr = "%s:%d"\n'
          'output = [ { name = "a", location = "%s:%d" }, { name = "b", location = "%s:%d" } ]\n'
        % (HOST, udp_port, HOST, a.udp_port, HOST, b.udp_port)
    )
    relay_factory(config, relay_port)
    wait_until(lambda: udp_port_taken(udp_port), 5, what="relay's UDP listener on %d" % udp_port)
    before = time.time_ns()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"udp,src=x v=1i 1600000000000000000\nudp,src=y v=2i 1600000000000000001\n",
                 (HOST, udp_port))
        s.sendto(b"udp,src=z v=3i\n", (HOST, udp_port))
    after = time.time_ns()
    rows_a, rows_b = rows_on_both(influxd_pair, "udpdb", "udp", 3)
    assert rows_a == rows_b
    by_src = {row["src"]: row for row in rows_a}
    assert by_src["x"]["time"] == 1600000000000000000
    assert by_src["y"]["v"] == 2
    assert before - NS <= by_src["z"]["time"] <= after + NS


def udp_port_taken(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


class TestCli:
    def test_check_good_config(self, tmp_path):
        path = tmp_path / "relay.toml"
        path.write_text(
            '[[http]]\nname = "front"\nbind-addr = "127.0.0.1:19096"\n'
            'output = [ { name = "left", location = "http://127.0.0.1:18086/write" },\n'
            '           { name = "right", location = "http://127.0.0.1:17086/write" } ]\n'
            '[[udp]]\nname = "telegraf"\nbind-addr = "127.0.0.1:19089"\n'
            'output = [ { name = "uleft", location = "127.0.0.1:18089", mtu = 512 } ]\n'
        )
        done = run_cli("check", "--config", str(path))
        out = done.stdout.decode()
        assert done.returncode == 0, (done.stdout, done.stderr)
        for word in ("front", "127.0.0.1:19096", "left", "http://127.0.0.1:18086/write",
                     "right", "telegraf", "127.0.0.1:19089", "uleft", "127.0.0.1:18089"):
            assert word in out, "%r missing from check output:\n%s" % (word, out)

    @pytest.mark.parametrize("bad,key", [
        ('timeout = "10x"', "timeout"),
        ('timout = "10s"', "timout"),
    ], ids=["bad-duration", "unknown-key"])
    def test_check_bad_config(self, tmp_path, bad, key):
        path = tmp_path / "broken.toml"
        path.write_text(
            '[[http]]\nname = "front"\nbind-addr = "127.0.0.1:19096"\n'
            '[[http.output]]\nname = "a"\nlocation = "http://127.0.0.1:18086/"\n'
            '[[http.output]]\nname = "b"\nlocation = "http://127.0.0.1:17086/"\n%s\n' % bad
        )
        done = run_cli("check", "--config", str(path))
        err = done.stderr.decode()
        assert done.returncode == 2, (done.stdout, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1, "expected one line on stderr, got:\n%s" % err
        assert "broken.toml" in lines[0] and key in lines[0], lines[0]

    def test_run_with_bad_config_exits_2(self, tmp_path):
        path = tmp_path / "broken.toml"
        path.write_text('[[http]]\nname = "front"\nbind-addr = "127.0.0.1:99999"\n'
                        'output = [ { name = "a", location = "http://127.0.0.1:18086/write" } ]\n')
        done = run_cli("run", "--config", str(path))
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "broken.toml" in done.stderr.decode()

    def test_version(self):
        done = run_cli("--version")
        assert done.returncode == 0, done
        import influx_relay
        assert influx_relay.__version__ in done.stdout.decode() + done.stderr.decode()
