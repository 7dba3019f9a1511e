"""The gap ledger: ranges that merge and shrink, what survives a restart or a
crash, and the time range of a write as the relay sent it."""

import os
import struct

import pytest

try:
    from cramjam import snappy as _snappy  # requirements-dev.txt

    def snappy_block(data):
        return bytes(_snappy.compress_raw(data))
except ImportError:  # Debian's python3-snappy (scripts/test-debian.sh)
    import snappy as _snappy

    def snappy_block(data):
        return _snappy.compress(data)

from influx_relay import ledger as ledger_mod
from influx_relay.config import Endpoints
from influx_relay.errors import RelayError
from influx_relay.ledger import Ledger, extent

S = 10 ** 9
WHO = ("main", "b")


def killed(led):
    """As SIGKILL leaves it: no snapshot, no fsync; the files as they are."""
    led._flusher.kill()
    os.close(led._journal)
    led._journal = None
    led._release()


def spans(led, who=WHO):
    return [(r.db, r.rp, r.start, r.end, r.points) for r in led.ranges(who)]


def test_entries_of_one_database_merge_into_ranges_and_others_stay_apart():
    led = Ledger()
    led.record(WHO, "db", "", 100 * S, 110 * S, 5, "full")
    led.record(WHO, "db", "", 130 * S, 140 * S, 5, "full")   # within a minute: merged
    led.record(WHO, "db", "", 500 * S, 510 * S, 2, "expired")  # far: a range of its own
    led.record(WHO, "db", "week", 100 * S, 110 * S, 1, "full")  # another rp
    led.record(("main", "a"), "db", "", 0, 1, 1, "missed")    # another output
    assert spans(led) == [("db", "", 100 * S, 140 * S, 10), ("db", "", 500 * S, 510 * S, 2),
                          ("db", "week", 100 * S, 110 * S, 1)]
    assert led.ranges(WHO)[0].reasons == {"full": 10}
    assert led.points(WHO) == 13
    assert led.overlaps(WHO, "db", "", 505 * S, 600 * S)
    assert not led.overlaps(WHO, "db", "", 200 * S, 400 * S)
    assert not led.overlaps(WHO, "other", "", 0, 10 ** 19)


def test_past_the_limit_the_nearest_neighbours_merge_and_nothing_is_lost():
    led = Ledger()
    n = ledger_mod.MAX_RANGES + 20
    for i in range(n):
        t = i * 3600 * S + (i % 3) * 600 * S  # an hour apart, some nearer than others
        led.record(WHO, "db", "", t, t + S, 1, "full")
    ranges = led.ranges(WHO)
    assert len(ranges) == ledger_mod.MAX_RANGES
    assert sum(r.points for r in ranges) == n
    for i in range(n):  # every entry still inside some range
        t = i * 3600 * S + (i % 3) * 600 * S
        assert any(r.start <= t and t + S <= r.end for r in ranges), i


def test_a_repaired_stretch_leaves_and_what_is_left_keeps_its_share():
    led = Ledger()
    led.record(WHO, "db", "", 0, 99 * S, 100, "full")
    led.repaired(WHO, "db", "", 0, 49 * S)
    assert spans(led) == [("db", "", 49 * S + 1, 99 * S, 51)]
    led.repaired(WHO, "db", "", 60 * S, 70 * S)
    assert [(r.start, r.end) for r in led.ranges(WHO)] == [(49 * S + 1, 60 * S - 1),
                                                           (70 * S + 1, 99 * S)]
    led.repaired(WHO, "db", "", 0, 100 * S)
    assert led.ranges(WHO) == [] and led.points(WHO) == 0


def test_the_ledger_survives_a_restart(tmp_path):
    led = Ledger(str(tmp_path))
    led.record(WHO, "db", "rp", 10 * S, 20 * S, 7, "flushed")
    led.record(WHO, "db", "rp", 1000 * S, 1001 * S, 1, "rejected")
    led.repaired(WHO, "db", "rp", 1000 * S, 1001 * S)
    led.close()
    again = Ledger(str(tmp_path))
    assert spans(again) == [("db", "rp", 10 * S, 20 * S, 7)]
    assert again.ranges(WHO)[0].reasons == {"flushed": 7}
    again.close()


def test_a_killed_relay_loses_no_gap_and_a_torn_last_line_is_skipped(tmp_path):
    led = Ledger(str(tmp_path))
    led.record(WHO, "db", "", 10 * S, 20 * S, 3, "full")
    # SIGKILL: no close(), no snapshot; the journal is in the page cache. And a
    # last line torn by a power cut.
    killed(led)
    with open(tmp_path / "ledger.journal", "ab") as f:
        f.write(b'{"add":[["main","b"],"db","",5')
    again = Ledger(str(tmp_path))
    assert spans(again) == [("db", "", 10 * S, 20 * S, 3)]
    again.close()


def test_what_a_memory_buffer_held_at_a_crash_becomes_a_gap(tmp_path):
    led = Ledger(str(tmp_path))
    led.expose(WHO, "db", "", 100 * S, 100 * S, 1)
    led.expose(WHO, "db", "", 101 * S, 102 * S, 1)  # within the window: not journaled again
    lines = (tmp_path / "ledger.journal").read_bytes().splitlines()
    assert len(lines) == 1
    led.expose(WHO, "db", "", 50 * S, 51 * S, 1)    # earlier: the window widens
    killed(led)  # with the buffer never drained
    again = Ledger(str(tmp_path))
    (r,) = again.ranges(WHO)
    assert r.start == 50 * S and r.end >= 102 * S and r.reasons == {"crash": 1}
    again.close()
    # A buffer that drained before the stop leaves nothing.
    led = Ledger(str(tmp_path / "other"))
    led.expose(WHO, "db", "", 100 * S, 100 * S, 1)
    led.covered(WHO)
    killed(led)
    again = Ledger(str(tmp_path / "other"))
    assert again.ranges(WHO) == []


def test_one_relay_per_state_dir(tmp_path):
    led = Ledger(str(tmp_path))
    with pytest.raises(RelayError, match="in use by another relay process"):
        Ledger(str(tmp_path))
    led.close()
    Ledger(str(tmp_path)).close()  # free again once closed


def test_forget_drops_an_outputs_gaps(tmp_path):
    led = Ledger(str(tmp_path))
    led.record(WHO, "db", "", 0, S, 4, "damaged")
    assert led.forget(WHO) == 4
    led.close()
    assert Ledger(str(tmp_path)).ranges(WHO) == []


# -- extent --------------------------------------------------------------------------

E = Endpoints()


@pytest.mark.parametrize("precision, unit", [("n", 1), ("ns", 1), ("us", 1), ("u", 1000),
                                             ("ms", 10 ** 6), ("s", S), ("h", 3600 * S)])
def test_the_extent_of_a_v1_write_in_its_precision(precision, unit):
    body = b'cpu,host=a v=1 30\nlog msg="a b c 99" 10\ncpu v=2 20   '
    key = ("/write", "db=telegraf&rp=week&precision=%s" % precision, ())
    assert extent(E, key, body) == ("telegraf", "week", 10 * unit, 30 * unit, 3)


def test_the_extent_of_a_v2_write_and_a_default_retention_policy():
    key = ("/api/v2/write", "org=o&bucket=telegraf/autogen&precision=us", ())
    assert extent(E, key, b"cpu v=1 5\ncpu v=1 7") == ("telegraf", "autogen", 5000, 7000, 2)
    assert extent(E, ("/write", "db=x", ()), b"cpu v=1 5")[:2] == ("x", "")


def _write_request(series):
    def varint(n):
        out = b""
        while True:
            b = n & 0x7F
            n >>= 7
            if n:
                out += bytes([b | 0x80])
            else:
                return out + bytes([b])

    def field(number, payload):
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    msg = b""
    for name, samples in series:
        label = field(1, b"__name__") + field(2, name)
        ts = field(1, label)
        for value, t in samples:
            ts += field(2, b"\x09" + struct.pack("<d", value) + b"\x10" + varint(t))
        msg += field(1, ts)
    return msg


def test_the_extent_of_a_prometheus_remote_write_real_snappy():
    series = [(b"node_load%d" % i, [(0.5, 1600000000000 + j) for j in range(20)])
              for i in range(30)]
    raw = _write_request(series)
    body = snappy_block(raw)
    assert len(body) < len(raw) / 2  # back-references: a real compressed body
    assert ledger_mod._unsnappy(body) == raw
    key = ("/api/v1/prom/write", "db=prom", ())
    assert extent(E, key, body) == ("prom", "", 1600000000000 * 10 ** 6,
                                    1600000000019 * 10 ** 6, 600)
    assert extent(E, key, b"\xff\xff garbage") is None
