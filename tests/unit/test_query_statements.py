"""Which queries /query refuses: InfluxQL statements that change data or schema
(and Flux that writes), whatever their case, spacing or comments, in any
statement of a query; never a keyword inside a string, an identifier or a comment."""

import pytest
from hypothesis import given, settings, strategies as st

from influx_relay.query import MAX_QUERY_CHARS, WRITE_KEYWORDS, QueryTooComplex, flux_write, influxql_write

READS = [
    "SELECT * FROM m",
    "select mean(v) from m where time > now() - 1h group by time(1m), host fill(none)",
    "SHOW DATABASES",
    "SHOW TAG VALUES FROM cpu WITH KEY = \"host\"",
    "SHOW MEASUREMENTS WITH MEASUREMENT =~ /cpu.*/",
    "EXPLAIN SELECT * FROM m",
    "EXPLAIN ANALYZE SELECT count(v) FROM m",
    'SELECT "into", "drop", "create" FROM "delete"',
    "SELECT * FROM m WHERE t = 'DROP DATABASE x'",
    "SELECT * FROM m WHERE t = '; DROP DATABASE x'",
    "SELECT * FROM m WHERE t = 'it\\'s; DROP DATABASE x'",
    'SELECT * FROM m WHERE "a\\"; DROP" = 1',
    "SELECT * FROM m -- ; DROP DATABASE x",
    "SELECT * FROM m /* ; DROP DATABASE x */",
    "SELECT * FROM m WHERE host =~ /^web-\\d+$/ AND dc !~ /eu/ GROUP BY /h/",
    "SELECT /v/ FROM /cpu|mem/",
    "SELECT a / 2, b/2 FROM m; SELECT c/d FROM m",
    "SELECT * FROM m WHERE h = $into",  # a bound parameter, not a keyword
    "SELECT v FROM m WHERE time > now() - 10m; SHOW SERIES",
    "SELECT * FROM (SELECT max(v) FROM m) WHERE time > 0",
    "SELECT v FROM db.rp.m, db.rp./re/",
    "SELECT v FROM m; ; ;",
    "SELECT intolerance, into_x, x_into FROM m",
    "SELECT v FROM m LIMIT 10 OFFSET 2 SLIMIT 1 tz('Europe/Paris')",
    "SELECT * FROM m WHERE t = 'a/b' AND u = '/'",
    "",
]

WRITES = [
    ("DROP DATABASE x", "DROP"),
    ("drop database x", "DROP"),
    ("  \t\n  dRoP   MEASUREMENT m", "DROP"),
    ("CREATE DATABASE x", "CREATE"),
    ("CREATE RETENTION POLICY p ON d DURATION 1d REPLICATION 1", "CREATE"),
    ("create continuous query cq on d begin select mean(v) into m2 from m group by time(1h) end",
     "CREATE"),
    ("DELETE FROM m WHERE time < 0", "DELETE"),
    ("ALTER RETENTION POLICY p ON d DEFAULT", "ALTER"),
    ("GRANT ALL TO bob", "GRANT"),
    ("REVOKE READ ON d FROM bob", "REVOKE"),
    ("KILL QUERY 36", "KILL"),
    ("SET PASSWORD FOR bob = 'x'", "SET"),
    ("SELECT * INTO copy FROM m", "SELECT ... INTO"),
    ("select mean(v)\n  InTo db.rp.:MEASUREMENT from /.*/ group by *", "SELECT ... INTO"),
    ("SELECT *INTO\"c\"FROM m", "SELECT ... INTO"),
    ("EXPLAIN ANALYZE SELECT * INTO x FROM m", "SELECT ... INTO"),
    ("SELECT * FROM m; DROP DATABASE x", "DROP"),
    ("SELECT * FROM m;DROP DATABASE x", "DROP"),
    ("SHOW DATABASES; SELECT 1 FROM m; delete from m", "DELETE"),
    ("SELECT * FROM m;;\n;  CREATE USER u WITH PASSWORD 'p'", "CREATE"),
    ("/* why not */ DROP SERIES FROM m", "DROP"),
    ("-- a comment\nDROP SHARD 1", "DROP"),
    ("-- a comment\r\nDROP SHARD 1", "DROP"),
    ("SELECT * FROM m -- x\n; DROP DATABASE d", "DROP"),
    ("SELECT * FROM m /* ; */ ; DROP DATABASE d", "DROP"),
    # A string that ends where InfluxDB ends it: an escaped backslash, then the quote.
    ("SELECT * FROM m WHERE t = 'a\\\\'; DROP DATABASE x", "DROP"),
    # Quotes inside a regex hide nothing from InfluxDB: the regex ends at its "/".
    ("SELECT * FROM m WHERE t =~ /it's/; DROP DATABASE x", "DROP"),
    ("SELECT * FROM m WHERE t =~ /\"/; DROP DATABASE x", "DROP"),
    ("SELECT * FROM m WHERE t =~ /--/; DROP DATABASE x", "DROP"),
    ("SELECT * FROM m WHERE t =~ /a\\/b'/; DROP DATABASE x", "DROP"),
    # Where InfluxDB reads "/*" as a comment, the comment ends at "*/", not at a "/".
    ("SELECT * FROM m WHERE x = /* a/b */ 1; DROP DATABASE d; SELECT a / 2 FROM m", "DROP"),
    # And where it reads a regex, the regex ends at its "/", not at "*/".
    ("SELECT * FROM /*x/; DROP DATABASE d -- */", "DROP"),
]


@pytest.mark.parametrize("q", READS)
def test_reads(q):
    assert influxql_write(q) is None


@pytest.mark.parametrize("q, what", WRITES)
def test_writes(q, what):
    assert influxql_write(q) == what


def test_the_price_of_reading_a_slash_every_way():
    # A regex holding INTO, or ";" and a write keyword, might be a division for
    # all the relay knows: refused. The user can write [i]nto.
    assert influxql_write("SELECT * FROM m WHERE d =~ /into/") == "SELECT ... INTO"
    assert influxql_write("SELECT * FROM m WHERE d =~ /a;drop/") == "DROP"
    assert influxql_write("SELECT * FROM m WHERE d =~ /[i]nto/") is None


def test_queries_influxdb_cannot_scan_are_left_to_it():
    # InfluxDB refuses these whole (a string left open, a newline in one, a bad
    # escape, a character it does not know): nothing in them runs.
    for q in ("SELECT 'abc; DROP DATABASE x", "SELECT 'a\nb'; DROP DATABASE x",
              "SELECT 'a\\x'; DROP DATABASE x"):
        assert influxql_write(q) is None


def test_too_long_or_too_tangled_is_an_error_not_a_guess():
    with pytest.raises(QueryTooComplex):
        influxql_write("SELECT " + "v, " * MAX_QUERY_CHARS)
    with pytest.raises(QueryTooComplex):
        influxql_write("SELECT a" + "/a" * 100000 + " FROM m")
    with pytest.raises(QueryTooComplex):
        flux_write('"${' * 1000)
    # Many regexes are fine.
    q = "; ".join("SELECT * FROM m WHERE h =~ /^web-%d$/" % i for i in range(2000))
    assert influxql_write(q) is None


# -- properties ------------------------------------------------------------------

_filler = st.text(alphabet="abcXYZ019 _;=*/,.()<>'\"-\\\n\t", max_size=30)


def _quoted(text, quote):
    return quote + text.replace("\\", "\\\\").replace(quote, "\\" + quote).replace(
        "\n", "\\n") + quote


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_filler, st.sampled_from(sorted(WRITE_KEYWORDS) + ["INTO"])),
                min_size=1, max_size=4))
def test_keywords_inside_strings_and_identifiers_are_not_statements(parts):
    conditions = []
    for text, keyword in parts:
        inner = "%s; %s x %s" % (text, keyword, text)
        conditions.append("%s = %s" % (_quoted(inner, '"'), _quoted(inner, "'")))
    q = "SELECT * FROM m WHERE " + " AND ".join(conditions)
    assert influxql_write(q) is None, q


_space = st.lists(st.sampled_from([" ", "\t", "\n", "\r\n", "/* c */", "-- c\n", " /**/ "]),
                  min_size=1, max_size=3).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(WRITE_KEYWORDS)), _space, _space,
       st.lists(st.sampled_from(["SELECT * FROM m", "SHOW DATABASES",
                                 "SELECT * FROM m WHERE t =~ /x/", "SELECT 'a;b' FROM m"]),
                max_size=3),
       st.randoms(use_true_random=False))
def test_a_write_statement_is_found_whatever_its_case_spacing_and_place(keyword, before, after,
                                                                        reads, rnd):
    word = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in keyword)
    statements = list(reads)
    statements.insert(rnd.randint(0, len(statements)), before + word + after + "x")
    q = ";".join(statements)
    assert influxql_write(q) == keyword, q


# -- Flux --------------------------------------------------------------------------

FLUX_READS = [
    'from(bucket: "b") |> range(start: -1h) |> filter(fn: (r) => r._measurement == "cpu")',
    'from(bucket: "b") |> range(start: -1h) |> filter(fn: (r) => r.host =~ /^web/)',
    'x = "to(bucket: \\"c\\")"\nfrom(bucket: "b") |> range(start: -5m)',
    '// |> to(bucket: "c")\nfrom(bucket: "b") |> range(start: -5m)',
    'from(bucket: "b") |> range(start: -1h) |> map(fn: (r) => ({r with v: r._value / 2}))',
    'import "strings"\nfrom(bucket: "b") |> range(start: -1h) |> top(n: 5) |> toFloat()',
    's = "${r.host} goes to ${r.dc}"',
    'from(bucket: "to")',
]

FLUX_WRITES = [
    ('from(bucket: "b") |> range(start: -1h) |> to(bucket: "c")', "to()"),
    ('import "experimental"\nexperimental.to(bucket: "c")', "to()"),
    ('import "influxdata/influxdb"\ninfluxdb.wideTo(bucket: "c")', "wideTo()"),
    ('import "experimental/influxdb"\ninfluxdb.api(method: "delete", path: "/x")', "api()"),
    ('f = to\nfrom(bucket: "b") |> f(bucket: "c")', "to()"),
    ('x = "${from(bucket: "b") |> to(bucket: "c")}"', "to()"),
    ('x = "a${"b${to}"}c"', "to()"),
    ('x = "\\"" |> to(bucket: "c")', "to()"),
    ("x = 5to(bucket: \"c\")", "to()"),
]


@pytest.mark.parametrize("q", FLUX_READS)
def test_flux_reads(q):
    assert flux_write(q) is None


@pytest.mark.parametrize("q, what", FLUX_WRITES)
def test_flux_writes(q, what):
    assert flux_write(q) == what
