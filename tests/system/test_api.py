"""veepee's endpoints through the real relay process against two real influxd:
/admin, /health, [[filter]] on a mixed batch, Prometheus remote write."""

import struct
import urllib.parse
import uuid

from .conftest import http_relay_config
from .helpers import assert_204, request, rows_on_both


def admin(relay, q, token=None):
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if token:
        headers["Authorization"] = "Bearer " + token
    return request("POST", relay.url + "/admin", body=urllib.parse.urlencode({"q": q}),
                   headers=headers)


def databases(server):
    out = server.query("SHOW DATABASES")
    return {row[0] for series in out["results"][0].get("series", [])
            for row in series.get("values", [])}


def test_admin_creates_a_database_on_both_then_writes_land_in_it(
        influxd_pair, relay_factory, relay_port):
    config = http_relay_config(relay_port, influxd_pair) + (
        'admin-enabled = true\nadmin-token = "t0ken"\n')
    relay = relay_factory(config, relay_port)
    db = "adm_" + uuid.uuid4().hex[:8]

    refused = admin(relay, 'CREATE DATABASE "%s"' % db)
    assert refused.status == 401, refused
    assert all(db not in databases(s) for s in influxd_pair)

    resp = admin(relay, 'CREATE DATABASE "%s"' % db, token="t0ken")
    assert resp.status == 200, resp
    assert resp.json() == {"results": [{"statement_id": 0}]}
    assert resp.headers["X-Relay-Backends"] == "a=200, b=200"
    assert all(db in databases(s) for s in influxd_pair)

    assert_204(relay.write("adm,host=x v=1i 1600000000000000000\n", db=db))
    a, b = rows_on_both(influxd_pair, db, "adm", 1)
    assert a == b == [{"time": 1600000000000000000, "host": "x", "v": 1}]

    # A query InfluxDB refuses: its answer reaches the client.
    bad = admin(relay, "CREATE NONSENSE", token="t0ken")
    assert bad.status == 400, bad
    assert "error parsing query" in bad.json()["error"]


def test_admin_is_404_unless_enabled(influxd_pair, relay_for):
    relay = relay_for(influxd_pair)
    resp = admin(relay, 'CREATE DATABASE "never"')
    assert resp.status == 404, resp
    assert all("never" not in databases(s) for s in influxd_pair)


def test_health_follows_the_backends(influxd_pair, relay_for):
    a, b = influxd_pair
    relay = relay_for(influxd_pair)
    resp = request("GET", relay.url + "/health")
    assert resp.status == 200, resp
    body = resp.json()
    assert body["status"] == "healthy" and set(body["healthy"]) == {"a", "b"}
    b.kill()
    body = request("GET", relay.url + "/health").json()
    assert body["status"] == "problem" and list(body["problem"]) == ["b"]
    a.kill()
    resp = request("GET", relay.url + "/health")
    assert resp.status == 503 and resp.json()["status"] == "critical"


def test_filters_on_a_mixed_batch(influxd_pair, db, relay_factory, relay_port):
    a, b = influxd_pair
    config = http_relay_config(relay_port, influxd_pair) + (
        '[[filter]]\nname = "system-only"\nmeasurement-expression = "^(cpu|mem)$"\n'
        'tag-expression = "^(host|region)$"\noutputs = ["b"]\n')
    relay = relay_factory(config, relay_port)
    body = (
        "cpu,host=h1,region=eu usage=1.5 1600000000000000000\n"
        "mem,host=h1 free=2i\n"                              # stamped by the relay
        "cpu,host=h2,rack=r1 usage=3.5 1600000000000000002\n"  # rack: not for b
        "app,host=h1 requests=4i 1600000000000000003\n"        # app: not for b
    )
    assert_204(relay.write(body, db=db))
    rows_on_both([a], db, "app", 1)
    cpu_a, cpu_b = rows_on_both(influxd_pair, db, "cpu", 1)
    mem_a, mem_b = rows_on_both(influxd_pair, db, "mem", 1)
    assert [r["host"] for r in cpu_a] == ["h1", "h2"]
    assert [r["host"] for r in cpu_b] == ["h1"]
    assert mem_a == mem_b and len(mem_b) == 1  # one stamp, the same on both
    assert b.rows(db, "app") == []


# ---------------------------------------------------------------------------
# Prometheus remote write, encoded by hand: protobuf WriteRequest, snappy block

def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number, payload):
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _write_request(name, labels, value, timestamp_ms):
    pairs = [("__name__", name)] + sorted(labels.items())
    series = b"".join(
        _field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in pairs)
    sample = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(timestamp_ms)
    return _field(1, series + _field(2, sample))


def _snappy(data):
    """A valid snappy block made of literals only (no compression needed)."""
    out = bytearray(_varint(len(data)))
    for i in range(0, len(data), 60):
        chunk = data[i:i + 60]
        out.append((len(chunk) - 1) << 2)
        out += chunk
    return bytes(out)


def test_prometheus_remote_write_lands_on_both(influxd_pair, db, relay_for):
    relay = relay_for(influxd_pair, style="veepee")
    body = _snappy(_write_request("node_load1", {"instance": "h1"}, 0.75, 1600000000000))
    resp = request("POST", "%s/api/v1/prom/write?db=%s" % (relay.url, db), body=body, headers={
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    })
    assert resp.status == 204, resp
    a, b = rows_on_both(influxd_pair, db, "node_load1", 1)
    assert a == b
    assert a[0]["time"] == 1600000000000 * 10**6
    assert a[0]["value"] == 0.75 and a[0]["instance"] == "h1"
    # A body InfluxDB cannot decode: its 400 reaches the client.
    bad = request("POST", "%s/api/v1/prom/write?db=%s" % (relay.url, db), body=b"\xff" * 8,
                  headers={"Content-Encoding": "snappy"})
    assert bad.status == 400, bad
