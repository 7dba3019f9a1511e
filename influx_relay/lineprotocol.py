"""Just enough line protocol to split a body, check it and stamp it.

The relay does not parse points: InfluxDB does that, and its 400 reaches the
client. What the relay must get right is where a line ends (a quoted string
field may hold a newline), whether a line has a timestamp (so that every
backend stores the same time for a line that has none), and that a line is not
so broken that stamping it would change its meaning (no field set, say).

Lines with a timestamp are forwarded byte for byte. Blank lines and ``#``
comments are dropped, and ``\\r\\n`` line ends become ``\\n``.

:func:`scan` and :func:`prepare` are the C scanner of ``_lineprotocol.c`` when
it is built, else the pure-Python :func:`python_scan` and
:func:`python_prepare` below, which stay the reference: both give the same
lines, ``changed`` flags and errors for every body (the tests compare them).
:data:`IMPLEMENTATION` says which one is in use; ``INFLUX_RELAY_PURE_PYTHON=1``
in the environment chooses the Python one.
"""

import os
import re

from .errors import LineProtocolError

#: Nanoseconds per unit of each precision, as InfluxDB 1.x applies it to a
#: /write request (or its UDP listener to its ``precision`` setting): "u", "ms",
#: "s", "m" and "h" are that unit; anything else means nanoseconds. 1.x does not
#: know "us" (2.x's name for microseconds): it reads such timestamps as
#: nanoseconds, so the relay stamps those lines in nanoseconds too, and stores
#: what InfluxDB would have stored had the client written to it directly.
PRECISION_NS = {
    "n": 1,
    "ns": 1,
    "us": 1,
    "u": 1000,
    "ms": 1000 ** 2,
    "s": 1000 ** 3,
    "m": 60 * 1000 ** 3,
    "h": 3600 * 1000 ** 3,
}

# One line, the way InfluxDB's scanner sees it: a key (measurement and tags,
# where quotes are ordinary characters), one or more spaces, a field set
# (key=value pairs; a value may be a quoted string holding anything, newlines
# included), and an optional integer timestamp.
_KEY = rb"(?:[^ \\\n,]|\\.)(?:[^ \\\n]|\\.)*"  # a measurement first: not ","
# An unquoted value stops before the "\r" of a "\r\n" line end.
_FIELD = (rb'(?:[^ \\\n=,]|\\.)+='
          rb'(?:"(?:[^"\\]|\\.)*"|(?:[^ \\\n,"\r]|\\.|\r(?!\n|\Z))+)')
_LINE = re.compile(
    rb"[ \t]*(?P<key>" + _KEY + rb") +(?P<fields>" + _FIELD + rb"(?:," + _FIELD + rb")*)"
    rb"(?: +(?P<ts>-?[0-9]+))? *(?P<cr>\r?)(?=\n|\Z)",
    re.S,
)
_TIMESTAMP = re.compile(rb"-?[0-9]+\Z")


def stamp(unit_ns, now_ns):
    """The timestamp, as bytes, for a line that arrived at ``now_ns``, in a
    precision of ``unit_ns`` nanoseconds (a value of :data:`PRECISION_NS`, or of
    the 2.x API's own table)."""
    return b"%d" % (now_ns // unit_ns)


def python_scan(body, ts):
    """Check ``body`` and stamp every line that lacks a timestamp with ``ts``.

    Returns ``(lines, changed)``: the lines to forward (no line ends) and
    whether any differs from the body as sent (stamped, dropped or stripped
    of its ``\\r``). Raises :class:`LineProtocolError` naming the first bad
    line.
    """
    if b'"' in body or b"\\\n" in body:
        # A string or an escaped newline: a newline may not end the line.
        return _scan_general(body, ts)
    if b"\\" not in body and b"\r" not in body:
        fast = _scan_plain(body, ts)
        if fast is not None:
            return fast
    return _scan_lines(body, ts)


def _scan_lines(body, ts):
    """Line by line, each line on its own (no quoted strings in the body)."""
    out = []
    changed = False
    for lineno, line in enumerate(body.split(b"\n"), 1):
        if line[-1:] == b"\r":
            line = line[:-1]
            changed = True
        if b"\\" in line:
            stamped = _match_line(line, lineno, ts)
        else:
            stamped = _simple_line(line, lineno, ts)
        if stamped is None:
            changed = True
            continue
        if stamped is not line:
            changed = True
        out.append(stamped)
    return out, changed


def python_prepare(body, ts):
    """Like :func:`scan`, but returns ``(body, points)`` ready to forward.

    The body comes back as the very object given when no line changed.
    """
    lines, changed = python_scan(body, ts)
    if changed:
        body = b"\n".join(lines)
    return body, len(lines)


_INTEGER = re.compile(rb"-?[0-9]+")
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def python_times(body):
    """``(start, end, count)`` of the timestamps that end a body's lines (as
    the relay forwards it: every line stamped), or None if none does.

    Cheap, for the gap ledger, which needs the time range a write covers: each
    piece of the body between newlines (after trailing spaces, tabs and CRs)
    whose last space-separated token is an integer within int64 counts. Every
    line the relay forwards ends so; a piece of a string field that spans lines
    and happens to end the same way counts too, so the range may be wider than
    the points', never narrower (and ``count`` a little more than the points).
    """
    start = end = None
    count = 0
    lo, hi = _INT64
    for piece in body.split(b"\n"):
        token = piece.rstrip(b" \t\r").rpartition(b" ")[2]
        if not _INTEGER.fullmatch(token):
            continue
        t = int(token)
        if not lo <= t <= hi:
            continue
        count += 1
        if start is None or t < start:
            start = t
        if end is None or t > end:
            end = t
    return None if not count else (start, end, count)


def pack(lines, size):
    """Group lines into payloads of at most ``size`` bytes, in order, each line
    ending with a newline (as InfluxDB's own UDP clients send them).

    Returns ``(payloads, dropped)``: a line too long to fit a payload on its
    own cannot be sent whole and is dropped (and counted) rather than cut.
    """
    payloads = []
    dropped = 0
    current = []
    length = 0
    for line in lines:
        n = len(line) + 1
        if n > size:
            dropped += 1
            continue
        if length + n > size:
            payloads.append(b"\n".join(current) + b"\n")
            current = []
            length = 0
        current.append(line)
        length += n
    if current:
        payloads.append(b"\n".join(current) + b"\n")
    return payloads, dropped


def _scan_plain(body, ts):
    """The common case, fast: a body of plain lines, each ``key fields`` or
    ``key fields timestamp`` with single spaces (no quote, backslash or
    ``\\r`` anywhere, no blank line or comment). Returns what :func:`scan`
    would, or None when the body is not that simple: the general scan then
    decides, and names the bad line if there is one.
    """
    lines = body.split(b"\n")
    changed = False
    if not lines[-1]:
        lines.pop()  # the final newline
        changed = True
    stamp = b" " + ts
    out = []
    append = out.append
    for line in lines:
        # key, fields and what follows: the timestamp, or nothing (a line with a
        # fourth part has a space in ``tail``, which is then not all digits).
        key, _, rest = line.partition(b" ")
        fields, space, tail = rest.partition(b" ")
        # 35 and 44: "#" (a comment) and "," (no measurement); 61: "=" (no field key)
        if not key or key[0] in (35, 44) or b"=" not in fields or fields[0] == 61:
            return None
        if space:
            if not tail.isdigit():
                return None
            append(line)
        else:
            append(line + stamp)
            changed = True
    return out, changed


def _simple_line(line, lineno, ts):
    """A line with no quote and no backslash: split on spaces."""
    parts = line.split(b" ")
    if b"" in parts:
        parts = [p for p in parts if p]
        if not parts or parts[0][:1] == b"#":
            return None
    elif parts[0][:1] == b"#":
        return None
    n = len(parts)
    if n == 3:
        if b"=" not in parts[1]:
            raise LineProtocolError(lineno, line, "invalid field format")
        if _TIMESTAMP.match(parts[2]) is None:
            raise LineProtocolError(lineno, line, "bad timestamp")
    elif n == 2:
        if b"=" not in parts[1]:
            raise LineProtocolError(lineno, line, "missing fields")
    elif n < 2:
        if not line.strip():
            return None  # whitespace only: a blank line
        raise LineProtocolError(lineno, line, "missing fields")
    else:
        raise LineProtocolError(lineno, line, "invalid field format")
    key = parts[0]
    if key[:1] == b"," or b"=" in parts[1][:1]:
        raise LineProtocolError(lineno, line, "missing measurement" if key[:1] == b"," else "missing field key")
    if n == 3:
        return line
    return line.rstrip(b" ") + b" " + ts


def _match_line(line, lineno, ts):
    """A line with escapes: let the full pattern decide."""
    if not line.strip() or line.lstrip()[:1] == b"#":
        return None
    m = _LINE.match(line)
    if m is None or m.end() != len(line):
        raise LineProtocolError(lineno, line, _reason(line))
    if m.group("ts") is not None:
        return line
    return line.rstrip(b" ") + b" " + ts


# InfluxDB's scanner (models/points.go scanLine) splits a body into lines
# before it parses any: a backslash escapes the byte after it (when two more
# bytes follow it), the first unescaped space starts the field section, and
# there a double quote opens or closes a string when more "=" than "," came
# before it on the line; a newline ends the line unless it is in a string. So
# an escaped newline does not end a line, and a comment holding "=" and then
# a quote goes on to the next closing quote. These find the next byte that
# matters in each state.
_IN_KEY = re.compile(rb"[\\ \n]")
_IN_FIELDS = re.compile(rb'[\\"\n]')
_IN_STRING = _IN_FIELDS


def split_lines(body, pos=0):
    """Where InfluxDB's scanner ends each line of ``body``: yields ``(start, end)``
    of every line (``end`` at its newline, or at the end of the body).

    The "=" and "," that decide whether a quote opens a string are counted only
    when a quote comes (``bytes.count`` over the stretch since the last stop):
    most lines stop only at their first space and their newline.
    """
    n = len(body)
    key, fields = _IN_KEY.search, _IN_FIELDS.search
    count = body.count
    while pos < n:
        start = i = pos
        in_fields = in_string = False
        balance = 0  # "=" minus "," in the field section, up to ``seen``
        seen = 0
        while True:
            m = (fields if in_fields else key)(body, i)
            if m is None:
                i = n
                break
            i = m.start()
            c = body[i]
            if c == 92:  # "\\": skip the byte it escapes (when two more follow)
                if in_fields and not in_string:
                    balance += count(b"=", seen, i) - count(b",", seen, i)
                i += 2 if i + 2 < n else 1
                seen = i
            elif c == 10:  # "\n"
                if not in_string:
                    break
                i += 1
            elif c == 32:  # " ", looked for only until the field section starts
                in_fields = True
                i += 1
                seen = i
            else:  # '"'
                if not in_string:
                    balance += count(b"=", seen, i) - count(b",", seen, i)
                    in_string = balance > 0
                else:
                    in_string = False
                i += 1
                seen = i
        yield start, i
        pos = i + 1


def _scan_general(body, ts):
    """Any body, its lines found as InfluxDB's scanner finds them (see
    :func:`split_lines`), each then checked by the full pattern."""
    out = []
    changed = False
    match = _LINE.match
    for start, end in split_lines(body):
        line = body[start:end]
        stripped = line.strip()
        if not stripped or stripped[:1] == b"#":
            changed = True  # blank (a CRLF one too) or a comment, however long
            continue
        if line[-1:] == b"\r":
            line = line[:-1]
            changed = True
        m = match(line)
        if m is None or m.end() != len(line):
            lineno = body.count(b"\n", 0, start) + 1
            nl = line.find(b"\n")
            first = line if nl < 0 else line[:nl]
            raise LineProtocolError(lineno, first.rstrip(b"\r"), _reason(first))
        if m.group("ts") is None:
            line = line.rstrip(b" ") + b" " + ts
            changed = True
        out.append(line)
    return out, changed


def _reason(line):
    """Why a line that the pattern refused is bad, as InfluxDB would say it."""
    text = line.strip()
    if text[:1] == b",":
        return "missing measurement"
    if not re.search(rb"(?<!\\) ", text):
        return "missing fields"
    if text.count(b'"') % 2:
        return "unbalanced quotes"
    return "invalid field format"


# The series key of a line (measurement and tags), for [[filter]] tables.
_SERIES_KEY = re.compile(rb"[ \t]*((?:[^ \\]|\\.|\\\Z)+)", re.S)
_KEY_PART = re.compile(rb"(?:[^,\\]|\\.|\\\Z)+", re.S)
_TAG_KEY = re.compile(rb"(?:[^=\\]|\\.|\\\Z)*", re.S)
_ESCAPED = re.compile(rb"\\([,= ])")


def series_key(line):
    """The series key of a line (measurement and tag set), as bytes."""
    if b"\\" not in line:
        return line.lstrip(b" \t").split(b" ", 1)[0]
    m = _SERIES_KEY.match(line)
    return m.group(1) if m else b""


def parse_series_key(key):
    """``(measurement, tag keys)`` of a series key, unescaped, as text."""
    if b"\\" not in key:
        parts = key.split(b",")
        tags = [p.partition(b"=")[0] for p in parts[1:] if p]
    else:
        parts = _KEY_PART.findall(key) or [b""]
        tags = [_ESCAPED.sub(rb"\1", _TAG_KEY.match(p).group(0)) for p in parts[1:]]
        parts[0] = _ESCAPED.sub(rb"\1", parts[0])
    return parts[0].decode("utf-8", "replace"), [t.decode("utf-8", "replace") for t in tags]


# ---------------------------------------------------------------------------
# The scanner in use: C when it is built (and not refused), else Python.

#: Set (to anything but "" or "0") to use the pure-Python scanner.
PURE_PYTHON_ENV = "INFLUX_RELAY_PURE_PYTHON"


def _c_scanner():
    """``(module, None)``, or ``(None, why not)``."""
    if os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0"):
        return None, "%s is set" % PURE_PYTHON_ENV
    try:
        from . import _lineprotocol
    except ImportError as e:
        return None, "the C scanner is not built (%s)" % e
    return _lineprotocol, None


_c, _why = _c_scanner()
#: "c" or "python": which scanner :func:`scan` and :func:`prepare` are.
IMPLEMENTATION = "python" if _c is None else "c"
#: Why the Python scanner is in use (None when it is the C one).
PYTHON_REASON = _why
if _c is None:
    scan, prepare, times = python_scan, python_prepare, python_times
else:
    scan, prepare, times = _c.scan, _c.prepare, _c.times
