"""The pure parts of a repair (influx_relay/repair.py): line protocol rebuilt
from /query answers, as influxd 1.6 reads it back; InfluxQL quoting; the
chunked JSON reader; the rate limiter.

The escaping is checked against small models of influxd 1.6's own rules
(models/points.go, pkg/escape), written here independently of the code under
test: what each part's unescaping turns the bytes back into, and where its
scanner ends the part. tests/system/test_repair_copy.py checks the same against
a real influxd.
"""

import decimal
import json
import math
import re
import struct
from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

from influx_relay import config, repair
from influx_relay.repair import (
    CopyFailed,
    Measurement,
    PointRate,
    field_key,
    json_objects,
    measurement_key,
    quote_ident,
    series_key,
    series_lines,
    series_pieces,
    source_name,
    splits_cleanly,
    string_value,
    tag_part,
)

BOUNDED = settings(max_examples=300, derandomize=True, database=None, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------
# Models of influxd 1.6's rules


def unescape(raw, chars):
    """escape.Unescape (measurements: ',"= '), unescapeTag (', ='), AppendUnescaped
    (field keys: ',"= '): a backslash before one of ``chars`` goes, left to right."""
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw) and raw[i + 1] in chars:
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(raw[i])
            i += 1
    return "".join(out)


def unescape_string(raw):
    """unescapeStringField: "\\\\" and '\\"' lose their backslash."""
    return unescape(raw, '\\"')


def unescaped_stops(raw, stops):
    """scanMeasurement, scanTagsKey/Value, scanTo: a character is escaped when a
    backslash precedes it. The positions of the stops that are not."""
    return [i for i, c in enumerate(raw) if c in stops and (i == 0 or raw[i - 1] != "\\")]


def paired_stops(raw, stops):
    """scanFields: a backslash takes the next character with it, two by two."""
    out, i = [], 0
    while i < len(raw):
        if raw[i] == "\\" and i + 1 < len(raw):
            i += 2
            continue
        if raw[i] in stops:
            out.append(i)
        i += 1
    return out


# Text made of what is hard to escape: separators, quotes, backslashes, newlines.
TRICKY = st.text(st.sampled_from(list(' ,="\\\nabé💩#\t\'')), min_size=1, max_size=12)


def lp(b):
    return b.decode("utf-8")


# ---------------------------------------------------------------------------
# Names


@pytest.mark.parametrize("name, expected", [
    ("cpu", b"cpu"),
    ("a b,c", b"a\\ b\\,c"),
    ('q"u=o', b'q"u=o'),                 # as influxd's own series key has it
    ("a\\b", b"a\\b"),                   # a backslash before an ordinary character stays
    ('a\\"=', b'a\\\\"\\='),             # with a backslash, quotes and "=" escaped too
    ("a\\,b", b"a\\\\,b"),               # the name's backslash, then the escaped comma
    ("x\\\ny", b"x\\\ny"),               # an escaped newline, as influxd keeps it
    (" lead", b"\\ lead"),
])
def test_a_measurement_is_escaped_as_influxd_reads_it_back(name, expected):
    assert measurement_key(name) == expected
    raw = lp(expected)
    assert unescape(raw, ',"= ') == name
    assert unescaped_stops(raw, ", ") == []


@pytest.mark.parametrize("name, why", [
    ("ends\\", "ends with a backslash"),
    ("a\nb", "newline that no backslash escapes"),
    ("a\\\\\nb", "newline that no backslash escapes"),  # the backslashes pair up
    ("#comment", "starts with"),
    ("\tab", "starts with"),
    ("", "empty"),
    ("bad\ufffd", "U+FFFD"),
])
def test_a_measurement_line_protocol_cannot_express_is_refused(name, why):
    with pytest.raises(CopyFailed, match=re.escape(why)):
        measurement_key(name)


@pytest.mark.parametrize("text, expected", [
    ("host", b"host"),
    ("a b,c=d", b"a\\ b\\,c\\=d"),
    ('say "hi"', b'say\\ "hi"'),         # a quote stays: influxd would keep a backslash before one
    ("a\\,", b"a\\\\,"),
    ("x\\\ny", b"x\\\ny"),
])
def test_a_tag_key_or_value_is_escaped_as_influxd_reads_it_back(text, expected):
    assert tag_part(text) == expected
    raw = lp(expected)
    assert unescape(raw, ", =") == text
    assert unescaped_stops(raw, ", =") == []


@pytest.mark.parametrize("name, expected", [
    ("value", b"value"),
    ("a b,c=d", b"a\\ b\\,c\\=d"),
    ('q"', b'q"'),
    ('a\\"', b'a\\\\"'),                 # after a backslash, a quote is escaped
    ("a\\\\ b", b"a\\\\\\ b"),           # two backslashes, then the escaped space
])
def test_a_field_key_is_escaped_as_influxd_reads_it_back(name, expected):
    assert field_key(name) == expected
    raw = lp(expected)
    assert unescape(raw, ',"= ') == name
    assert paired_stops(raw, ", =") == []


def test_a_field_key_with_an_odd_run_of_backslashes_before_a_separator_is_refused():
    # influxd's field scanner pairs "\\" and then meets the bare "=".
    for name in ("a\\=b", "a\\ b", "a\\\\\\,b"):
        with pytest.raises(CopyFailed, match="odd number of backslashes"):
            field_key(name)


@BOUNDED
@given(TRICKY)
def test_whatever_a_name_holds_it_is_written_so_or_refused(name):
    """Every part either reads back as the same text, within its one token,
    or is refused: never written as something else."""
    for encode, chars, scan in ((measurement_key, ',"= ', lambda r: unescaped_stops(r, ", ")),
                                (tag_part, ", =", lambda r: unescaped_stops(r, ", =")),
                                (field_key, ',"= ', lambda r: paired_stops(r, ", ="))):
        try:
            raw = lp(encode(name))
        except CopyFailed:
            continue
        assert unescape(raw, chars) == name
        assert scan(raw) == []


@given(st.text(max_size=20))
@BOUNDED
@example('a"b\\c\nd\\')
def test_a_string_field_reads_back_as_the_same_text(text):
    raw = lp(string_value(text))
    assert raw[0] == raw[-1] == '"'
    assert unescape_string(raw[1:-1]) == text
    # no quote inside ends the string: each is escaped by a backslash of its own
    assert paired_stops(raw[1:-1], '"') == []


def test_series_key_drops_empty_tags_and_sorts_the_rest():
    key = series_key(measurement_key("m"), {"z": "1", "a b": "x,y", "gone": ""})
    assert key == b"m,a\\ b=x\\,y,z=1"
    assert series_key(b"m", {"t": ""}) == b"m"


def test_quote_ident_escapes_what_influxql_reads_in_an_identifier():
    assert quote_ident('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert source_name("db", "", "m") == '"db".."m"'
    assert source_name("db", "week", 'odd"one') == '"db"."week"."odd\\"one"'


def test_the_select_names_each_field_with_its_type():
    m = Measurement("db", "rp", "cpu", [("idle", "float"), ("n", "integer"), ("s", "string"),
                                         ("ok", "boolean")])
    assert m.statement(5, 10) == (
        'SELECT "idle"::float,"n"::integer,"s"::string,"ok"::boolean FROM "db"."rp"."cpu" '
        "WHERE time >= 5 AND time <= 10 GROUP BY *")
    assert Measurement("db", "", "m", [("f", "float")]).statement(-5, 0).endswith(
        "WHERE time >= -5 AND time <= 0 GROUP BY *")


@pytest.mark.parametrize("fields, why", [
    ([("f", "float"), ("f", "integer")], "differs between shards"),
    ([("f", "geometry")], "has type 'geometry'"),
    ([("a\x00b", "float")], "NUL"),
])
def test_a_measurement_that_cannot_be_copied_faithfully_is_refused(fields, why):
    with pytest.raises(CopyFailed, match=why):
        Measurement("db", "", "m", fields)
    with pytest.raises(CopyFailed, match="NUL"):
        Measurement("db", "", "m\x00", [("f", "float")])


# ---------------------------------------------------------------------------
# Values


def go_json_float(x):
    """How Go's encoding/json writes a float64 (influxd's answers): the shortest
    digits, as a plain decimal for 1e-6 <= |x| < 1e21, else in e-notation with
    the exponent's leading zero dropped."""
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    d = decimal.Decimal(repr(x))
    if 1e-6 <= abs(x) < 1e21:
        text = format(d, "f")
        return text[:-2] if text.endswith(".0") else text
    sign, digits, exp = d.as_tuple()
    mantissa = "%d" % digits[0] + ("." + "".join("%d" % n for n in digits[1:]) if len(digits) > 1 else "")
    e10 = len(digits) - 1 + exp
    text = "%s%se%s%02d" % ("-" if sign else "", mantissa, "-" if e10 < 0 else "+", abs(e10))
    return re.sub(r"e-0(\d)$", r"e-\1", text)


def test_the_go_float_model_matches_what_influxd_sends():
    # Seen from influxd 1.6.7: 1e21, 1.2345678901234568e20, -0.0, 2.333333
    assert go_json_float(1e21) == "1e+21"
    assert go_json_float(1.2345678901234568e20) == "123456789012345680000"
    assert go_json_float(-0.0) == "-0"
    assert go_json_float(2.333333) == "2.333333"
    assert go_json_float(1.5e-7) == "1.5e-7"
    assert go_json_float(1.0) == "1"


def written_float(json_text):
    """The float field influxd would store from our line, given its JSON."""
    (value,) = repair._decode(b"[" + json_text.encode() + b"]")
    text = repair.float_value(value)
    assert not text.endswith(b"i")
    return float(text)


@BOUNDED
@given(st.floats(allow_nan=False, allow_infinity=False))
@example(-0.0)
@example(5e-324)
@example(1.7976931348623157e308)
@example(123456789012345680000.0)
@example(9007199254740993.0)
def test_a_float_is_written_as_the_same_double(x):
    got = written_float(go_json_float(x))
    assert struct.pack(">d", got) == struct.pack(">d", x)  # bit for bit, the sign of 0 too


@pytest.mark.parametrize("value, expected", [
    (0, b"0i"), (-9223372036854775808, b"-9223372036854775808i"),
    (9223372036854775807, b"9223372036854775807i"), (-0.0, b"0i"),
])
def test_an_integer_keeps_its_i_and_every_digit(value, expected):
    assert repair.integer_value(value) == expected


def test_other_types_are_written_in_their_own_syntax():
    assert repair.boolean_value(True) == b"true"
    assert repair.boolean_value(False) == b"false"
    assert repair.unsigned_value(18446744073709551615) == b"18446744073709551615u"
    assert repair.float_value(3) == b"3.0"  # a whole float: not an integer
    for write, value in ((repair.boolean_value, 1), (repair.integer_value, 1.5),
                         (repair.float_value, True), (repair.FIELD_TYPES["string"], 5),
                         (repair.unsigned_value, -1)):
        with pytest.raises(CopyFailed):
            write(value)


# ---------------------------------------------------------------------------
# Points, from an answer's series


def lines_of(m, series):
    left = []
    out = list(series_lines(m, series, lambda reason, n: left.append((reason, n))))
    return out, left


def test_a_series_becomes_one_line_per_point_with_every_field_type():
    m = Measurement("db", "", "cpu load", [("f", "float"), ("n", "integer"), ("s", "string"),
                                            ("b", "boolean")])
    series = {"name": "cpu load", "tags": {"host": "a,b", "dc": ""},
              "columns": ["time", "f", "n", "s", "b"],
              "values": [[1, 1, 2, 'x "y"\n\\', True],
                         [2, None, -5, None, None],
                         [3, None, None, None, None],  # nothing to write
                         [4, 0.1, None, "", False]]}
    out, left = lines_of(m, series)
    assert out == [
        (b'cpu\\ load,host=a\\,b f=1.0,n=2i,s="x \\"y\\"\n\\\\",b=true 1', False),
        (b"cpu\\ load,host=a\\,b n=-5i 2", False),
        (b'cpu\\ load,host=a\\,b f=0.1,s="",b=false 4', False),
    ]
    assert left == []


def test_what_cannot_be_written_faithfully_is_left_out_and_said_so():
    m = Measurement("db", "", "m", [("s", "string")])
    out, left = lines_of(m, {"tags": {}, "columns": ["time", "s"],
                             "values": [[1, "ok"], [2, "bad \ufffd"]]})
    assert out == [(b'm s="ok" 1', False)]
    assert left == [("measurement 'm': a string field 'bad \ufffd' holds U+FFFD, as influxd "
                     "sends bytes that are not UTF-8: what the source holds cannot be told", 1)]
    out, left = lines_of(m, {"tags": {"t": "ends\\"}, "columns": ["time", "s"],
                             "values": [[1, "a"], [2, "b"]]})
    assert out == [] and left[0][1] == 2 and "ends with a backslash" in left[0][0]


def test_a_line_influxd_would_not_split_from_the_next_goes_alone_or_is_left_out():
    # The tag value "x\ y": influxd's splitter pairs its backslash with the
    # escape's and takes the space for the end of the key; it then counts the
    # "=" of the tag key "k\=z" and takes the quote of its value for a string.
    # influxd 1.6.7 stores such a line written alone, and refuses a body where
    # another line follows it ("point is invalid").
    m = Measurement("db", "", "plain", [("f", "string")])
    series = {"tags": {"a": "x\\ y", "k\\=z": '"q'}, "columns": ["time", "f"],
              "values": [[5, "alone"]]}
    out, left = lines_of(m, series)
    assert out == [(b'plain,a=x\\\\ y,k\\\\=z="q f="alone" 5', True)] and left == []
    series["values"] = [[5, "a\nnewline"]]  # a newline in its string would end it early
    out, left = lines_of(m, series)
    assert out == [] and "cannot be written as line protocol" in left[0][0]


def test_an_answer_of_another_shape_fails():
    m = Measurement("db", "", "m", [("f", "float")])
    with pytest.raises(CopyFailed, match="2 columns for 1 fields"):
        lines_of(m, {"columns": ["time", "f", "g"], "values": [[1, 1, 2]]})
    with pytest.raises(CopyFailed, match="not an integer"):
        lines_of(m, {"columns": ["time", "f"], "values": [["2024-01-01T00:00:00Z", 1]]})


def test_influxd_line_splitter_model():
    assert repair.influx_line_end(b'm f="a\nb" 1\nm f=2 2') == len(b'm f="a\nb" 1')
    assert repair.influx_line_end(b"m\\\nx f=1 1\nn f=1") == len(b"m\\\nx f=1 1")
    assert splits_cleanly(b'm,t=a f="x\\"\ny" 1')
    assert not splits_cleanly(b'm f="open 1')


# ---------------------------------------------------------------------------
# The chunked answer

ANSWER = (b'{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"t":"a"},'
          b'"columns":["time","f"],"values":[[1,1.5],[2,-0]],"partial":true}],"partial":true}]}\n'
          b'{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"t":"a"},'
          b'"columns":["time","f"],"values":[[3,2]]}],"partial":true}]}\n'
          b'{"results":[{"statement_id":0,"series":[{"name":"m","tags":{"t":"b"},'
          b'"columns":["time","f"],"values":[[4,1e+21]]}]}]}\n'
          b'{"results":[{"statement_id":1}]}\n')


def test_the_reader_parses_each_line_whatever_the_pieces():
    whole = [json.loads(line) for line in ANSWER.splitlines()]
    for cut in range(1, len(ANSWER)):
        pieces = [ANSWER[:cut], ANSWER[cut:]]
        assert list(json_objects(iter(pieces))) == whole, cut
    one_byte = [ANSWER[i:i + 1] for i in range(len(ANSWER))]
    assert list(json_objects(iter(one_byte))) == whole
    assert list(json_objects(iter([ANSWER.rstrip(b"\n")]))) == whole  # no last newline


def test_a_negative_zero_stays_a_float_and_everything_else_keeps_its_type():
    (obj,) = json_objects([b'[-0, 0, -0.5, 10, 1e+21, "-0,"]\n'])
    assert obj == [0.0, 0, -0.5, 10, 1e21, "-0,"]
    assert [type(v) for v in obj] == [float, int, float, int, float, str]
    assert math.copysign(1, obj[0]) == -1


def test_a_line_too_long_or_not_json_fails():
    with pytest.raises(CopyFailed, match="longer than 10 bytes"):
        list(json_objects(iter([b"{" * 6, b"{" * 6]), limit=10))
    with pytest.raises(CopyFailed, match="not JSON"):
        list(json_objects([b"<html>\n"]))


def test_series_continued_across_chunks_come_piece_by_piece_with_their_tags():
    pieces = list(series_pieces(json_objects([ANSWER]), 2))
    assert [(sid, s["tags"]["t"], [r[0] for r in s["values"]]) for sid, s in pieces] == [
        (0, "a", [1, 2]), (0, "a", [3]), (0, "b", [4])]


def test_errors_in_an_answer_fail_with_influxd_s_words():
    statement_error = b'{"results":[{"statement_id":0,"error":"database not found: x"}]}\n'
    with pytest.raises(CopyFailed, match="database not found: x"):
        list(series_pieces(json_objects([statement_error]), 1))
    with pytest.raises(CopyFailed, match="timeout"):
        list(series_pieces(json_objects([b'{"error":"timeout"}\n']), 1))
    cut_short = ANSWER.split(b"\n")[0] + b"\n"  # its last result never came
    with pytest.raises(CopyFailed, match="ended before its last result"):
        list(series_pieces(json_objects([cut_short]), 1))
    with pytest.raises(CopyFailed, match=r"\(1 of 2 statements\)"):
        list(series_pieces(json_objects([b'{"results":[{"statement_id":0}]}\n']), 2))


# ---------------------------------------------------------------------------
# Requests


def test_statements_are_grouped_by_count_and_by_length():
    many = [Measurement("db", "", "m%d" % i, [("f", "float")]) for i in range(150)]
    groups = list(repair._groups(many))
    assert [len(g) for g in groups] == [64, 64, 22]
    wide = [Measurement("db", "", "w%d" % i, [("f%d" % j, "float") for j in range(4500)])
            for i in range(3)]
    assert [len(g) for g in repair._groups(wide)] == [1, 1, 1]  # each over 64 KB of text: alone


def output(text):
    cfg = config.loads('[[http]]\nname = "t"\nbind-addr = "127.0.0.1:1"\n'
                       '[[http.output]]\nname = "x"\nlocation = "http://127.0.0.1:2/"\n' + text)
    return SimpleNamespace(cfg=cfg.http[0].outputs[0])


def test_the_write_goes_to_the_target_s_api_as_the_fan_out_maps_it():
    auth = {"Authorization": "Basic dTpzZWNyZXQ="}  # u:secret
    assert repair._write_request(output(""), "db", "week", auth, None) == (
        "/write", "db=db&rp=week&precision=n", auth)
    assert repair._write_request(output(""), "my db", "", {}, None) == (
        "/write", "db=my%20db&precision=n", {})
    v2 = output('api = "v2"\norg = "o"\n')
    assert repair._write_request(v2, "db", "", auth, "keep") == (
        "/api/v2/write", "org=o&bucket=db/keep&precision=ns", {"Authorization": "Token secret"})
    v2_token = output('api = "v2"\norg = "o"\nbucket = "all"\ntoken = "t0k"\n')
    assert repair._write_request(v2_token, "db", "rp", {}, None) == (
        "/api/v2/write", "org=o&bucket=all&precision=ns", {"Authorization": "Token t0k"})


# ---------------------------------------------------------------------------
# The rate limit


class Clock(object):
    def __init__(self):
        self.now = 50.0
        self.slept = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.slept += seconds


def test_the_limiter_lets_a_burst_through_then_keeps_the_rate():
    clock = Clock()
    rate = PointRate(1000, burst=500, clock=clock, sleep=clock.sleep)
    assert rate.take(500) == 0.0
    assert rate.take(1000) == pytest.approx(1.0)
    for _ in range(10):  # 10 batches of 200 points: 2 s more
        rate.take(200)
    assert clock.slept == pytest.approx(3.0)


def test_the_limiter_holds_whatever_the_batches_and_callers():
    clock = Clock()
    rate = PointRate(250, clock=clock, sleep=clock.sleep)  # burst: a second's worth
    start = clock.now
    total = 0
    for n in [1, 999, 17, 5000, 3, 250, 250, 4480]:
        rate.take(n)
        total += n
        assert total <= 250 + (clock.now - start) * 250 + 1e-6
    clock.now += 3600  # idle: never more than the burst saved up
    assert rate.take(250) == 0.0
    assert rate.take(250) == pytest.approx(1.0)


def test_no_rate_limit_is_no_limiter():
    assert repair.limiter(0) is None
    assert isinstance(repair.limiter(20000), PointRate)


def test_a_range_of_an_unknown_database_is_not_copied_and_an_empty_one_is_done():
    result = repair.copy_range(None, None, "", "", 0, 10)
    assert not result.done and "database is unknown" in result.reason
    assert repair.copy_range(None, None, "db", "", 10, 9).done
