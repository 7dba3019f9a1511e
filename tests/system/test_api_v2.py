"""The official InfluxDB 2.x Python client writing through the relay to a mixed pair:
a real influxd 1.6.7 (api = "v1") and a fake InfluxDB 2.x (api = "v2")."""

import base64
import json
import os
import time
import uuid

import pytest

from .fake_v2 import FakeV2
from .helpers import request, wait_until

if os.environ.get("INFLUX_RELAY_REQUIRE_SYSTEM_TESTS") != "1":  # CI installs it, and needs it
    pytest.importorskip("influxdb_client", reason="pip install -r requirements-dev.txt")
from influxdb_client import InfluxDBClient, Point, WritePrecision  # noqa: E402
from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: E402
from influxdb_client.rest import ApiException  # noqa: E402

NS = 10 ** 9
UNIT_NS = {WritePrecision.NS: 1, WritePrecision.US: 10 ** 3,
           WritePrecision.MS: 10 ** 6, WritePrecision.S: NS}


@pytest.fixture
def fake_v2():
    made = []

    def make(token=None):
        fake = FakeV2(token=token).start()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.stop()


@pytest.fixture
def mixed(influxd_factory, fake_v2, relay_factory, relay_port):
    """(relay, influxd, fake, db): one 1.x and one 2.x output behind a relay."""
    def start(v2_keys='org = "acme"', token=None):
        influxd = influxd_factory("v1")
        db = "t_" + uuid.uuid4().hex[:8]
        influxd.create_database(db)
        fake = fake_v2(token=token)
        config = (
            '[[http]]\nname = "mixed"\nbind-addr = "127.0.0.1:%d"\n'
            '\n[[http.output]]\nname = "influxdb1"\nlocation = "%s/"\ntimeout = "5s"\n'
            '\n[[http.output]]\nname = "influxdb2"\nlocation = "%s/"\ntimeout = "5s"\n'
            'api = "v2"\n%s\n' % (relay_port, influxd.url, fake.url, v2_keys)
        )
        return relay_factory(config, relay_port), influxd, fake, db
    return start


def client_for(relay, token="client-token", **kwargs):
    return InfluxDBClient(url=relay.url, token=token, org="acme", timeout=10_000, **kwargs)


def rows(influxd, db, measurement, count):
    return wait_until(lambda: (lambda r: r if len(r) >= count else None)(
        influxd.rows(db, measurement)), 10, what="%d rows of %s" % (count, measurement))


def fake_points(fake):
    """The lines the fake got, as {tag set: (fields, time in ns)}."""
    out = {}
    for req in fake.writes:
        unit = UNIT_NS[req.params.get("precision", ["ns"])[0]]
        for line in req.body.split(b"\n"):
            key, fields, ts = line.decode().rsplit(" ", 2)
            out[key] = (fields, int(ts) * unit)
    return out


def test_client_probes_answer_like_influxdb_2(mixed):
    relay, _, _, _ = mixed()
    with client_for(relay) as client:
        assert client.ping() is True
        assert client.version().startswith("relay-")
        assert client.build() == "OSS"
        assert client.ready().status == "ready"


@pytest.mark.parametrize("precision", [WritePrecision.NS, WritePrecision.US,
                                       WritePrecision.MS, WritePrecision.S])
@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_client_writes_land_on_both(mixed, precision, gzip):
    relay, influxd, fake, db = mixed()
    unit = UNIT_NS[precision]
    explicit = 1600000000 * NS // unit + 7
    before = time.time_ns()
    with client_for(relay, enable_gzip=gzip) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(bucket=db + "/autogen", write_precision=precision, record=[
            Point("cpu").tag("host", "a").field("value", 1.5).field("n", 3)
                        .time(explicit, precision),
            "cpu,host=b value=2.5,n=4i",   # no timestamp: the relay stamps it
            "cpu,host=c value=3.5,ok=true",
        ])
    after = time.time_ns()

    got = rows(influxd, db, "cpu", 3)
    by_host = {row["host"]: row for row in got}
    assert by_host["a"]["time"] == explicit * unit
    assert by_host["a"]["value"] == 1.5 and by_host["a"]["n"] == 3
    assert by_host["c"]["ok"] is True
    stamped = by_host["b"]["time"]
    assert by_host["c"]["time"] == stamped
    assert stamped % unit == 0
    assert before - unit <= stamped <= after

    (req,) = fake.writes
    assert req.params == {"org": ["acme"], "bucket": [db + "/autogen"],
                          "precision": [precision]}
    assert req.headers["Authorization"] == "Token client-token"
    assert "Content-Encoding" not in req.headers
    points = fake_points(fake)
    assert set(points) == {"cpu,host=a", "cpu,host=b", "cpu,host=c"}
    # The same point, the same time, on both servers.
    for host, row in by_host.items():
        assert points["cpu,host=" + host][1] == row["time"]


def test_v1_client_writes_reach_the_2x_output_with_its_password_as_token(mixed):
    relay, influxd, fake, db = mixed(v2_keys='org = "acme"', token="pw-token")
    resp = request("POST", relay.url + "/write?db=%s&precision=s&u=joe&p=pw-token" % db,
                   body=b"mem,host=a used=1i 1600000000\nmem,host=b used=2i")
    assert resp.status == 204, resp
    got = rows(influxd, db, "mem", 2)
    (req,) = fake.writes
    assert req.params == {"org": ["acme"], "bucket": [db + "/autogen"], "precision": ["s"]}
    points = fake_points(fake)
    assert {row["host"]: row["time"] for row in got} == {
        key.split("=")[1]: ts for key, (_, ts) in points.items()}
    # Basic auth from a 1.x client works the same way.
    basic = "Basic " + base64.b64encode(b"joe:pw-token").decode()
    resp = request("POST", relay.url + "/write?db=%s" % db, body=b"mem,host=c used=3i",
                   headers={"Authorization": basic})
    assert resp.status == 204, resp
    rows(influxd, db, "mem", 3)
    assert fake.writes[-1].headers["Authorization"] == "Token pw-token"


def test_output_token_and_bucket_replace_the_clients(mixed):
    relay, influxd, fake, db = mixed(
        v2_keys='org = "acme"\ntoken = "srv-token"\nbucket = "everything"', token="srv-token")
    with client_for(relay, token="whatever") as client:
        client.write_api(write_options=SYNCHRONOUS).write(
            bucket=db, record="disk,host=a free=1i 1600000000000000000")
    assert rows(influxd, db, "disk", 1)[0]["free"] == 1
    (req,) = fake.writes
    assert req.params["bucket"] == ["everything"]
    assert req.headers["Authorization"] == "Token srv-token"


def refused(write, **kwargs):
    """(status, JSON body) of a write the client raised ApiException for."""
    try:
        write.write(**kwargs)
    except ApiException as e:
        # The exception holds the client's connection to the relay: close it with the
        # exception, or it stays open (and the relay's shutdown waits for it).
        getattr(e.response, "urllib3_response", e.response).close()
        return e.status, json.loads(e.body)
    raise AssertionError("the write was accepted")


def test_client_sees_errors_in_v2_shape(mixed):
    relay, _, fake, db = mixed()
    with client_for(relay) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        # The relay's own check, before fan-out.
        assert refused(write, bucket="/nodb", record="cpu v=1 1") == (400, {
            "code": "invalid",
            "message": 'bucket "/nodb" names no database before "/" for the InfluxDB 1.x '
                       "outputs of this relay"})
        # influxd's own 4xx, in 1.x's shape, reaches the 2.x client in 2.x's. (The fake is
        # down, so influxd's answer is the only one: a failure never decides.)
        fake.stop()
        assert refused(write, bucket="no_such_db", record="cpu v=1 1") == (404, {
            "code": "not found", "message": 'database not found: "no_such_db"'})
