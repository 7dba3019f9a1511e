"""Data sets for the system tests: databases made on several influxd at once, a
rich set of points (every field type, strings and keys with every escape
influxd keeps), and what a database holds, read back the way a user would."""

import uuid

from influx_relay.repair import quote_ident, source_name

NS = 10 ** 9
T0 = 1_600_000_000 * NS  # 2020-09-13, in one shard group of a 7-day retention policy's
START, END = T0, T0 + 600 * NS


def new_db(servers, rps=()):
    db = "r_" + uuid.uuid4().hex[:8]
    for server in servers:
        server.create_database(db)
        for rp in rps:
            server.query('CREATE RETENTION POLICY "%s" ON "%s" DURATION 0s REPLICATION 1'
                         % (rp, db))
    return db


def write(server, db, lines, rp=None, batch=10000):
    for i in range(0, len(lines), batch):
        params = {"rp": rp} if rp else {}
        r = server.write(db, b"\n".join(lines[i:i + batch]), **params)
        assert r.status == 204, r


def dump(server, db, rp="", start=None, end=None):
    """What db/rp holds (between start and end): {measurement: (field keys and
    types, every series with its tags, columns and rows)}."""
    fields = server.query("SHOW FIELD KEYS ON %s FROM %s.%s./.*/" % (
        quote_ident(db), quote_ident(db), quote_ident(rp) if rp else ""), db=db)["results"][0]
    assert "error" not in fields, fields
    where = ""
    if start is not None:
        where = " WHERE time >= %d AND time <= %d" % (start, end)
    out = {}
    for series in fields.get("series", []):
        name = series["name"]
        result = server.query("SELECT * FROM %s%s GROUP BY *" % (source_name(db, rp, name), where),
                              db=db)["results"][0]
        assert "error" not in result, result
        rows = [(s.get("tags"), s["columns"], s["values"]) for s in result.get("series", [])]
        if rows:
            out[name] = (sorted(map(tuple, series["values"])), rows)
    return out


def points(d):
    return sum(len(values) for _, series in d.values() for _, _, values in series)


# ---------------------------------------------------------------------------
# A rich data set, written straight to A

STRINGS = [b'"with space"', b'"quote \\"q\\" here"', b'"comma, here"', b'"back\\\\slash"',
           b'"new\nline"', b'"crlf\r\nend"', b'"trailing\\\\"', b'""', b'"\xc3\xa9\xf0\x9f\x92\xa9"',
           b'"looks like x=1 2"']
FLOATS = [b"0.1", b"-0.0", b"1e21", b"5e-324", b"1.7976931348623157e308", b"123456789012345680000",
          b"9007199254740993", b"-2.5e-7", b"3", b"1.0000000000000002"]
INTEGERS = [b"0i", b"-9223372036854775808i", b"9223372036854775807i", b"42i", b"-1i"]
# Measurement and tag parts with escapes influxd keeps (see tests/system/test_differential.py)
# A double quote in a measurement or tag is written as clients write it, unescaped:
# influxd keeps "\\"" and "\"" as two series keys of one measurement name, which a
# query cannot tell apart (README, Replicas that converge: limits).
ODD_KEYS = [b"m\\,1\\ x=\"q,t\\=k=v\\ a\\,b", b"x\\\ny,t=a\\\nb", b'weird=name"q,q"=x"y',
            b"\xc3\xa9\xf0\x9f\x92\xa9,\xf0\x9f\x92\xa9=\xc3\xa9", b"back\\\\slash,t=a\\\\\\,b",
            b"both,x=tag", b"\\ lead\\ space,k=v", b"a\\b,t=x\\y"]


def rich_lines(n=600, series=40, start=START, end=END):
    """``n`` points between start and end (both included), over ``series`` series
    of "cpu" and every odd key, with every field type."""
    out = []
    step = (end - start) // (n - 1)
    for i in range(n):
        t = start + i * step if i < n - 1 else end
        if i % 3 == 0:
            key = ODD_KEYS[i % len(ODD_KEYS)]
        else:
            key = b"cpu,host=h%02d,region=eu\\ west" % (i % series)
        fields = [b"f=" + FLOATS[i % len(FLOATS)], b"n=" + INTEGERS[i % len(INTEGERS)],
                  b"s=" + STRINGS[i % len(STRINGS)], b"ok=" + (b"true" if i % 2 else b"false")]
        if key.startswith(b"both"):
            fields.append(b"x=1.5")  # a field named as a tag
        if i % 7 == 0:
            fields = fields[:2]  # some fields absent from some points
        if i % 11 == 0:
            fields.append(b"odd\\ key\\,\\=\"=1i")
        out.append(b"%s %s %d" % (key, b",".join(fields), t))
    return out


