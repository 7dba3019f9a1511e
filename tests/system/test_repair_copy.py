"""Copying a range from one real influxd 1.6.7 to another (influx_relay/repair.py).

Two influxd: A holds what the client wrote, B missed it. The outputs are the
relay's own (``Output.from_config``), made in this process; the copy goes
through A's /query and B's /write. What B holds afterwards is compared with A
the way a user would: ``SELECT * ... GROUP BY *`` of every measurement, and
``SHOW FIELD KEYS`` (so an integer that came back a float shows).
"""

import socket
import time
import tracemalloc
import uuid
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from influx_relay import config, repair
from influx_relay.output import Output
from influx_relay.repair import copy_range

from ..unit.test_lineprotocol_properties import valid_line
from .dataset import END, START, dump, new_db, points, rich_lines, write
from .fake_v2 import FakeV2
from .helpers import Influxd, influxd_available

NS = 10 ** 9


def outputs_for(*specs):
    """The relay's outputs a, b, ... (no retry buffer), one per spec: a base
    URL, or (base URL, more TOML keys of that output)."""
    text = '[[http]]\nname = "t"\nbind-addr = "127.0.0.1:1"\n'
    for name, spec in zip("abcdefgh", specs):
        url, extra = (spec, "") if isinstance(spec, str) else spec
        text += '\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "5s"\n%s' % (
            name, url, extra)
    cfg = config.loads(text)
    return [Output.from_config(o, buffered=False) for o in cfg.http[0].outputs]


@pytest.fixture
def outputs():
    made = []

    def make(*specs):
        out = outputs_for(*specs)
        made.extend(out)
        return out

    yield make
    for output in made:
        output.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A and B, for the tests that do not stop either."""
    if not influxd_available():
        pytest.fail("influxd not found")
    base = tmp_path_factory.mktemp("repair")
    a = Influxd(base / "a").start()
    try:
        b = Influxd(base / "b").start()
    except BaseException:
        a.stop()
        raise
    yield a, b
    a.stop()
    b.stop()


OUTSIDE = [b"cpu,host=h00,region=eu\\ west f=9 %d" % (START - 1),
           b"cpu,host=h00,region=eu\\ west f=9 %d" % (END + 1),
           b"x\\\ny,t=a\\\nb f=9 %d" % (START - 30 * 24 * 3600 * NS),
           b"elsewhere f=1 %d" % (END + 1)]
# influxd takes this one alone, but would misread it in a body of several (see
# test_repair_lp.py): the copy must send it in a request of its own.
ALONE = [b'plain,a=x\\\\ y,k\\\\=z="q f="alone" %d' % (START + 5),
         b'plain,a=x\\\\ y,k\\\\=z="q f="again" %d' % (START + 6),
         b'zz f="after it" %d' % (START + 7)]


def check_slices(reported, start, end):
    assert reported, "no slice reported"
    assert reported[0][0] == start and reported[-1][1] == end
    for (_, e1), (s2, _) in zip(reported, reported[1:]):
        assert s2 == e1 + 1, reported


def test_a_range_copies_to_an_empty_server_as_it_is(pair, outputs):
    """Several databases and retention policies; what B holds is what A holds
    in the range, to the type of every field, and nothing from outside it."""
    a, b = pair
    src, dst = outputs(a.url, b.url)
    shop = new_db(pair, rps=["week"])
    ops = new_db(pair)
    write(a, shop, rich_lines() + OUTSIDE)
    for line in ALONE:
        write(a, shop, [line])
    write(a, shop, rich_lines(n=300, series=5), rp="week")
    write(a, ops, rich_lines(n=200, series=3) + OUTSIDE)
    for db, rp, expected in ((shop, "", 603), (shop, "week", 300), (ops, "", 200)):
        reported = []
        copied = []
        result = copy_range(src, dst, db, rp, START, END, batch_points=40,
                            slice_done=lambda s, e: reported.append((s, e)), progress=copied.append)
        assert result.done and result.reason is None, result
        assert result.points == expected
        assert copied[-1] == expected and result.batches == len(copied) >= expected // 40
        assert result.slices == len(reported) > 1
        check_slices(reported, START, END)
        want = dump(a, db, rp, START, END)
        assert points(want) == expected
        assert dump(b, db, rp) == want  # and nothing outside the range
    assert "x\\\ny" in dump(b, ops)  # an escaped newline kept, backslash and all


def test_a_range_copied_twice_changes_nothing(pair, outputs):
    a, b = pair
    src, dst = outputs(a.url, b.url)
    db = new_db(pair)
    write(a, db, rich_lines(n=300))
    first = copy_range(src, dst, db, "", START, END)
    after_first = dump(b, db)
    second = copy_range(src, dst, db, "", START, END)
    assert first.done and second.done and first.points == second.points == 300
    assert dump(b, db) == after_first == dump(a, db)


def test_what_cannot_be_copied_faithfully_is_left_out_and_the_rest_copied(pair, outputs):
    """A field that is a float in one shard and an integer in another: JSON
    cannot tell which point had which, so that measurement is not copied,
    the others are, and no slice is reported done."""
    a, b = pair
    src, dst = outputs(a.url, b.url)
    db = new_db(pair)
    week = 7 * 24 * 3600 * NS
    write(a, db, [b"mixed f=1.5 %d" % START, b"mixed f=2i %d" % (START + week),
                  b"fine g=1i %d" % START, b"fine g=2i %d" % (START + week)])
    reported = []
    result = copy_range(src, dst, db, "", START, START + week,
                        slice_done=lambda s, e: reported.append((s, e)))
    assert not result.done and reported == [] and result.points == 2
    assert result.reason == ("not copied: measurement 'mixed': the type of field 'f' (float and "
                             "integer) differs between shards (all its points)")
    assert set(dump(b, db)) == {"fine"}
    assert dump(b, db) == {"fine": dump(a, db)["fine"]}


def test_a_big_range_copies_with_bounded_memory(pair, outputs):
    """200 000 points: the copy holds one batch and one chunk at a time, a
    small part of the range (measured with tracemalloc: what Python holds)."""
    a, b = pair
    src, dst = outputs(a.url, b.url)
    db = new_db(pair)
    n = 200_000
    lines = [b"load,host=h%03d,dc=d%d v=%d.5,n=%di,s=\"%06d\" %d"
             % (i % 500, i % 3, i, i, i, START + i * 1000) for i in range(n)]
    size = sum(len(line) + 1 for line in lines)
    write(a, db, lines)
    del lines
    tracemalloc.start()
    try:
        result = copy_range(src, dst, db, "", START, START + n * 1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.done and result.points == n, result
    assert size > 10 * 1024 * 1024
    assert peak < size / 3, "held %d bytes at most, for a range of %d bytes" % (peak, size)
    count = b.query("SELECT count(n) FROM load", db=db)["results"][0]["series"][0]["values"][0][1]
    assert count == n


def test_a_target_that_fails_midway_says_why_and_keeps_the_slices_it_finished(influxd_factory,
                                                                               outputs):
    a, b = influxd_factory("a"), influxd_factory("b")
    src, dst = outputs(a.url, b.url)
    db = new_db([a, b])
    n = 30_000
    write(a, db, [b"m,k=%d v=%di %d" % (i % 10, i, START + i * NS // 100) for i in range(n)])
    reported = []

    def progress(copied):
        if copied >= 12_000 and b.proc.poll() is None:
            b.stop()  # some slices in (they grow: 100, 800, 6400, then 10 000 points)

    result = copy_range(src, dst, db, "", START, START + n * NS // 100, batch_points=1000,
                        progress=progress, slice_done=lambda s, e: reported.append((s, e)))
    assert not result.done and not result.stopped
    assert result.reason.startswith("writing to b: connection failed"), result.reason
    assert "(3 attempts)" in result.reason
    assert reported and result.slices == len(reported)
    b.restart()
    for start, end in reported:  # each slice reported is on B whole
        where = "WHERE time >= %d AND time <= %d" % (start, end)
        q = "SELECT count(v) FROM m " + where
        want = a.query(q, db=db)["results"][0]["series"][0]["values"][0][1]
        assert b.query(q, db=db)["results"][0]["series"][0]["values"][0][1] == want > 0
    # and a second run, with B back, finishes the job
    again = copy_range(src, dst, db, "", reported[-1][1] + 1, START + n * NS // 100)
    assert again.done
    assert dump(b, db) == dump(a, db)


def test_a_copy_asked_to_stop_stops_between_batches(pair, outputs):
    a, b = pair
    src, dst = outputs(a.url, b.url)
    db = new_db(pair)
    write(a, db, [b"m v=%di %d" % (i, START + i) for i in range(5000)])
    asked = []
    result = copy_range(src, dst, db, "", START, START + 5000, batch_points=100,
                        progress=asked.append, should_stop=lambda: len(asked) >= 3)
    assert result.stopped and not result.done and result.reason == "stopped"
    assert result.points == 300 and result.batches == 3
    count = b.query("SELECT count(v) FROM m", db=db)["results"][0]["series"][0]["values"][0][1]
    assert count == 300


def test_the_rate_limit_holds(pair, outputs):
    """A bound the limiter guarantees, not a speed: N points at R/s with a
    burst of one second's worth take at least (N - R) / R seconds."""
    a, b = pair
    src, dst = outputs(a.url, b.url)
    db = new_db(pair)
    n, rate = 9000, 3000
    write(a, db, [b"m v=%di %d" % (i, START + i) for i in range(n)])
    started = time.monotonic()
    result = copy_range(src, dst, db, "", START, START + n, batch_points=500,
                        limiter=repair.limiter(rate))
    elapsed = time.monotonic() - started
    assert result.done and result.points == n
    assert elapsed >= (n - rate) / rate * 0.95, elapsed


def test_a_database_missing_on_the_target_is_the_reason(pair, outputs):
    a, b = pair
    src, dst = outputs(a.url, b.url)
    db = "r_" + uuid.uuid4().hex[:8]
    a.create_database(db)
    write(a, db, [b"m v=1 %d" % START])
    result = copy_range(src, dst, db, "", START, END)
    assert not result.done
    assert result.reason == 'writing to b: refused: HTTP 404: {"error":"database not found: \\"%s\\""}' % db


# ---------------------------------------------------------------------------
# InfluxDB 2.x


class FakeV2Query(FakeV2):
    """The fake 2.x, answering /query as InfluxDB 2.7 does for a database with
    no DBRP mapping (v1/coordinator/statement_executor.go: the statement's
    error, HTTP 200)."""

    def answer(self, request):
        if request.path == "/query":
            return 200, {"results": [{"statement_id": 0, "error": "database not found: %s"
                                      % request.params["db"][0]}]}
        return super().answer(request)


@pytest.fixture
def fake_v2():
    fake = FakeV2Query(token="tok").start()
    yield fake
    fake.stop()


def test_a_2x_source_without_a_dbrp_mapping_fails_with_its_reason(pair, outputs, fake_v2):
    _, b = pair
    src, dst = outputs((fake_v2.url, 'api = "v2"\norg = "acme"\ntoken = "tok"\n'), b.url)
    reported = []
    result = copy_range(src, dst, "telegraf", "autogen", START, END,
                        slice_done=lambda s, e: reported.append((s, e)))
    assert not result.done and reported == [] and result.points == 0
    assert result.reason == "reading from a: database not found: telegraf"
    (query,) = [r for r in fake_v2.requests if r.path == "/query"]
    assert query.params["db"] == ["telegraf"] and query.params["rp"] == ["autogen"]
    assert query.headers["Authorization"] == "Token tok"
    assert query.body.startswith(b"q=SHOW+FIELD+KEYS")
    assert fake_v2.writes == []


def test_a_2x_target_gets_the_points_in_its_bucket_with_its_token(pair, outputs, fake_v2):
    a, _ = pair
    src, dst = outputs(a.url, (fake_v2.url, 'api = "v2"\norg = "acme"\ntoken = "tok"\n'))
    db = new_db([a], rps=["week"])
    lines = [b"m,t=x v=%di %d" % (i, START + i) for i in range(50)]
    write(a, db, lines, rp="week")
    result = copy_range(src, dst, db, "week", START, END, batch_points=20)
    assert result.done and result.points == 50 and result.batches == 3
    writes = fake_v2.writes
    assert {(r.params["org"][0], r.params["bucket"][0], r.params["precision"][0],
             r.headers["Authorization"]) for r in writes} == {("acme", db + "/week", "ns", "Token tok")}
    assert sorted(fake_v2.lines) == sorted(lines)


# ---------------------------------------------------------------------------
# Whatever a client writes


@settings(max_examples=100, derandomize=True, database=None, deadline=timedelta(seconds=60),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(st.lists(valid_line(), min_size=1, max_size=5))
def test_whatever_influxd_took_is_copied_as_it_is_or_said_why_not(pair, outputs, lines):
    """Random lines using every escape of line protocol (in UTF-8 and without
    NUL: JSON and InfluxQL have no room for the others). Where influxd took the body, B ends
    up with what A holds; where the copy says it left something out, what B
    has is still exactly what A has of it."""
    a, b = pair
    body = b"\n".join(line for line, _ in lines).replace(b"\x00", b"0").replace(b"\xff", b"y")
    db = new_db(pair)
    try:
        if a.write(db, body).status != 204:
            return
        src, dst = outputs(a.url, b.url)
        result = copy_range(src, dst, db, "", -2 ** 63 + 2, 2 ** 63 - 2)
        have, want = dump(b, db), dump(a, db)
        if result.done:
            assert have == want, body
        else:
            assert result.reason.startswith("not copied: ") or ": refused: " in result.reason, \
                (body, result)
            assert facts(have) <= facts(want), body
    finally:
        for server in pair:
            server.query('DROP DATABASE "%s"' % db)


def facts(d):
    """Every field value of a dump: (measurement, tags, time, field, value)."""
    out = set()
    for name, (_, series) in d.items():
        for tags, columns, values in series:
            tags = frozenset((k, v) for k, v in (tags or {}).items() if v != "")
            for row in values:
                out.update((name, tags, row[0], c, repr(v)) for c, v in zip(columns[1:], row[1:])
                           if v is not None)
    return out



def test_a_source_that_does_not_answer_is_the_reason(pair, outputs):
    _, b = pair
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]  # nothing listens there once closed
    src, dst = outputs("http://127.0.0.1:%d" % closed, b.url)
    result = copy_range(src, dst, "db", "", START, END)
    assert not result.done and result.points == 0
    assert result.reason.startswith("reading from a: connection failed: "), result.reason
