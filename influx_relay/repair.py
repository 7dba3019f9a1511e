"""Copying back what an output missed (issue 13): the points of one database,
retention policy and time range, read from a peer output that holds them and
written to the output that lacks them.

What a caller can rely on:

* The source is read through its InfluxQL ``/query`` endpoint, with its own
  credentials (or the caller's ``headers``): ``SHOW FIELD KEYS`` for each
  measurement's fields and their types, then per measurement ``SELECT
  "f"::float, "g"::integer, ... WHERE time >= start AND time <= end GROUP BY *``
  with ``epoch=ns`` and ``chunked=true``, read as it streams. ``GROUP BY *``
  gives each series' tags apart from its fields (an empty value is a tag the
  point does not have), so ``SHOW TAG KEYS`` is not needed; the fields are
  named one by one, cast to the type ``SHOW FIELD KEYS`` gives, so that an
  integer stays an integer (JSON prints a float 1.0 as ``1``) and a tag and a
  field of the same name cannot be confused.
* The points are rebuilt into line protocol that influxd reads back as the
  source holds them (see :func:`measurement_key`, :func:`tag_part`,
  :func:`field_key` and :func:`string_value` for the escaping rules of influxd
  1.x's parser) and written through the target output's own write path
  (:meth:`.Output.send`: its credentials, API mapping and in-flight limits), in
  batches of ``batch_points`` lines, each allowed by the ``limiter`` first.
* Memory is bounded by one batch and one chunk of the answer, whatever the
  size of the range.
* The range is copied in time slices, oldest first, each of about
  :data:`SLICE_BATCHES` batches (the width adapts to the density met so far).
  A slice is reported (``slice_done(start, end)``) only once the target
  answered 2xx for every batch of it, so a repair killed midway resumes after
  its last finished slice, and :class:`CopyResult` says ``done`` only when
  every slice was.
* Copying a point both outputs hold rewrites the same value: a repair may be
  stopped (``should_stop``, checked between batches) and run again.
* What cannot be copied faithfully is never written changed, it is left out
  and said so: a measurement with a field whose type differs between shards
  (from JSON alone an integer and a float cannot be told apart), a name
  InfluxQL or line protocol cannot express (a NUL; a newline or separator
  influxd's own scanners would misread), a text holding U+FFFD (influxd sends
  bytes that are not UTF-8 as U+FFFD: what the source holds cannot be told).
  The rest is copied; a slice with something left out is not reported done,
  and the result is not ``done``, its ``reason`` naming what was left out.
* The copy ends at the first batch the target refuses (4xx), when the target
  does not take a batch in :data:`WRITE_ATTEMPTS` tries, or when the source's
  answer fails: the reason says which and why.
"""

import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import quote, urlencode

import gevent

from . import apiv2
from .errors import BackendError, RelayError
from .output import FAILED, OK, REJECTED, snippet
from .retry import RetryPolicy

log = logging.getLogger(__name__)

#: Batches per time slice, about: how much is copied again after a restart.
SLICE_BATCHES = 10
#: The first slice's width (ns) when nothing tells how dense the range is.
FIRST_SLICE_NS = 10 ** 9
#: How much wider than the last one a slice may grow (an empty one grows by this).
SLICE_GROWTH = 8
#: SELECT statements sent in one request, and the longest text of one request.
STATEMENTS_PER_QUERY = 64
QUERY_TEXT_LIMIT = 64 * 1024
#: The longest line of a chunked answer (one chunk) read before giving up.
MAX_ANSWER_LINE = 64 * 1024 * 1024
#: How much of an error answer is read for its reason.
ERROR_BODY_LIMIT = 4096
#: Attempts per batch when the target does not answer (or answers 5xx).
WRITE_ATTEMPTS = 3
WRITE_RETRY = RetryPolicy(initial=0.2, multiplier=2.0, cap=2.0)


class CopyFailed(RelayError):
    """Why a range could not be copied (whole); ``str()`` is the reason."""


class _Stopped(Exception):
    pass


@dataclass
class CopyResult:
    """What :func:`copy_range` did: ``done`` when every point of the range was
    written (2xx); else ``reason`` says why not, and ``stopped`` whether it was
    asked to stop. ``points`` and ``batches`` count what the target took,
    ``slices`` the slices reported done, ``left_out`` the points that could
    not be copied faithfully (the reason names them; a measurement left out
    whole is not counted)."""

    done: bool
    points: int = 0
    batches: int = 0
    slices: int = 0
    reason: Optional[str] = None
    stopped: bool = False
    left_out: int = 0


# ---------------------------------------------------------------------------
# The rate limit


class PointRate(object):
    """At most ``rate`` points per second, ``burst`` (default: a second's worth)
    at once: :meth:`take` sleeps (gevent) until the points it is asked for fit.
    Shared by every repair of a relay, so that together they stay under the
    limit. Whatever the interleaving, N points take at least (N - burst) / rate
    seconds."""

    def __init__(self, rate, burst=None, clock=time.monotonic, sleep=gevent.sleep):
        self.rate = float(rate)
        self.burst = float(self.rate if burst is None else burst)
        self.clock = clock
        self.sleep = sleep
        self.tokens = self.burst
        self.updated = clock()

    def take(self, points):
        """Take ``points``, sleeping as long as they are owed; returns the wait."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= points
        if self.tokens >= 0:
            return 0.0
        wait = -self.tokens / self.rate
        self.sleep(wait)
        return wait


def limiter(rate):
    """The limiter for a ``repair-rate-limit`` of ``rate`` points/s (None for 0: no limit)."""
    return PointRate(rate) if rate > 0 else None


# ---------------------------------------------------------------------------
# InfluxQL


def quote_ident(name):
    """``name`` as an InfluxQL identifier: double-quoted; backslash, quote and
    newline escaped (InfluxQL's scanner takes no raw newline in one)."""
    return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def source_name(db, rp, measurement):
    """``"db"."rp"."m"``, or ``"db".."m"`` for the default retention policy."""
    return "%s.%s.%s" % (quote_ident(db), quote_ident(rp) if rp else "", quote_ident(measurement))


# ---------------------------------------------------------------------------
# Line protocol, as influxd 1.x reads it back
#
# influxd keeps a measurement as written but for "\," "\ " "\=" and '\"', which
# lose their backslash; a tag key or value loses it before "," " " and "="
# only; a field key like a measurement. Any other backslash stays, with what
# follows it (an escaped newline included). The scanner takes a character after
# a backslash as part of the name, so a name cannot end with a backslash, and a
# newline in a name has to follow one. A string field loses the backslash of
# "\\" and '\"' only.

_LEADING = ("#", "\t", "\x00")  # a comment, or blanks influxd skips before a measurement
# influxd's line splitter and field scanner take backslashes two by two: after
# an even run of them, a newline ends the line; after an odd run of a field
# key's own backslashes, the escape before a comma, space or "=" would be
# taken with the last of them.
_EVEN_BACKSLASHES_BEFORE_NEWLINE = re.compile(r"(?<!\\)(?:\\\\)*\n")
_ODD_BACKSLASHES_BEFORE_SEPARATOR = re.compile(r"(?<!\\)\\(?:\\\\)*[,= ]")


def _check_text(text, what):
    if "\ufffd" in text:
        raise CopyFailed("%s %r holds U+FFFD, as influxd sends bytes that are not UTF-8: "
                         "what the source holds cannot be told" % (what, text))


def _check_name(name, what):
    if not name:
        raise CopyFailed("an empty %s cannot be written" % what)
    _check_text(name, what)
    if name.endswith("\\"):
        raise CopyFailed("%s %r ends with a backslash: line protocol cannot express it"
                         % (what, name))
    if "\n" in name and _EVEN_BACKSLASHES_BEFORE_NEWLINE.search(name):
        raise CopyFailed("%s %r holds a newline that no backslash escapes: line protocol "
                         "cannot express it" % (what, name))


def _escape(name, always, after_backslash=""):
    """Backslash every character of ``always``, and those of ``after_backslash``
    where a backslash of the name precedes them (there, unescaped, the name's
    backslash would be taken for an escape)."""
    out = []
    previous = ""
    for c in name:
        if c in always or (c in after_backslash and previous == "\\"):
            out.append("\\")
        out.append(c)
        previous = c
    return "".join(out)


def measurement_key(name):
    """A measurement name as line protocol (bytes). Commas and spaces are
    escaped; "=" and '"' too when the name holds a backslash (after one, they
    must be; elsewhere it keeps influxd's line splitter from counting them),
    else they stay as influxd itself would write the series key."""
    _check_name(name, "measurement")
    if name.startswith(_LEADING):
        raise CopyFailed("measurement %r starts with %r: line protocol cannot express it"
                         % (name, name[0]))
    if "\\" in name:
        return _escape(name, ', ="').encode("utf-8")
    return _escape(name, ", ").encode("utf-8")


def tag_part(text, what="tag"):
    """A tag key or value as line protocol (bytes): commas, spaces and "="
    escaped; a quote stays as it is (influxd would keep the backslash of one)."""
    _check_name(text, what)
    return _escape(text, ", =").encode("utf-8")


def field_key(name):
    """A field key as line protocol (bytes): commas, spaces and "=" escaped, a
    quote only after a backslash. An odd number of backslashes before a
    comma, space or "=" cannot be written: influxd's field scanner would pair
    the escape's own backslash with the last of them."""
    _check_name(name, "field key")
    if _ODD_BACKSLASHES_BEFORE_SEPARATOR.search(name):
        raise CopyFailed("field key %r has an odd number of backslashes before a comma, space "
                         "or \"=\": influxd cannot read it back from line protocol" % (name,))
    return _escape(name, ", =", '"').encode("utf-8")


def string_value(text):
    """A string field value as line protocol (bytes), quoted: backslashes and
    quotes escaped; newlines and everything else as they are."""
    return b'"' + text.encode("utf-8").replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def float_value(value):
    """A float field: the shortest text that reads back as the same double
    (Python's repr, like Go's); a JSON integer is the float it spells."""
    if value.__class__ is not float:
        if value.__class__ is not int:
            raise CopyFailed("float field holds %r" % (value,))
        value = float(value)
    return repr(value).encode("ascii")


def integer_value(value):
    if value.__class__ is not int:
        if value.__class__ is not float or value != 0:  # -0.0 (see _decode) is 0
            raise CopyFailed("integer field holds %r" % (value,))
        value = 0
    return b"%di" % value


def unsigned_value(value):
    if value.__class__ is not int or value < 0:
        raise CopyFailed("unsigned field holds %r" % (value,))
    return b"%du" % value


def boolean_value(value):
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    raise CopyFailed("boolean field holds %r" % (value,))


def _string(value):
    if value.__class__ is not str:
        raise CopyFailed("string field holds %r" % (value,))
    if "\ufffd" in value:
        _check_text(value, "a string field")
    return string_value(value)


#: SHOW FIELD KEYS' type names, and how a value of each is written.
FIELD_TYPES: Dict[str, Callable] = {
    "float": float_value,
    "integer": integer_value,
    "unsigned": unsigned_value,
    "string": _string,
    "boolean": boolean_value,
}


def series_key(measurement, tags):
    """The key of a series as line protocol (bytes): ``measurement`` already
    escaped, ``tags`` as GROUP BY * gives them (an empty value: no such tag),
    sorted as influxd sorts them."""
    parts = sorted(tag_part(k, "tag key") + b"=" + tag_part(v, "tag value")
                   for k, v in tags.items() if v != "")
    return b",".join([measurement] + parts)


def influx_line_end(buf, i=0):
    """Where influxd 1.x's line splitter (``models.scanLine``) ends the line
    that starts at ``i`` of ``buf``: it skips a backslash with what follows
    it, and from the first space on counts "=" and "," to know whether a quote
    opens a string, in which a newline does not end the line."""
    n = len(buf)
    quoted = fields = False
    equals = commas = 0
    while i < n:
        c = buf[i]
        if c == 0x5C and i + 2 < n:  # "\\"
            i += 2
            continue
        if c == 0x20:
            fields = True
        if fields:
            if not quoted and c == 0x3D:
                equals += 1
                i += 1
                continue
            if not quoted and c == 0x2C:
                commas += 1
                i += 1
                continue
            if c == 0x22 and equals > commas:
                quoted = not quoted
                i += 1
                continue
        if c == 0x0A and not quoted:
            break
        i += 1
    return i


def splits_cleanly(line):
    """Whether influxd reads ``line`` as one line in a body of several: it ends
    where it should when a newline follows, and not before."""
    return influx_line_end(line + b"\n") == len(line)


# ---------------------------------------------------------------------------
# The chunked JSON answer

_NEGATIVE_ZERO = re.compile(rb"[\[,]-0[,\]]")


def _int_or_negative_zero(text):
    # Go prints the float -0.0 as "-0", which json would read as the integer 0.
    return -0.0 if text == "-0" else int(text)


def _decode(line):
    try:
        if _NEGATIVE_ZERO.search(line):
            return json.loads(line, parse_int=_int_or_negative_zero)
        return json.loads(line)
    except ValueError as e:
        raise CopyFailed("the answer is not JSON (%s): %s" % (e, snippet(line, 120)))


def json_objects(pieces, limit=MAX_ANSWER_LINE):
    """The JSON texts of a chunked /query answer, one per line, each parsed as
    soon as its line is complete: ``pieces`` are the body's bytes as they come."""
    pending: List[bytes] = []
    size = 0
    for piece in pieces:
        if b"\n" not in piece:
            pending.append(piece)
            size += len(piece)
            if size > limit:
                raise CopyFailed("a line of the answer is longer than %d bytes" % limit)
            continue
        if pending:
            pending.append(piece)
            piece = b"".join(pending)
            pending = []
        lines = piece.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if line.strip():
                yield _decode(line)
        if rest:
            pending = [rest]
        size = len(rest)
    tail = b"".join(pending)
    if tail.strip():
        yield _decode(tail)


def series_pieces(objects, statements):
    """``(statement index, series)`` for each series (or piece of one: a series
    longer than a chunk comes in several, each with its name and tags) of an
    answer to ``statements`` statements. An error, in the answer or in a
    statement's result, raises :class:`CopyFailed`; so does an answer that ends
    before every statement's last result."""
    finished = set()
    for obj in objects:
        if not isinstance(obj, dict):
            raise CopyFailed("unexpected answer: %s" % snippet(json.dumps(obj).encode(), 120))
        if obj.get("error"):
            raise CopyFailed(str(obj["error"]))
        for result in obj.get("results") or ():
            sid = result.get("statement_id", 0)
            if result.get("error"):
                raise CopyFailed(str(result["error"]))
            for series in result.get("series") or ():
                yield sid, series
            if not result.get("partial"):
                finished.add(sid)
    if len(finished) < statements:
        raise CopyFailed("the answer ended before its last result (%d of %d statements)"
                         % (len(finished), statements))


# ---------------------------------------------------------------------------
# The copy


class Measurement(object):
    """One measurement of the source: its escaped name, its fields (name,
    type) and how each column of its SELECT is written. Raises
    :class:`CopyFailed` for one that cannot be copied faithfully."""

    __slots__ = ("name", "key", "fields", "select", "columns")

    def __init__(self, db, rp, name, fields):
        for text, what in [(name, "measurement")] + [(f, "field key") for f, _ in fields]:
            if "\x00" in text:  # InfluxQL's scanner takes a NUL for the end of the text
                raise CopyFailed("%s %r holds a NUL character, which InfluxQL cannot name"
                                 % (what, text))
        types: Dict[str, List[str]] = {}
        for key, kind in fields:
            if kind not in FIELD_TYPES:
                raise CopyFailed("field %r has type %r" % (key, kind))
            types.setdefault(key, []).append(kind)
        mixed = ["%r (%s)" % (key, " and ".join(kinds))
                 for key, kinds in types.items() if len(kinds) > 1]
        if mixed:
            raise CopyFailed("the type of field %s differs between shards" % ", ".join(mixed))
        self.name = name
        self.key = measurement_key(name)
        self.fields = fields
        self.select = "SELECT %s FROM %s" % (
            ",".join("%s::%s" % (quote_ident(f), t) for f, t in fields),
            source_name(db, rp, name))
        self.columns = [(field_key(f) + b"=", FIELD_TYPES[t]) for f, t in fields]

    def statement(self, start, end):
        return "%s WHERE time >= %d AND time <= %d GROUP BY *" % (self.select, start, end)


def series_lines(m, series, left_out):
    """The points of ``series`` (a piece of the answer to ``m``'s SELECT) as
    line protocol: ``(line, alone)`` for each, ``alone`` when influxd would
    not split the line from one that follows it (it must end its request).
    What cannot be written faithfully goes to ``left_out(reason, points)``."""
    columns = series.get("columns") or ()
    if len(columns) != len(m.columns) + 1:
        raise CopyFailed("the answer for measurement %r has %d columns for %d fields"
                         % (m.name, len(columns) - 1, len(m.columns)))
    values = series.get("values") or ()
    try:
        key = series_key(m.key, series.get("tags") or {})
    except CopyFailed as e:
        left_out("measurement %r: %s" % (m.name, e), len(values))
        return
    # Only a backslash or a newline outside a string can mislead influxd's splitter.
    check = b"\\" in key or b"\n" in key or any(b"\\" in p for p, _ in m.columns)
    for row in values:
        if row[0].__class__ is not int:
            raise CopyFailed("the answer for measurement %r has a time that is not an integer "
                             "(epoch=ns ignored?): %r" % (m.name, row[0]))
        try:
            fields = [prefix + write(v) for (prefix, write), v in zip(m.columns, row[1:])
                      if v is not None]
        except CopyFailed as e:
            left_out("measurement %r: %s" % (m.name, e), 1)
            continue
        if not fields:
            continue
        line = b"%s %s %d" % (key, b",".join(fields), row[0])
        if not check or splits_cleanly(line):
            yield line, False
        elif influx_line_end(line) == len(line):
            yield line, True
        else:
            left_out("measurement %r: a point of series %r cannot be written as line protocol "
                     "that influxd reads back the same"
                     % (m.name, key.decode("utf-8", "replace")), 1)


class _Copy(object):
    """One copy_range: reads slice after slice from the source and hands full
    batches to a writer greenlet, one batch written while the next is built."""

    def __init__(self, source, target, db, rp, headers, batch_points, limiter, progress,
                 should_stop, slice_done, default_rp):
        self.source = source
        self.target = target
        self.db = db
        self.rp = rp
        self.headers = dict(headers or {})
        self.batch_points = max(1, int(batch_points))
        self.limiter = limiter
        self.progress = progress
        self.should_stop = should_stop
        self.slice_done = slice_done
        self.batch: List[bytes] = []
        self.result = CopyResult(False)
        self.write = _write_request(target, db, rp, self.headers, default_rp)
        self.queued = 0  # lines handed to batches
        self.writing = None  # the greenlet writing the last batch
        self.failure: Optional[BaseException] = None  # what it raised
        self.whole = True  # nothing of the current slice was left out
        self.reasons: Dict[str, int] = {}  # why points were left out -> how many (or -1: all)

    # -- reading ---------------------------------------------------------------

    def ask(self, statements):
        """The series pieces of the source's answer to ``statements``."""
        params = [("db", self.db)]
        if self.rp:
            params.append(("rp", self.rp))
        params += [("epoch", "ns"), ("chunked", "true"),
                   ("chunk_size", str(min(self.batch_points, 10000)))]
        headers = dict(self.headers)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Accept"] = "application/json"
        body = urlencode({"q": ";".join(statements)}).encode("utf-8")
        try:
            answer = self.source.open_query("POST", urlencode(params), body, headers)
        except BackendError as e:
            raise CopyFailed("reading from %s: %s" % (self.source, e.reason))
        try:
            if answer.status != 200:
                raise CopyFailed("reading from %s: HTTP %d: %s"
                                 % (self.source, answer.status, _error_text(answer)))
            try:
                for piece in series_pieces(json_objects(answer), len(statements)):
                    yield piece
            except CopyFailed as e:
                raise CopyFailed("reading from %s: %s" % (self.source, e))
            except BackendError as e:
                raise CopyFailed("reading from %s: %s" % (self.source, e.reason))
        finally:
            answer.close()

    def schema(self):
        """The measurements of db/rp that can be copied, with their fields,
        from SHOW FIELD KEYS; those that cannot (a field whose type differs
        between shards, a name InfluxQL or line protocol cannot express) are
        left out, and said so."""
        where = "%s.%s./.*/" % (quote_ident(self.db), quote_ident(self.rp) if self.rp else "")
        fields: Dict[str, List[Tuple[str, str]]] = {}
        pieces = self.ask(["SHOW FIELD KEYS ON %s FROM %s" % (quote_ident(self.db), where)])
        try:
            for _, series in pieces:
                have = fields.setdefault(series["name"], [])
                for key, kind in series.get("values") or ():
                    have.append((key, kind))
        finally:
            pieces.close()
        measurements = []
        for name, have in fields.items():
            try:
                measurements.append(Measurement(self.db, self.rp, name, have))
            except CopyFailed as e:
                self.leave_out("measurement %r: %s" % (name, e), -1)
        return measurements

    def leave_out(self, reason, points):
        """Points (-1: a whole measurement) that are not copied, and why."""
        self.whole = False
        if len(self.reasons) < 20 or reason in self.reasons:
            n = self.reasons.get(reason, 0)
            self.reasons[reason] = -1 if points < 0 or n < 0 else n + points
        self.result.left_out += max(0, points)

    # -- writing ---------------------------------------------------------------

    def add(self, line):
        self.batch.append(line)
        self.queued += 1
        if len(self.batch) >= self.batch_points:
            self.flush()

    def flush(self):
        """Hand the batch to a writer greenlet, once the one before is written:
        the next batch is read and built while this one is written."""
        if not self.batch:
            return
        self.drain()
        self.check_stop()
        lines, self.batch = self.batch, []
        if self.limiter is not None:
            self.limiter.take(len(lines))
        self.writing = gevent.spawn(self.write_batch, lines)

    def write_batch(self, lines):
        try:
            self.send(b"\n".join(lines))
        except BaseException as e:  # for drain() to raise, in the copying greenlet
            self.failure = e
            return
        self.result.points += len(lines)
        self.result.batches += 1
        if self.progress is not None:
            self.progress(self.result.points)

    def drain(self):
        """Wait for the batch being written; raise what writing it raised."""
        writing, self.writing = self.writing, None
        if writing is not None:
            writing.join()
        failure, self.failure = self.failure, None
        if failure is not None:
            raise failure

    def send(self, body):
        endpoint, query, headers = self.write
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            sent = self.target.send(endpoint, query, body, headers)
            if sent.result == OK:
                return
            if sent.result == REJECTED:
                raise CopyFailed("writing to %s: refused: %s" % (self.target, sent.reason))
            assert sent.result == FAILED
            if attempt == WRITE_ATTEMPTS:
                raise CopyFailed("writing to %s: %s (%d attempts)"
                                 % (self.target, sent.reason, attempt))
            self.check_stop()
            gevent.sleep(WRITE_RETRY.delay(attempt))

    def check_stop(self):
        if self.should_stop is not None and self.should_stop():
            raise _Stopped()

    # -- slices ----------------------------------------------------------------

    def copy_slice(self, measurements, start, end):
        """Every point of [start, end] that can be copied; returns how many."""
        before = self.queued
        for group in _groups(measurements):
            pieces = self.ask([m.statement(start, end) for m in group])
            try:
                for sid, series in pieces:
                    if not 0 <= sid < len(group):
                        raise CopyFailed("reading from %s: an answer to statement %r of %d"
                                         % (self.source, sid, len(group)))
                    self.rows(group[sid], series)
                    gevent.sleep(0)  # a chunk's work done: the relay's other greenlets run
            finally:
                pieces.close()  # and the answer with it, now
        self.flush()
        self.drain()
        return self.queued - before

    def rows(self, m, series):
        for line, alone in series_lines(m, series, self.leave_out):
            if alone:  # in a request of its own, where nothing follows it
                self.flush()
                self.batch = [line]
                self.queued += 1
                self.flush()
            else:
                self.add(line)

    def run(self, start, end, expected_points):
        target = self.batch_points * SLICE_BATCHES
        span = end - start + 1
        if expected_points:
            width = max(1, span * target // max(1, expected_points))
        else:
            width = FIRST_SLICE_NS
        measurements = self.schema()
        everything = self.whole  # no measurement left out
        at = start
        while at <= end:
            self.check_stop()
            stop = min(end, at + width - 1)
            self.whole = everything
            copied = self.copy_slice(measurements, at, stop)
            if self.whole:
                if self.slice_done is not None:
                    self.slice_done(at, stop)
                self.result.slices += 1
            log.debug("repair %s -> %s: %s/%s [%d, %d]: %d point(s)%s", self.source, self.target,
                      self.db, self.rp or "(default)", at, stop, copied,
                      "" if self.whole else ", some left out")
            at = stop + 1
            if copied == 0:
                width *= SLICE_GROWTH
            else:
                width = max(1, min(width * SLICE_GROWTH, width * target // copied))

    def left_out_reason(self):
        """What was left out, for :attr:`CopyResult.reason`, or None."""
        if not self.reasons:
            return None
        parts = ["%s (%s)" % (reason, "all its points" if n < 0 else "%d point(s)" % n)
                 for reason, n in self.reasons.items()]
        return "not copied: " + "; ".join(parts)


def _groups(measurements):
    """The measurements in groups whose statements fit one request."""
    group: List[Measurement] = []
    size = 0
    for m in measurements:
        n = len(m.select) + 80
        if group and (len(group) >= STATEMENTS_PER_QUERY or size + n > QUERY_TEXT_LIMIT):
            yield group
            group, size = [], 0
        group.append(m)
        size += n
    if group:
        yield group


def _write_request(target, db, rp, headers, default_rp):
    """(endpoint, query string, headers) of a write of db/rp to ``target``,
    mapped onto its API as the fan-out maps a client's /write."""
    params = {"db": [db]}
    pairs = [("db", db)]
    if rp:
        params["rp"] = [rp]
        pairs.append(("rp", rp))
    pairs.append(("precision", "n"))
    query = urlencode(pairs, quote_via=quote)
    query, headers = apiv2.FromV1(params, "n", default_rp)(target, query, headers)
    return apiv2.write_endpoint(target), query, headers


def _error_text(answer):
    """The reason in an error answer: its JSON "error" or "message", else its text."""
    data = b""
    try:
        for piece in answer:
            data += piece
            if len(data) >= ERROR_BODY_LIMIT:
                break
    except BackendError:
        pass
    try:
        obj = json.loads(data)
    except ValueError:
        return snippet(data)
    if isinstance(obj, dict):
        for key in ("error", "message"):
            if isinstance(obj.get(key), str):
                return obj[key]
    return snippet(data)


def copy_range(source, target, db, rp, start, end, *, headers=None, batch_points=5000,
               limiter=None, progress=None, should_stop=None, slice_done=None,
               default_rp=None, expected_points=None) -> CopyResult:
    """Copy the points of ``db``/``rp`` (``""``: the default retention policy)
    between ``start`` and ``end`` (ns, both included) from output ``source``
    to output ``target``; a :class:`CopyResult`.

    ``headers``: credentials (``Authorization``) for both the query and the
    writes, used where an output has none of its own. ``limiter``: something
    with ``take(points)`` that sleeps to keep a rate (:func:`limiter`).
    ``progress(points)`` is called after each batch written, with the points
    copied so far; ``should_stop()`` is asked before each batch and slice;
    ``slice_done(start, end)`` is called for each time slice written whole.
    ``default_rp``: the retention policy a 2.x target's bucket is named after
    when ``rp`` is empty (the listener's default-retention-policy; else
    "autogen"). ``expected_points``: how many points the range is thought to
    hold (the ledger's count), for the width of the first slice.
    """
    if not db:
        return CopyResult(False, reason="the database is unknown (a damaged buffer record): "
                                        "there is nothing to copy from")
    if start > end:
        return CopyResult(True)
    copy = _Copy(source, target, db, rp, headers, batch_points, limiter, progress, should_stop,
                 slice_done, default_rp)
    result = copy.result
    try:
        copy.run(start, end, expected_points)
    except _Stopped:
        result.stopped = True
        result.reason = "stopped"
    except CopyFailed as e:
        result.reason = str(e)
    except BaseException:  # killed (GreenletExit), or a bug: the batch in flight goes too
        if copy.writing is not None:
            copy.writing.kill()
        raise
    if copy.writing is not None:  # the source failed while a batch was written: it ends first
        copy.writing.join()
    left_out = copy.left_out_reason()
    if result.reason is None:
        result.done = left_out is None
        result.reason = left_out
    elif left_out is not None:
        result.reason += "; " + left_out
    return result
