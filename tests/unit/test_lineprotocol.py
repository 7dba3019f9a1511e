"""The line protocol scanner: splitting, checking and stamping, no sockets.

Each test of scan() and prepare() runs against both scanners, the pure-Python
one and the C one (the ``scanner`` fixture of conftest.py).
"""

import random

import pytest

from influx_relay import lineprotocol
from influx_relay.errors import LineProtocolError
from influx_relay.lineprotocol import PRECISION_NS, pack, stamp

TS = b"1700000000000000000"


@pytest.fixture
def lines_of(scanner):
    return lambda body: scanner.scan(body, TS)[0]


# ---------------------------------------------------------------------------
# Stamping


@pytest.mark.parametrize(
    "precision, expected",
    [
        ("n", b"1700000000123456789"),
        ("ns", b"1700000000123456789"),
        ("u", b"1700000000123456"),
        # 1.x does not know "us": it reads nanoseconds (and the relay stamps them).
        ("us", b"1700000000123456789"),
        ("ms", b"1700000000123"),
        ("s", b"1700000000"),
        ("m", b"28333333"),
        ("h", b"472222"),
    ],
)
def test_stamp_in_every_precision(precision, expected):
    assert stamp(PRECISION_NS[precision], 1700000000123456789) == expected


def test_every_precision_influxdb_accepts_is_known():
    assert set(PRECISION_NS) == {"n", "ns", "u", "us", "ms", "s", "m", "h"}


def test_a_body_whose_lines_all_have_timestamps_comes_back_as_is(scanner):
    body = b"cpu,host=a v=1 1\nmem free=2i 2"
    out, points = scanner.prepare(body, TS)
    assert out is body
    assert points == 2


def test_lines_without_timestamps_are_stamped(lines_of):
    assert lines_of(b"cpu v=1\ncpu v=2 5\nmem,host=a free=3i,used=4i") == [
        b"cpu v=1 " + TS,
        b"cpu v=2 5",
        b"mem,host=a free=3i,used=4i " + TS,
    ]


def test_trailing_spaces_are_not_kept_before_the_stamp(lines_of):
    assert lines_of(b"cpu v=1   ") == [b"cpu v=1 " + TS]


def test_negative_timestamps_count_as_timestamps(lines_of):
    assert lines_of(b"cpu v=1 -5") == [b"cpu v=1 -5"]


def test_blank_lines_comments_and_crlf(scanner):
    body = b"# header\r\n\r\ncpu v=1 1\r\n   \n  # indented comment\ncpu v=2 2\r\n"
    out, points = scanner.prepare(body, TS)
    assert out == b"cpu v=1 1\ncpu v=2 2"
    assert points == 2


def test_crlf_before_a_stamp_is_dropped_when_the_body_has_quotes(lines_of):
    # Found by the property tests: with a quote anywhere in the body, the "\r"
    # of a CRLF line end was kept in an unquoted value, before the stamp.
    body = b'cpu v=1.5\r\nlog msg="x"\r\nmem n=2i\r\n'
    assert lines_of(body) == [b"cpu v=1.5 " + TS, b'log msg="x" ' + TS, b"mem n=2i " + TS]


def test_an_empty_body_has_no_points(scanner):
    assert scanner.prepare(b"", TS) == (b"", 0)
    assert scanner.prepare(b"\n\n# nothing\n", TS)[1] == 0


# ---------------------------------------------------------------------------
# Escapes and quoted strings


def test_escaped_spaces_and_commas_in_keys(lines_of):
    body = b"my\\ cpu,host=a\\ b,path=c:\\\\x v\\ x=1"
    assert lines_of(body) == [body + b" " + TS]
    body = b"my\\ cpu,host=a\\,b v=1 123"
    assert lines_of(body) == [body]


def test_quoted_strings_may_hold_spaces_commas_equals_and_escaped_quotes(lines_of):
    body = b'log msg="a b, c=d \\"quoted\\" \\\\ end",n=1i 42'
    assert lines_of(body) == [body]
    body = b'log msg="a b, c=d"'
    assert lines_of(body) == [body + b" " + TS]


def test_a_quoted_string_may_hold_a_newline(lines_of):
    body = b'log msg="first\nsecond" 1\nlog msg="x"'
    assert lines_of(body) == [b'log msg="first\nsecond" 1', b'log msg="x" ' + TS]


def test_a_quoted_string_that_looks_like_a_timestamp_is_not_one(lines_of):
    body = b'log msg="x 123"'
    assert lines_of(body) == [body + b" " + TS]


def test_quotes_in_tag_values_are_ordinary_characters(lines_of):
    body = b'cpu,host="a" v=1'
    assert lines_of(body) == [body + b" " + TS]


# ---------------------------------------------------------------------------
# Bad lines


@pytest.mark.parametrize(
    "body, lineno, reason",
    [
        (b"cpu", 1, "missing fields"),
        (b"cpu v=1\ncpu,host=a", 2, "missing fields"),
        (b"cpu v=1 1\n\ncpu 123", 3, "missing fields"),
        (b",host=a v=1", 1, "missing measurement"),
        (b'cpu v=1 1\n,host=a s="x"', 2, "missing measurement"),
        (b"cpu v=1 12x", 1, "bad timestamp"),
        (b"cpu v=1 2 3", 1, "invalid field format"),
        (b"cpu v", 1, "missing fields"),
        (b'cpu v="abc', 1, "unbalanced quotes"),
        (b'cpu v=1 1\ncpu,t=\\ x v="a\nb', 2, "unbalanced quotes"),
        (b"cpu =1", 1, "missing field key"),
    ],
)
def test_a_bad_line_is_named_by_number(scanner, body, lineno, reason):
    with pytest.raises(LineProtocolError) as e:
        scanner.prepare(body, TS)
    assert e.value.lineno == lineno
    assert e.value.reason == reason
    assert ("line %d" % lineno) in str(e.value)


def test_the_quoted_bad_line_is_truncated(scanner):
    with pytest.raises(LineProtocolError) as e:
        scanner.prepare(b"x" * 10000, TS)
    assert len(str(e.value)) < 250


def test_invalid_utf8_and_nul_bytes_do_not_crash(scanner, lines_of):
    assert lines_of(b"cpu,host=\xff\xfe v=1 1") == [b"cpu,host=\xff\xfe v=1 1"]
    with pytest.raises(LineProtocolError):
        scanner.prepare(b"\x00\x00\x00", TS)


# ---------------------------------------------------------------------------
# Packing lines into datagrams


def test_pack_keeps_order_and_size_and_ends_lines_with_newlines():
    lines = [b"a" * 10, b"b" * 10, b"c" * 10]
    payloads, dropped = pack(lines, 22)
    assert payloads == [b"a" * 10 + b"\n" + b"b" * 10 + b"\n", b"c" * 10 + b"\n"]
    assert dropped == 0


def test_pack_drops_only_the_line_too_long_for_a_payload():
    payloads, dropped = pack([b"a" * 5, b"x" * 30, b"b" * 5], 20)
    assert payloads == [b"aaaaa\nbbbbb\n"]
    assert dropped == 1


# ---------------------------------------------------------------------------
# The Python scanner's fast path for plain bodies gives what its line-by-line
# scan gives (the C scanner follows the line-by-line scan: this is what lets it)


def _general(body):
    try:
        return lineprotocol._scan_lines(body, TS)
    except LineProtocolError as e:
        return str(e)


def _scanned(body):
    try:
        return lineprotocol.python_scan(body, TS)
    except LineProtocolError as e:
        return str(e)


def test_plain_fast_path_agrees_with_the_line_by_line_scan():
    rng = random.Random(4)
    pieces = [b"cpu", b",host=a", b" ", b"  ", b"v=1", b"=", b",", b"#", b"\t", b"\n", b"123",
              b"-5", b"x", b"i", b"1.5"]
    for _ in range(20000):
        body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        assert _scanned(body) == _general(body), body


def test_plain_fast_path_on_a_telegraf_like_body():
    body = b"".join(
        b"cpu,host=h%d,region=eu usage_user=%d.5,usage_idle=3i%s\n" % (i, i, b" %d" % i if i % 7 else b"")
        for i in range(500)
    )
    assert lineprotocol._scan_plain(body, TS) is not None  # the fast path took it
    assert lineprotocol.python_scan(body, TS) == lineprotocol._scan_lines(body, TS)
