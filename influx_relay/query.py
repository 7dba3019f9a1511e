"""Reads through the relay (``query-enabled`` on an HTTP listener): each query
goes to one output whose backend holds everything, and its answer streams back.

The rules a client can rely on:

* ``GET|POST /query`` goes to the first *ready* output (:meth:`.Output.readiness`:
  it answers its ping, holds no backlog, misses no point another output holds),
  in ``query-order`` and then config order. ``POST /api/v2/query`` goes to ready
  ``api = "v2"`` outputs only, ``POST /api/v1/prom/read`` (Prometheus remote
  read) to ready ``api = "v1"`` ones, under the same rules.
  ``X-Relay-Backend`` names the output that answered.
* A backend that fails before answering (connection refused or closed, TLS)
  or answers 5xx (or 429, or a redirect) is passed over for the next one, as
  long as no byte of the answer went to the client. Its 4xx is the answer: the
  query is wrong. A backend that does not begin its answer within the output's
  ``timeout`` is not passed over (the query may still be running there, and
  another backend would run it a second time): 504.
* Once the first byte went to the client, the answer is that backend's: a
  failure then cuts it short (a chunked answer without its last chunk), and is
  logged.
* When no output is ready, ``query-fallback = "least-lagging"`` asks the up
  output with the smallest backlog (then the smallest gap, then the first in
  order) and says why it may be incomplete in ``X-Relay-Stale``; ``"refuse"``
  answers 503.
* A query that would change data or schema would reach one backend only: it
  is refused (400, naming /admin) before any backend is asked. See
  :func:`influxql_write` and :func:`flux_write`.
* The answer streams: each piece the backend sends goes to the client as it
  comes, so an answer of millions of rows never sits in the relay's memory.

Readiness pings are cached ``health-cache-ms`` (shared with /health/<output>):
queries cost at most one ping per output per period, and wait at most
:data:`PING_TIMEOUT` for one. With ``workers``, an output this worker finds
ready is asked of the other workers too (their own backlogs and gaps), one
request on the control socket to each.
"""

import bisect
import json
import logging
import re
from typing import Callable, List, Optional, Tuple
from urllib.parse import parse_qsl, urlencode

import gevent

from . import apiv2, logs
from .errors import BackendError
from .output import Readiness
from .peers import merge_readiness
from .responses import Response, error_response, retryable

log = logging.getLogger(__name__)

#: Seconds a query waits for a backend's readiness ping at most (or
#: health-timeout-ms when shorter): a backend slower than this to answer its
#: ping counts as down until the next one.
PING_TIMEOUT = 1.0
#: Bytes of a failed (5xx) answer kept, to pass on if every backend fails.
ERROR_BODY_LIMIT = 64 * 1024
#: Longest query text checked (a q parameter, a Flux query), in characters.
MAX_QUERY_CHARS = 256 * 1024
#: Ways of reading a query (about three per "/" in it) the check goes through
#: at most: it holds the relay's event loop, some 0.1 s for this many.
MAX_READINGS = 50000

#: Request headers a query passes to the backend.
QUERY_HEADERS = ("Authorization", "Accept", "Accept-Encoding")
#: Headers of a Prometheus remote read passed to the backend.
PROM_READ_HEADERS = ("Authorization", "Content-Type", "Content-Encoding",
                     "X-Prometheus-Remote-Read-Version", "Accept-Encoding")
#: Headers of the backend's answer passed to the client (with its content
#: type). X-Influxdb-Version is not among them: every answer of the relay
#: has its own.
ANSWER_HEADERS = ("Content-Encoding", "X-Influxdb-Error", "Request-Id", "X-Request-Id",
                  "X-Prometheus-Remote-Read-Version")

_ADMIN_HINT = ("would reach only one backend: send it to /admin, which sends it to every "
               "output")


class BrokenAnswer(ConnectionAbortedError):
    """A backend failed after part of its answer went to the client: the
    connection to the client closes (an OSError, so the server just closes)."""


class QueryTooComplex(ValueError):
    """A query the statement check gives up on (see :func:`_explore`)."""


# -- which queries write -------------------------------------------------------
#
# InfluxQL's scanner reads a "/" three ways: a regex where the parser expects
# one (after =~, FROM, SELECT, a comma, ...), else a comment ("/*") or a
# division. Rather than model where the parser expects one, the check reads
# every "/" all the ways it may be read, and refuses the query if any reading
# finds a write: whatever InfluxDB makes of it, the real reading is among them.
# Between two "/", a reading is one regex search for the next thing that
# matters (a quote, ";", "--", "/", the word INTO); each (position, state) is
# read on from once, so the work grows with the query's length. The price: a
# regex holding the word INTO, or ";" and then a write keyword, is refused too.

#: Statements (their first keyword) that change data or schema. SET PASSWORD
#: changes a user; KILL stops a query on one backend only.
WRITE_KEYWORDS = frozenset(("ALTER", "CREATE", "DELETE", "DROP", "GRANT", "KILL", "REVOKE", "SET"))

_START, _IN = 0, 1  # at a statement's first token; past it

_WS = re.compile(r"[ \t\r\n]*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# (?=(...))\1 matches what ... matches first, and never less (an atomic group,
# which Python's re has only from 3.11): "/a\/" is no regex, not "/a\/".
_QUOTED = {q: re.compile(r"%s(?:[^%s\\\r\n]|\\[n\\\"'])*%s" % (q, q, q)) for q in "'\""}
_REGEX = re.compile(r"/(?=((?:\\/|[^/\r\n])*))\1/")
#: What matters past a statement's first token (a quote also ends a"b"-style
#: identifiers and $"b" parameters, read the same way).
_IN_NEXT = re.compile(r"""[;'"/-]|(?<![A-Za-z0-9_$])into(?![A-Za-z0-9_])""", re.I)


def influxql_write(q: str) -> Optional[str]:
    """What in InfluxQL query ``q`` changes data or schema ("DROP", "SELECT ...
    INTO"), in any of its statements, or None for a query that only reads.

    Keywords in any case, split by any whitespace or comments, count; inside a
    string ('...'), a quoted identifier ("...") or a comment they do not. A
    query InfluxDB cannot even scan (a string left open) is None: InfluxDB
    refuses it whole. Raises :class:`QueryTooComplex` for a query longer than
    MAX_QUERY_CHARS, or with more ways to read it than MAX_READINGS.
    """
    return _explore(q, _influxql_reading, _START)


def _influxql_reading(scan, pos, phase):
    """Read on from ``pos`` to the next "/" (or the end); the states each way of
    reading that "/" leads to (none at the end, or where InfluxDB's scanner
    fails: it then refuses the whole query). Raises _Found at a write."""
    text, end = scan.text, scan.end
    while True:
        if phase == _START:
            pos = _WS.match(text, pos).end()
            if pos >= end:
                return ()
            c = text[pos]
            if c == ";":
                pos += 1
                continue
            if text.startswith("--", pos):
                pos = scan.line_end(pos)
                continue
            if c == "/":
                return _slash(scan, pos, _START)
            m = _WORD.match(text, pos)
            phase = _IN
            if m:
                pos = m.end()
                if text.startswith('"', pos):
                    continue  # a"b" is one identifier, not a keyword
                word = m.group().upper()
                if word in WRITE_KEYWORDS:
                    raise _Found(word)
                if word == "INTO":
                    raise _Found("SELECT ... INTO")
            continue
        m = _IN_NEXT.search(text, pos)
        if m is None:
            return ()
        pos = m.start()
        c = text[pos]
        if c == ";":
            pos, phase = pos + 1, _START
        elif c in "'\"":
            m = _QUOTED[c].match(text, pos)
            if m is None:
                return ()  # a bad string: InfluxDB refuses the query
            pos = m.end()
        elif c == "-":
            pos = scan.line_end(pos) if text.startswith("--", pos) else pos + 1
        elif c == "/":
            return _slash(scan, pos, _IN)
        else:
            raise _Found("SELECT ... INTO")


def _slash(scan, pos, phase):
    """The ways InfluxQL may read the "/" at ``pos``: a comment ("/*", which
    keeps ``phase``) or a division, and a regex."""
    ways = []
    if scan.text.startswith("/*", pos):
        end = scan.comment_end(pos + 2)
        if end >= 0:
            ways.append((end, phase))
    else:
        ways.append((pos + 1, _IN))
    m = _REGEX.match(scan.text, pos)
    if m:
        ways.append((m.end(), _IN))
    return ways


# Flux: a write is a call of to() or wideTo() (or any function of that name,
# sql.to() and kafka.to() included), or of influxdb.api(); any mention of
# those names counts, so that `f = to` then `f(...)` is refused too, and so
# does one right after a digit (`5to(...)` may read as 5, then to(...)).
# Strings ("..." with ${...} interpolations, which hold code) and // comments
# are skipped; a lone "/" is read both as a division and as a regex (each way
# Flux may end one), as above. A regex holding the word "to" is refused too.

#: Names whose mention makes a Flux query a write.
FLUX_WRITERS = frozenset(("to", "wideTo", "api"))
#: Interpolations in strings in interpolations... deeper than this: too complex.
MAX_FLUX_NESTING = 32

_FLUX_CODE_NEXT = re.compile(r'["/{}]|(?<![^\W\d])(?:to|wideTo|api)(?!\w)')
_FLUX_STRING_NEXT = re.compile(r'["\\]|\$\{')
_FLUX_REGEXES = (re.compile(r"/[^/]+/"), re.compile(r"/(?=((?:\\/|[^/])+))\1/"),
                 re.compile(r"/(?:\\[\s\S]|[^/\\])+/"))


def flux_write(query: str) -> Optional[str]:
    """What in Flux ``query`` writes ("to()"), or None for one that only reads
    (:class:`QueryTooComplex` as for InfluxQL, and past MAX_FLUX_NESTING)."""
    return _explore(query, _flux_reading, ())


def _flux_reading(scan, pos, frames):
    """As _influxql_reading, for Flux. ``frames``: the strings ("s") and
    interpolations (an int: their depth of braces) ``pos`` is in, innermost
    last; () in the query's own code."""
    text = scan.text
    while True:
        if frames and frames[-1] == "s":
            m = _FLUX_STRING_NEXT.search(text, pos)
            if m is None:
                return ()  # a string left open
            pos, c = m.end(), m.group()
            if c == '"':
                frames = frames[:-1]
            elif c == "\\":
                pos += 1
            else:
                frames += (0,)
            continue
        m = _FLUX_CODE_NEXT.search(text, pos)
        if m is None:
            return ()
        pos, c = m.start(), m.group()
        if c == '"':
            pos, frames = pos + 1, frames + ("s",)
            if len(frames) > MAX_FLUX_NESTING:
                raise QueryTooComplex("strings and interpolations nest too deep")
        elif c == "{":
            pos += 1
            if frames:
                frames = frames[:-1] + (frames[-1] + 1,)
        elif c == "}":
            pos += 1
            if frames and frames[-1]:
                frames = frames[:-1] + (frames[-1] - 1,)
            elif frames:  # the end of an interpolation: back in its string
                frames = frames[:-1]
        elif c == "/":
            if text.startswith("//", pos):  # a comment, in either mode of Flux's scanner
                pos = scan.line_end(pos)
                continue
            ways = [(pos + 1, frames)]
            for regex in _FLUX_REGEXES:
                m = regex.match(text, pos)
                if m:
                    ways.append((m.end(), frames))
            return ways
        else:
            raise _Found(c + "()")


class _Found(Exception):
    def __init__(self, what):
        super().__init__(what)
        self.what = what


def _explore(text, reading, start):
    """Read ``text`` every way ``reading`` allows, on from each (position,
    state) once; what the first reading that finds a write found, or None."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryTooComplex("the query is longer than %d characters" % MAX_QUERY_CHARS)
    scan = _Text(text)
    seen = set()
    todo = [(0, start)]
    try:
        while todo:
            state = todo.pop()
            if state not in seen:
                seen.add(state)
                if len(seen) > MAX_READINGS:
                    raise QueryTooComplex('it has too many "/" (regexes, comments, divisions) '
                                          "to read every way")
                todo.extend(reading(scan, *state))
    except _Found as found:
        return found.what
    return None


class _Text(object):
    """A query's text, and where its lines and comments end (found once for all
    readings)."""

    __slots__ = ("text", "end", "_lines", "_comments")

    def __init__(self, text):
        self.text = text
        self.end = len(text)
        self._lines = self._comments = None

    def line_end(self, pos):
        """Just past the line end (CR or LF) at or after ``pos``, or the end."""
        if self._lines is None:
            self._lines = [m.end() for m in re.finditer(r"[\r\n]", self.text)]
        i = bisect.bisect_right(self._lines, pos)
        return self._lines[i] if i < len(self._lines) else self.end

    def comment_end(self, pos):
        """Just past the first "*/" at or after ``pos``, or -1."""
        if self._comments is None:
            self._comments = [m.end() for m in re.finditer(r"\*/", self.text)]
        i = bisect.bisect_left(self._comments, pos + 2)
        return self._comments[i] if i < len(self._comments) else -1


# -- routing -------------------------------------------------------------------


class Reads(object):
    """The read routes of one listener, each ``handler(request) -> Response``
    (the listener checks the method first): :meth:`query`, :meth:`query_v2`,
    :meth:`prom_read`. ``read_body(request, decode=True)`` reads a body or
    raises the listener's error (413, 415, ...). With workers, ``others(output)``
    is what the other workers say of an output's readiness: ``(views, missing)``,
    their /health/<output> answers and how many did not answer."""

    def __init__(self, cfg, outputs, read_body, others=None):
        self.read_body = read_body
        self.others = others
        self.fallback = cfg.query_fallback
        self.cache_s = cfg.health_cache_ms / 1000.0
        self.ping_timeout = min(cfg.health_timeout_ms / 1000.0, PING_TIMEOUT)
        named = {o.name: o for o in outputs}
        first = [named[name] for name in dict.fromkeys(cfg.query_order)]
        ordered = first + [o for o in outputs if o not in first]
        self.query_outputs = ordered
        self.v2_outputs = [o for o in ordered if o.cfg.api == "v2"]
        self.prom_outputs = [o for o in ordered if o.cfg.api == "v1"]
        self._warn_stale = logs.Throttled(log)
        self._warn_failed = logs.Throttled(log)
        self._warn_broken = logs.Throttled(log, logging.ERROR)

    # -- /query ------------------------------------------------------------

    def query(self, request):
        """InfluxDB 1.x's query: ``q`` in the query string or a form body."""
        url = parse_qsl(request.query, keep_blank_values=True)
        form = request.form(self.read_body(request)) if request.method == "POST" else []
        if form is None:
            return error_response(415, "send q in the query string or as a form field "
                                       "(application/x-www-form-urlencoded)")
        # As InfluxDB (Go's FormValue): the form body's q before the query string's.
        q = next((v for k, v in form + url if k == "q"), "").strip()
        if not q:
            return error_response(400, 'missing required parameter "q"')
        refused = _refusal(influxql_write, q, "statement")
        if refused:
            log.info("refused a query from %s: %s", request.remote, refused)
            return error_response(400, refused)
        # The backend gets the q that was checked, and only that one.
        url = [(k, v) for k, v in url if k != "q"]
        headers = _pick(request, QUERY_HEADERS)
        if request.method == "GET":
            query, body = urlencode(url + [("q", q)]), b""
        else:
            query = urlencode(url)
            body = urlencode([(k, v) for k, v in form if k != "q"] + [("q", q)]).encode("utf-8")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return self.ask(self.query_outputs, request, request.method, body, headers,
                        lambda o: (o.cfg.endpoints.query, query), error_response)

    # -- /api/v2/query -----------------------------------------------------

    def query_v2(self, request):
        """InfluxDB 2.x's query (Flux, as JSON or application/vnd.flux), to
        ``api = "v2"`` outputs; errors in 2.x's shape."""
        error = apiv2.error_response
        if not self.v2_outputs:
            return error(404, 'no output of this listener has api = "v2"')
        body = self.read_body(request)
        ctype = request.header("content-type")
        try:
            refused = _v2_refusal(body, ctype)
        except ValueError as e:
            return error(400, "failed to decode request body: %s" % str(e)[:200])
        if refused:
            log.info("refused a query from %s: %s", request.remote, refused)
            return error(400, refused)
        headers = _pick(request, QUERY_HEADERS)
        headers["Content-Type"] = ctype or "application/json"
        params = parse_qsl(request.query, keep_blank_values=True)
        has_org = any(k in ("org", "orgID") for k, _ in params)

        def target(output):
            if output.cfg.org and not has_org:
                return output.cfg.endpoints.query_v2, urlencode(params + [("org", output.cfg.org)])
            return output.cfg.endpoints.query_v2, request.query

        return self.ask(self.v2_outputs, request, "POST", body, headers, target, error)

    # -- /api/v1/prom/read -------------------------------------------------

    def prom_read(self, request):
        """A Prometheus remote read, passed as it came to api = "v1" outputs'
        read_prom endpoint (it only reads: nothing to check)."""
        if not self.prom_outputs:
            return error_response(404, 'no output of this listener has api = "v1"')
        body = self.read_body(request, decode=False)
        return self.ask(self.prom_outputs, request, "POST", body,
                        _pick(request, PROM_READ_HEADERS),
                        lambda o: (o.cfg.endpoints.read_prom, request.query), error_response)

    # -- choosing the backend ------------------------------------------------

    def ask(self, outputs, request, method, body, headers, target, error):
        """Send the query to the first ready output of ``outputs`` that answers
        (``target(output)``: its endpoint and query string), else as
        ``query-fallback`` says; the client's Response."""
        failures = []  # "name: why", in order
        failed = None  # the last 5xx answer, passed on if nothing better comes
        states = []
        for output in outputs:
            ready = self.readiness(output)
            states.append((output, ready))
            if ready.status != "ready":
                continue
            response, failed = self._try(output, method, body, headers, target, error, failures, failed)
            if response is not None:
                request.note = "backend=%s" % output.name
                return response
        stale = sorted(((r.backlog_bytes, r.gap_points, i), o, r)
                       for i, (o, r) in enumerate(states) if r.status not in ("ready", "down"))
        if stale and self.fallback == "least-lagging":
            for _, output, ready in stale:
                response, failed = self._try(output, method, body, headers, target, error,
                                             failures, failed)
                if response is not None:
                    why = _header_text("%s: %s: %s" % (output.name, ready.status, ready.reason))
                    self._warn_stale("a query was answered by output %s, which may miss points "
                                     "(no output was ready): %s", output, why)
                    request.note = "backend=%s stale" % output.name
                    return response._replace(headers=response.headers + (("X-Relay-Stale", why),))
        if failed is not None:
            return failed
        if failures:
            message = "no output could answer: %s" % "; ".join(failures)
        elif stale:
            message = "no output is ready to answer queries (query-fallback = \"refuse\"): %s" % (
                "; ".join("%s: %s: %s" % (o.name, r.status, r.reason) for _, o, r in stale))
        else:
            message = "no output is up to answer queries: %s" % "; ".join(
                "%s: %s" % (o.name, r.reason) for o, r in states)
        return error(503, message[:2000])

    def readiness(self, output) -> Readiness:
        """Whether ``output`` may serve reads: as this process sees it and, with
        workers, as every other one does too (a backlog or gap in any of them
        makes it not ready; a worker that does not answer vouches for nothing)."""
        mine = output.readiness(self.cache_s, self.ping_timeout)
        if self.others is None or mine.status != "ready":
            return mine
        views, missing = self.others(output)
        if missing:
            views = views + [{"status": "down", "reason": "%d other worker(s) did not answer"
                                                          % missing}]
        merged = merge_readiness([mine.as_dict()] + views)
        return Readiness(merged["status"], merged.get("backlog_bytes", 0),
                         merged.get("oldest_s", 0.0), merged.get("gap_points", 0),
                         merged.get("reason", ""))

    def _try(self, output, method, body, headers, target, error, failures, failed):
        """``(Response, failed)``: the answer of ``output``'s backend for the
        client, or (None, the 5xx answer to keep) when it failed before its
        first byte, noted in ``failures``."""
        endpoint, query = target(output)
        try:
            answer = output.open_query(method, query, body, headers, endpoint)
        except BackendError as e:
            if isinstance(e.__context__, gevent.Timeout):
                self._warn_failed("output %s: a query had no answer within its timeout (%gs): "
                                  "504, not tried on another output", output, output.cfg.timeout)
                response = error(504, "output %s: %s" % (output, e.reason))
                return response._replace(headers=(("X-Relay-Backend", output.name),)), failed
            return self._failed(output, e.reason, failures, failed)
        if retryable(answer.status):
            content = _read_some(answer, ERROR_BODY_LIMIT)
            kept = Response(answer.status, content, answer.content_type,
                            _passed(answer) + (("X-Relay-Backend", output.name),))
            return self._failed(output, "HTTP %d" % answer.status, failures, kept)
        pieces = iter(answer)
        try:
            first = next(pieces, b"")
        except BackendError as e:
            answer.close()
            return self._failed(output, e.reason, failures, failed)
        headers = _passed(answer) + (("X-Relay-Backend", output.name),)
        if answer.status in (204, 304):
            return Response(answer.status, b"", "", headers), failed
        return Response(answer.status, self._stream(output, answer, pieces, first),
                        answer.content_type, headers), failed

    def _failed(self, output, reason, failures, failed):
        failures.append("%s: %s" % (output.name, reason))
        self._warn_failed("output %s: a query failed before any byte of its answer, tried on "
                          "the next output: %s", output, reason)
        return None, failed

    def _stream(self, output, answer, pieces, first):
        """The answer's body, piece by piece as the backend sends it."""
        sent = 0
        try:
            if first:
                sent = len(first)
                yield first
            for piece in pieces:
                sent += len(piece)
                yield piece
        except BackendError as e:
            self._warn_broken("output %s: a query's answer broke after %d bytes went to the "
                              "client (its answer is cut short): %s", output, sent, e.reason)
            raise BrokenAnswer(e.reason) from None
        finally:
            pieces.close()
            answer.close()


def _refusal(check: Callable[[str], Optional[str]], text: str, what: str) -> Optional[str]:
    """The 400 message for a query that writes (or is beyond checking), or None."""
    try:
        found = check(text)
    except QueryTooComplex as e:
        return "the relay cannot tell whether this query changes data: %s" % e
    if found is None:
        return None
    return "a %s that changes data or schema (%s) %s" % (what, found, _ADMIN_HINT)


def _v2_refusal(body: bytes, ctype: str) -> Optional[str]:
    """The refusal of a /api/v2/query body, or None: Flux (raw, or JSON's
    ``query``, and the names in its ``extern``), or InfluxQL (``"type":
    "influxql"``). ValueError when the body is not what it says."""
    text = body.decode("utf-8")
    if ctype.split(";")[0].strip().lower() == "application/vnd.flux":
        return _refusal(flux_write, text, "query")
    # As Go's encoding/json decodes it into InfluxDB's request: keys in any
    # case, the last one wins; the extern AST's names are looked at too.
    writers = []

    def pairs(items):
        for key, value in items:
            if key.lower() == "name" and isinstance(value, str) and value in FLUX_WRITERS:
                writers.append(value)
        return _Object(items)

    top = json.loads(text, object_pairs_hook=pairs)
    if not isinstance(top, _Object):
        raise ValueError("not a JSON object")
    fields = {}
    for key, value in top:
        fields[key.lower()] = value
    query, kind = fields.get("query"), fields.get("type") or "flux"
    if not isinstance(query, str) or not isinstance(kind, str):
        raise ValueError("query and type must be strings")
    if kind.lower() == "influxql":
        return _refusal(influxql_write, query, "statement")
    refused = _refusal(flux_write, query, "query")
    if refused is None and writers:  # in extern: an AST of code run before the query
        refused = "a query whose extern names %s() %s" % (writers[0], _ADMIN_HINT)
    return refused


class _Object(list):
    """A JSON object's (key, value) pairs, as they came."""


def _pick(request, names) -> dict:
    """The headers of ``request`` among ``names``, to send on."""
    out = {}
    for name in names:
        value = request.header(name.lower())
        if value:
            out[name] = value
    return out


def _passed(answer) -> Tuple[Tuple[str, str], ...]:
    """The headers of a backend's answer that go to the client."""
    return tuple((name, answer.headers[name.lower()]) for name in ANSWER_HEADERS
                 if answer.headers.get(name.lower()))


def _read_some(answer, limit: int) -> bytes:
    """Up to ``limit`` bytes of a (failed) answer's body; the connection is let go."""
    pieces: List[bytes] = []
    size = 0
    try:
        for piece in answer:
            pieces.append(piece)
            size += len(piece)
            if size >= limit:
                break
    except BackendError:
        pass
    finally:
        answer.close()
    return b"".join(pieces)[:limit]


def _header_text(text: str) -> str:
    """``text`` as a header value: printable ASCII, at most 300 characters."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)[:300]
