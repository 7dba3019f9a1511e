"""Differential tests: the same request written through the relay and straight to a
real influxd 1.6.7 must leave the same rows.

The relay splits, checks and stamps line protocol itself; influxd is the judge of
what a body means. Each case writes one request both ways, into two databases of
one influxd, and compares everything the databases hold (``SELECT * GROUP BY *``),
times included. A line without a timestamp is stamped by the relay and by influxd
at slightly different moments: such times are compared within a tolerance.

Every test runs twice: against a relay with the C line scanner, and against one
with the pure-Python scanner (INFLUX_RELAY_PURE_PYTHON=1 in its environment).
"""

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ..unit.test_lineprotocol_properties import valid_line
from .helpers import HOST, Influxd, Relay, free_port, influxd_available, request

NS = 10 ** 9


@pytest.fixture(scope="module")
def pair(influxd_module, relay_module):
    return influxd_module, relay_module


@pytest.fixture(scope="module")
def influxd_module(tmp_path_factory):
    if not influxd_available():
        pytest.fail("influxd not found")
    server = Influxd(tmp_path_factory.mktemp("diff") / "influxd").start()
    yield server
    server.stop()


def _scanner_env(implementation):
    """The relay's environment for a scanner, checked with the relay's Python."""
    env = {"INFLUX_RELAY_PURE_PYTHON": "1" if implementation == "python" else ""}
    used = subprocess.run(
        [sys.executable, "-c", "from influx_relay import lineprotocol as l; "
                               "print(l.IMPLEMENTATION, l.PYTHON_REASON)"],
        env=dict(os.environ, **env), capture_output=True, timeout=60, check=True,
    ).stdout.decode().strip()
    assert used.split()[0] == implementation, used
    return env


@pytest.fixture(scope="module", params=["c", "python"])
def relay_module(request, tmp_path_factory, influxd_module):
    port = free_port()
    config = ('[[http]]\nname = "diff"\nbind-addr = "%s:%d"\n'
              'output = [ { name = "a", location = "%s/write", timeout = "5s" } ]\n'
              % (HOST, port, influxd_module.url))
    relay = Relay(tmp_path_factory.mktemp("diff-relay"), config, port,
                  env=_scanner_env(request.param)).start()
    yield relay
    assert relay.stop() == 0, relay.stderr()[-3000:]


def _post(base, path, body, params):
    query = "&".join("%s=%s" % kv for kv in params)
    return request("POST", "%s%s?%s" % (base, path, query), body=body, timeout=10)


def _databases(server):
    names = ["d_" + uuid.uuid4().hex[:10], "r_" + uuid.uuid4().hex[:10]]
    for name in names:
        server.create_database(name)
    return names


def _everything(server, db):
    """Every series of ``db``: (measurement, tags, columns, rows), in InfluxDB's order."""
    out = server.query("SELECT * FROM /.*/ GROUP BY *", db=db)
    result = out["results"][0]
    assert "error" not in result, result
    return [(s["name"], s.get("tags", {}), s["columns"], s["values"])
            for s in result.get("series", [])]


def _normalized(series, before, after, tolerance):
    """Times in [before, after] widened by ``tolerance`` (the stamps) become "now"."""
    out = []
    for name, tags, columns, rows in series:
        fixed = []
        for row in rows:
            t = row[0]
            if before - tolerance <= t <= after + tolerance:
                t = "now"
            fixed.append([t] + row[1:])
        out.append((name, tags, columns, fixed))
    return out


def _both_ways(server, relay, path, body, relay_params, direct_params):
    direct_db, relay_db = _databases(server)
    before = time.time_ns()
    direct = _post(server.url, "/write", body, [("db", direct_db)] + direct_params)
    via = _post(relay.url, path, body, relay_params(relay_db))
    after = time.time_ns()
    return direct, via, direct_db, relay_db, before, after


# ---------------------------------------------------------------------------
# Precision: every spelling a client may send

# (what the client sends, nanoseconds per unit the client means by it)
V1_SPELLINGS = [(None, 1), ("", 1), ("n", 1), ("ns", 1), ("u", 1000), ("us", 1000),
                ("ms", 10 ** 6), ("s", NS), ("m", 60 * NS), ("h", 3600 * NS)]
# /api/v2/write's spellings, and the /write precision a 2.x server would apply
V2_SPELLINGS = [(None, "n", 1), ("ns", "n", 1), ("us", "u", 1000), ("ms", "ms", 10 ** 6),
                ("s", "s", NS)]


def _body(unit):
    given = 1_700_000_000 * NS // unit + 7  # 7 units after 2023-11-14T22:13:20Z
    return ("prec,kind=stamped v=1\nprec,kind=given v=2 %d\n" % given).encode()


@pytest.mark.parametrize("precision, unit", V1_SPELLINGS,
                         ids=[str(p) for p, _ in V1_SPELLINGS])
def test_every_v1_precision_stores_what_influxd_stores(pair, precision, unit):
    """``/write?precision=us`` included: influxd 1.x reads "us" as nanoseconds, and
    so must the relay's stamp, or the point lands in 1970."""
    server, relay = pair
    params = [] if precision is None else [("precision", precision)]
    direct, via, ddb, rdb, before, after = _both_ways(
        server, relay, "/write", _body(unit), lambda db: [("db", db)] + params, params)
    assert direct.status == 204, direct
    assert via.status == 204, via
    tolerance = 2 * NS + 3600 * NS  # up to an hour's truncation, with precision=h
    expected = _normalized(_everything(server, ddb), before, after, tolerance)
    got = _normalized(_everything(server, rdb), before, after, tolerance)
    assert got == expected
    assert "now" in str(got)  # the stamped line was compared as stamped


@pytest.mark.parametrize("precision, v1, unit", V2_SPELLINGS,
                         ids=[str(p) for p, _, _ in V2_SPELLINGS])
def test_every_v2_precision_stores_what_a_2x_server_would(pair, precision, v1, unit):
    """``/api/v2/write`` through the relay to a 1.x output stores what influxd
    stores for the same points written with the 1.x name of that precision."""
    server, relay = pair
    params = [] if precision is None else [("precision", precision)]
    direct, via, ddb, rdb, before, after = _both_ways(
        server, relay, "/api/v2/write", _body(unit),
        lambda db: [("org", "o"), ("bucket", db)] + params, [("precision", v1)])
    assert direct.status == 204, direct
    assert via.status == 204, via
    expected = _normalized(_everything(server, ddb), before, after, 2 * NS)
    got = _normalized(_everything(server, rdb), before, after, 2 * NS)
    assert got == expected
    assert "now" in str(got)


# ---------------------------------------------------------------------------
# Line protocol: escapes (before a newline too), quotes, comments

COMMENTS = st.sampled_from([b"# plain comment", b'# c=1 "x', b"# a\\", b'  # with "quote"',
                            b'# k=v "open', b"#"])


@st.composite
def differential_body(draw):
    """Valid lines (every escape of each part, escaped newlines in measurement,
    tag keys and values, field keys and strings), comments (some holding what
    InfluxDB takes for an open string), and blank lines, joined by newlines."""
    parts = draw(st.lists(st.one_of(valid_line().map(lambda item: item[0]), COMMENTS,
                                    st.just(b"")), min_size=1, max_size=6))
    return b"\n".join(parts) + draw(st.sampled_from([b"", b"\n"]))


@settings(max_examples=40, derandomize=True, database=None, deadline=timedelta(seconds=30),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(body=differential_body())
def test_what_the_relay_stores_is_what_influxd_stores(pair, body):
    """The relay's split of a body into lines (and its stamps) changes nothing
    influxd stores: where the relay answers 204, influxd answered 204 and both
    databases hold the same rows; where influxd refuses part of the body, the
    relay passes influxd's own answer and the rows are the same too."""
    server, relay = pair
    direct, via, ddb, rdb, before, after = _both_ways(
        server, relay, "/write", body, lambda db: [("db", db)], [])
    expected = _normalized(_everything(server, ddb), before, after, 2 * NS)
    got = _normalized(_everything(server, rdb), before, after, 2 * NS)
    if via.status == 400 and re.search(rb'"unable to parse line \d+ ', via.body):
        # The relay's own refusal (it names the line): never for a body influxd took whole.
        assert direct.status != 204, (body, via)
        assert got == []
        return
    assert via.status == direct.status, (body, direct, via)
    assert got == expected, body
