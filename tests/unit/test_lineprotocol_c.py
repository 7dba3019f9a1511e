"""The C line scanner against the pure-Python one, byte for byte.

``lineprotocol.python_scan`` is the reference: for every body the C ``scan``
must return the same lines and the same ``changed``, or raise the same
LineProtocolError (line number, quoted line, reason, message); the C
``prepare`` the same body (the very object given, when Python gives it back)
and the same count. Bodies: random bytes, the bytes that matter to the
scanner in any order, the property tests' valid and mixed bodies, big ones,
and the hostile ones.
"""

import ctypes
import os
import random
import subprocess
import sys
from datetime import timedelta

import pytest
from hypothesis import given, settings, strategies as st

from influx_relay import lineprotocol
from influx_relay.errors import LineProtocolError

from .conftest import c_module
from .test_lineprotocol_properties import BOUNDED as PROPERTIES_BOUNDED, FUZZ, mixed_body, valid_body, valid_line

TS = b"1700000000000000000"

# The property tests' bounds, with more examples: each is quick here.
BOUNDED = settings(PROPERTIES_BOUNDED, max_examples=FUZZ or 1000, deadline=timedelta(seconds=5))


def scanned(scan, body, ts=TS):
    try:
        lines, changed = scan(body, ts)
    except LineProtocolError as e:
        return ("error", e.lineno, e.line, e.reason, str(e))
    return ("ok", lines, changed)


def prepared(prepare, body, ts=TS):
    try:
        out, points = prepare(body, ts)
    except LineProtocolError as e:
        return ("error", e.lineno, e.line, e.reason, str(e))
    return ("ok", out, points, out is body)


def exact(body):
    """``body`` in a buffer of its very size (bytes objects have a NUL after
    their end): under AddressSanitizer a read past its end is caught."""
    return memoryview((ctypes.c_char * len(body)).from_buffer_copy(body))


def assert_same(body, ts=TS):
    """The C scanner gives what the Python one gives; returns that."""
    c = c_module()
    expected = scanned(lineprotocol.python_scan, body, ts)
    assert scanned(c.scan, body, ts) == expected, body
    assert scanned(c.scan, exact(body), ts) == expected, body
    assert prepared(c.prepare, body, ts) == prepared(lineprotocol.python_prepare, body, ts), body
    return expected


# ---------------------------------------------------------------------------
# Bodies of every kind

# Each byte and pair that one of the scanner's paths decides on: spaces and tabs
# (a tab given back by "[ \t]*" may start the key), "\v" (blank to strip() only),
# quotes, escapes (of a newline, a space, a quote), "\r" before "\n" or not, "=",
# "," and "#", digits and signs, NUL and a byte that is not UTF-8.
UNITS = [b" ", b" ", b"  ", b"\t", b"\v", b",", b"=", b'"', b"\\", b"\n", b"\n", b"\r",
         b"\r\n", b"#", b"\x00", b"\xff", b"a", b"cpu", b"v", b"1", b"-", b"i", b"123",
         b"-5", b"v=1", b" 5", b'"x"', b"\\\n", b"\\ ", b"\\,", b'\\"', b"\\\\", b"=\"",
         b"cpu v=1", b"m,t=a f=1i 7", b'log s="a b\nc" 9']
BODY = st.lists(st.sampled_from(UNITS), max_size=40).map(b"".join)


@BOUNDED
@given(st.binary(max_size=300))
def test_random_bytes(body):
    assert_same(body)


@BOUNDED
@given(BODY)
def test_bodies_of_the_bytes_that_matter(body):
    assert_same(body)


@settings(BOUNDED, max_examples=FUZZ or 300)
@given(st.one_of(valid_body().map(lambda case: case[0]), mixed_body()))
def test_valid_and_mixed_bodies(body):
    assert_same(body)


@settings(BOUNDED, max_examples=FUZZ or 100)
@given(st.lists(st.one_of(valid_line().map(lambda item: item[0]), BODY), min_size=1,
                max_size=8),
       st.randoms(use_true_random=False), st.sampled_from([b"\n", b"\r\n"]))
def test_big_bodies(pieces, rng, ending):
    """A few hundred lines, each one of a handful drawn (drawing them all would be slow)."""
    lines = [rng.choice(pieces) for _ in range(rng.randint(100, 400))]
    assert_same(ending.join(lines))
    assert_same(ending.join(lines) + ending)


def test_many_small_random_bodies():
    """Quicker than hypothesis, so many more: 30000 bodies of up to 16 units."""
    rng = random.Random(15)
    for _ in range(30000):
        assert_same(b"".join(rng.choice(UNITS) for _ in range(rng.randint(0, 16))))


def test_timestamps_byte_by_byte():
    """The C scanner checks digits eight at a time: a timestamp of any length with
    one byte that is not a digit, anywhere, in both paths of the scanner."""
    for length in range(1, 25):
        for at in range(length):
            for bad in (b"/", b":", b"a", b"-", b"\x00", b"\xff", b"\xb0", b"\x3a"):
                ts = b"1" * at + bad + b"2" * (length - at - 1)
                for body in (b"cpu v=1 " + ts, b"cpu\\ x v=1 " + ts, b'cpu s="x" ' + ts):
                    assert_same(body)
                    assert_same(body + b"\n")


def test_every_precision_of_stamp():
    for ts in (b"1", b"-1", b"1700000000", b"", b"x" * 64):
        assert_same(b"cpu v=1\nmem v=2 3\nlog s=\"x\"", ts)
        assert_same(b"cpu v=1\nmem v=2 3", ts)


# ---------------------------------------------------------------------------
# Cases where the Python scanner's own paths decide differently: the C one
# follows each (the values below are what the Python scanner gives).


@pytest.mark.parametrize("body, expected", [
    # "[ \t]*" gives back a tab, and the key starts with it: accepted.
    (b"\t,x v=1", ("ok", [b"\t,x v=1 " + TS], True)),
    (b"\t\t,x v=1 5", ("ok", [b"\t\t,x v=1 5"], False)),
    (b"\t,x\\ y v=1", ("ok", [b"\t,x\\ y v=1 " + TS], True)),
    # ...but not past a space in the blank prefix.
    (b" \t ,x\\ y v=1", ("error", 1, b" \t ,x\\ y v=1", "missing measurement",
                         "unable to parse line 1 ' \\t ,x\\\\ y v=1': missing measurement")),
    # One "\r" is a line end's; a second one stays (before the stamp).
    (b"cpu v=1\r\r\n", ("ok", [b"cpu v=1\r " + TS], True)),
    (b'cpu v=1\r\r\nq s="x" 1', ("ok", [b"cpu v=1\r " + TS, b'q s="x" 1'], True)),
    # Split on spaces (no quote or backslash in the body): an empty value passes...
    (b"cpu v= 1", ("ok", [b"cpu v= 1"], False)),
    # ...the full pattern (a quote elsewhere) refuses it.
    (b'cpu v= 1\nq s="x" 1', ("error", 1, b"cpu v= 1", "invalid field format",
                              "unable to parse line 1 'cpu v= 1': invalid field format")),
    # A body ending in its newline comes back whole when the general scan keeps it.
    (b'q s="x" 1\n', ("ok", [b'q s="x" 1'], False)),
    (b"q v=1 1\n", ("ok", [b"q v=1 1"], True)),
    # A "#" after a tab is a comment to one path, a key to the other.
    (b"\t#x y=1", ("ok", [b"\t#x y=1 " + TS], True)),
    (b"\t#x", ("error", 1, b"\t#x", "missing fields",
               "unable to parse line 1 '\\t#x': missing fields")),
    # A line that InfluxDB's scanner runs on past a newline (a leading space, then
    # "=" and a quote in the key open a string), where the pattern matches only up
    # to that newline: refused, and named by its first physical line.
    (b' m=x"a v=1 1\nq" 2', ("error", 1, b' m=x"a v=1 1', "unbalanced quotes",
                             "unable to parse line 1 ' m=x\"a v=1 1': unbalanced quotes")),
    # A backslash among the last two bytes escapes nothing.
    (b'q s="x" 1\ncpu v=\\', ("error", 2, b"cpu v=\\", "invalid field format",
                             "unable to parse line 2 'cpu v=\\\\': invalid field format")),
])
def test_the_python_scanners_quirks_are_kept(body, expected):
    assert scanned(lineprotocol.python_scan, body) == expected  # the reference, as recorded
    assert assert_same(body) == expected


# ---------------------------------------------------------------------------
# Big and hostile bodies: the same outcome, and no read past the body (see
# scripts/test-scanner-asan.sh: these tests under AddressSanitizer).

@pytest.mark.parametrize("body", [
    b'cpu v="' + b"a" * 1_000_000,
    b"cpu v=\"a\" 1\n" * 50_000 + b'cpu v="',
    b'cpu v="a\\' * 200_000,
    b"cpu " + b"v=1," * 200_000,
    b"cpu" + b"\\ " * 300_000 + b"v=1",
    b"\\" * 300_001,
    b"\\\n" * 300_000,
    b'cpu v="a",' * 100_000 + b"w",
    b"\n" * 1_000_000,
    b"\r\n" * 500_000,
    b" " * 1_000_000 + b"cpu v=1",
    b"\t" * 100_000 + b" cpu v=1",
    b"\t \t" * 30_000 + b"cpu v=1",
    b"\x00" * 1_000_000,
    b"cpu,host=a v=1 1\n" * 100_000,
    b"cpu,host=a v=1\n" * 100_000,
    b"cpu\\ x,host=a v=1\n" * 100_000,
    b'cpu,host=a s="x y" 1\n' * 100_000,
], ids=lambda body: "%r..%d" % (body[:12], len(body)))
def test_big_and_hostile_bodies(body):
    assert_same(body)


def test_a_body_is_never_read_past_its_end():
    """Bodies that end where the scanner would look one byte further: sliced out
    of a bigger buffer, whose next byte would change the answer if read."""
    c = c_module()
    whole = b'cpu v="a\\" 1\ncpu\\ v=1\ncpu v=1 12\n'
    for end in range(len(whole) + 1):
        body = memoryview(whole)[:end]
        expected = scanned(lineprotocol.python_scan, bytes(body))
        assert scanned(c.scan, body) == expected, bytes(body)


# ---------------------------------------------------------------------------
# times(): the time range of a forwarded body, for the gap ledger

TIME_UNITS = UNITS + [b"9223372036854775807", b"9223372036854775808", b"-9223372036854775808",
                      b"-9223372036854775809", b"18446744073709551616", b"0000000000000000000000012",
                      b"--1", b"1-", b" \t\r", b"\t5"]
TIME_BODY = st.lists(st.sampled_from(TIME_UNITS), max_size=40).map(b"".join)


@BOUNDED
@given(st.one_of(TIME_BODY, st.binary(max_size=200)))
def test_times_is_python_times(body):
    c = c_module()
    expected = lineprotocol.python_times(body)
    assert c.times(body) == expected, body
    assert c.times(exact(body)) == expected, body


@settings(BOUNDED, max_examples=FUZZ or 200)
@given(valid_body())
def test_times_of_a_prepared_body_are_its_points(case):
    """What the relay forwards: every line stamped. times() gives the range of
    the stamps exactly, and one count per point, unless a string field holds a
    newline (then a wider range, a higher count: never narrower)."""
    c = c_module()
    body, _ = case
    lines, _ = lineprotocol.python_scan(body, TS)
    # A time past int64 passes the relay's check, but no InfluxDB stores it (it
    # refuses the line): it is no point of a range.
    lines = [line for line in lines
             if -2 ** 63 <= int(line.rstrip(b" ").rsplit(b" ", 1)[1]) < 2 ** 63]
    if not lines:
        assert c.times(b"\n".join(lines)) is None
        return
    stamps = [int(line.rstrip(b" ").rsplit(b" ", 1)[1]) for line in lines]
    start, end, count = c.times(b"\n".join(lines))
    assert start <= min(stamps) and end >= max(stamps) and count >= len(lines)
    if not any(b"\n" in line for line in lines):
        assert (start, end, count) == (min(stamps), max(stamps), len(lines))


def test_times_edges():
    c = c_module()
    assert c.times(b"") is None and c.times(b"\n\n") is None
    assert c.times(b"m f=1 -9223372036854775808\nm f=2 9223372036854775807 \r\n") == (
        -2 ** 63, 2 ** 63 - 1, 2)
    assert c.times(b"m f=1 9223372036854775808\nm f=1 -") is None
    assert c.times(b'm f="a\n12" 5') == (5, 5, 1)
    with pytest.raises(TypeError):
        c.times("m f=1 5")


# ---------------------------------------------------------------------------
# Which scanner the relay uses


def _implementation(env):
    code = ("from influx_relay import lineprotocol as l; "
            "print(l.IMPLEMENTATION, l.scan.__module__, l.PYTHON_REASON)")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root, **env)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         timeout=60, check=True)
    return out.stdout.decode().split(None, 2)


def test_the_c_scanner_is_used_when_built():
    c_module()
    impl, module, reason = _implementation({"INFLUX_RELAY_PURE_PYTHON": ""})
    assert (impl, module, reason.strip()) == ("c", "influx_relay._lineprotocol", "None")


def test_influx_relay_pure_python_chooses_the_python_scanner():
    impl, module, reason = _implementation({"INFLUX_RELAY_PURE_PYTHON": "1"})
    assert (impl, module) == ("python", "influx_relay.lineprotocol")
    assert "INFLUX_RELAY_PURE_PYTHON" in reason


def test_wrong_arguments_are_a_type_error():
    c = c_module()
    with pytest.raises(TypeError):
        c.scan(b"cpu v=1")
    with pytest.raises(TypeError):
        c.prepare("cpu v=1", TS)
    with pytest.raises(TypeError):
        c.scan(b"cpu v=1", 5)
