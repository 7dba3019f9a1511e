"""The gap ledger: which points each HTTP output missed of the writes another
output stored, so that they can be copied back (:mod:`.repair`).

A write the relay gives up for one output while another output stored it (its
buffer was full, it expired, an admin flushed it, the backend refused it, the
relay shut down with it in a memory buffer, a damaged record of a disk buffer,
an output without a buffer failed it) becomes an entry: the output, the
database and retention policy the client wrote to, the earliest and latest
timestamp of its points (nanoseconds), how many points, and why. A write
every backend failed is no gap: the client got a 5xx and owns the retry.

Entries of one output, database and retention policy merge into time ranges
(those closer than :data:`MERGE_GAP_NS` too), and past :data:`MAX_RANGES` the
two nearest neighbours merge: a range may grow, never be lost.

With a state directory the ledger survives restarts: a snapshot
(``ledger.json``) and a journal of what happened since (``ledger.journal``, one
JSON line per change, written before the change is acknowledged anywhere:
safe from SIGKILL, and fsynced every second). A memory buffer's writes are
covered too: while one holds writes, the ledger journals an *exposure* window
(the time range of what it holds, kept a minute ahead of the newest point),
cleared when the buffer drains. After a crash, an exposure that was never
cleared becomes a gap (reason "crash"): wider than needed, never missing.
"""

import fcntl
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Tuple
from urllib.parse import parse_qs

import gevent

from . import apiv2, lineprotocol
from .errors import RelayError

log = logging.getLogger(__name__)

#: Ranges closer than this (ns) merge: copying a minute both hold costs less
#: than a ledger of a range per write.
MERGE_GAP_NS = 60 * 10 ** 9
#: Ranges kept per output, database and retention policy before neighbours merge.
MAX_RANGES = 100
#: How far ahead of its newest point an exposure window is journaled, so that a
#: stream of stamped writes journals about once a minute, not once a write.
EXPOSURE_AHEAD_NS = 60 * 10 ** 9
#: Journal lines between two snapshots.
SNAPSHOT_EVERY = 10000
FSYNC_EVERY = 1.0

REASONS = ("full", "expired", "flushed", "rejected", "shutdown", "crash", "missed", "damaged")


@dataclass
class Range:
    """Points of one database and retention policy an output misses, between
    ``start`` and ``end`` (ns, both included)."""

    db: str
    rp: str
    start: int
    end: int
    points: int
    reasons: Dict[str, int] = field(default_factory=dict)  # reason -> points
    since: float = 0.0  # when the first of its entries was recorded

    def as_dict(self):
        return {"db": self.db, "rp": self.rp, "start": self.start, "end": self.end,
                "points": self.points, "reasons": dict(self.reasons), "since": round(self.since, 3)}

    @classmethod
    def from_dict(cls, d):
        return cls(d["db"], d["rp"], int(d["start"]), int(d["end"]), int(d["points"]),
                   {k: int(v) for k, v in d.get("reasons", {}).items()}, float(d.get("since", 0)))


def _merge_into(ranges, new, gap):
    """Add ``new`` to the sorted, disjoint ``ranges`` (of one db and rp),
    merging those within ``gap`` of it."""
    lo, hi = new.start - gap, new.end + gap
    keep = []
    for r in ranges:
        if r.end < lo or r.start > hi:
            keep.append(r)
            continue
        new.start = min(new.start, r.start)
        new.end = max(new.end, r.end)
        new.points += r.points
        for reason, n in r.reasons.items():
            new.reasons[reason] = new.reasons.get(reason, 0) + n
        new.since = min(new.since, r.since) if r.since else new.since
    keep.append(new)
    keep.sort(key=lambda r: r.start)
    while len(keep) > MAX_RANGES:  # the two nearest neighbours become one
        i = min(range(len(keep) - 1), key=lambda k: keep[k + 1].start - keep[k].end)
        a, b = keep[i], keep.pop(i + 1)
        a.end = max(a.end, b.end)
        a.points += b.points
        for reason, n in b.reasons.items():
            a.reasons[reason] = a.reasons.get(reason, 0) + n
    return keep


def _subtract(ranges, start, end):
    """``ranges`` without [start, end]; a range cut in two shares its points
    out by the time each piece covers."""
    out = []
    for r in ranges:
        if r.end < start or r.start > end:
            out.append(r)
            continue
        span = r.end - r.start + 1
        for a, b in ((r.start, start - 1), (end + 1, r.end)):
            if a <= b and a >= r.start and b <= r.end:
                share = (b - a + 1) / span
                piece = Range(r.db, r.rp, a, b, max(1, round(r.points * share)),
                              {k: max(1, round(v * share)) for k, v in r.reasons.items()},
                              r.since)
                out.append(piece)
    out.sort(key=lambda r: r.start)
    return out


class Ledger(object):
    """The gaps of every HTTP output of a relay, by ``(listener, output)``."""

    def __init__(self, state_dir=None):
        self.state_dir = state_dir
        self._gaps: Dict[Tuple[str, str], Dict[Tuple[str, str], List[Range]]] = {}
        # (listener, output) -> (db, rp) -> [start, end, points] held in a memory buffer
        self._exposure: Dict[Tuple[str, str], Dict[Tuple[str, str], list]] = {}
        self._seq = 0
        self._journal = None
        self._lines = 0
        self._dirty = False
        self._flusher = None
        self._lock = None
        if state_dir:
            try:
                self._open()
            except OSError as e:
                self._release()
                raise RelayError("state-dir %s: cannot use it: %s" % (state_dir, e.strerror or e))

    # -- what is missed ------------------------------------------------------------

    def record(self, who, db, rp, start, end, points, reason, when=None):
        """``who`` = (listener, output) missed ``points`` points of ``db``/``rp``
        between ``start`` and ``end`` (ns), for ``reason``."""
        if points <= 0:
            return
        when = time.time() if when is None else when
        self._journal_line({"add": [list(who), db, rp, start, end, points, reason, when]})
        self._add(tuple(who), db, rp, start, end, points, reason, when)
        log.debug("ledger: %s/%s misses %d point(s) of %s/%s (%s)", who[0], who[1], points, db,
                  rp or "(default)", reason)

    def _add(self, who, db, rp, start, end, points, reason, when):
        series = self._gaps.setdefault(who, {})
        key = (db, rp)
        series[key] = _merge_into(series.get(key, []),
                                  Range(db, rp, start, end, points, {reason: points}, when),
                                  MERGE_GAP_NS)

    def repaired(self, who, db, rp, start, end):
        """[start, end] of ``db``/``rp`` was copied to ``who``: it leaves the ledger."""
        self._journal_line({"sub": [list(who), db, rp, start, end]})
        self._sub(tuple(who), db, rp, start, end)

    def _sub(self, who, db, rp, start, end):
        series = self._gaps.get(who)
        if not series or (db, rp) not in series:
            return
        left = _subtract(series[(db, rp)], start, end)
        if left:
            series[(db, rp)] = left
        else:
            del series[(db, rp)]
            if not series:
                del self._gaps[who]

    def forget(self, who):
        """Drop every gap of ``who`` (an operator's decision); returns the points dropped."""
        points = self.points(who)
        if points:
            self._journal_line({"forget": list(who)})
        self._gaps.pop(tuple(who), None)
        return points

    def ranges(self, who):
        """Every range ``who`` misses, by database, retention policy and time."""
        series = self._gaps.get(tuple(who), {})
        return [r for key in sorted(series) for r in series[key]]

    def points(self, who):
        return sum(r.points for r in self.ranges(who))

    def overlaps(self, who, db, rp, start, end):
        """Whether ``who`` misses anything of ``db``/``rp`` in [start, end]."""
        return any(r.start <= end and r.end >= start
                   for r in self._gaps.get(tuple(who), {}).get((db, rp), ()))

    def status(self, who):
        """What /status shows of ``who``'s gaps."""
        ranges = self.ranges(who)
        return {"points": sum(r.points for r in ranges),
                "ranges": [r.as_dict() for r in ranges]}

    # -- what a memory buffer holds ----------------------------------------------

    def expose(self, who, db, rp, start, end, points):
        """A memory buffer of ``who`` holds points of ``db``/``rp`` in [start, end]:
        should the relay die now, they are a gap. Journaled only when the
        window grows past what was journaled (kept a minute ahead)."""
        who = tuple(who)
        windows = self._exposure.setdefault(who, {})
        w = windows.get((db, rp))
        if w is not None and w[0] <= start and end <= w[1]:
            return
        if w is None:
            w = windows[(db, rp)] = [start, end + EXPOSURE_AHEAD_NS]
        else:
            w[0] = min(w[0], start)
            w[1] = max(w[1], end + EXPOSURE_AHEAD_NS)
        self._journal_line({"expose": [list(who), db, rp, w[0], w[1]]})

    def covered(self, who):
        """``who``'s memory buffer is empty: what it held reached the backend (or was recorded)."""
        if self._exposure.pop(tuple(who), None):
            self._journal_line({"covered": list(who)})

    # -- the files ---------------------------------------------------------------------

    def _file(self, name):
        return os.path.join(self.state_dir, name)

    def _open(self):
        os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        self._lock = os.open(self._file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._release()
            raise RelayError("state-dir %s is in use by another relay process" % self.state_dir)
        exposed = {}
        try:
            with open(self._file("ledger.json"), "rb") as f:
                snapshot = json.loads(f.read().decode("utf-8"))
            self._seq = int(snapshot.get("seq", 0))
            for item in snapshot.get("gaps", []):
                who = tuple(item["who"])
                for d in item["ranges"]:
                    r = Range.from_dict(d)
                    self._gaps.setdefault(who, {}).setdefault((r.db, r.rp), []).append(r)
            for item in snapshot.get("exposed", []):
                exposed[(tuple(item["who"]), item["db"], item["rp"])] = (item["start"], item["end"])
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("ledger: %s is unreadable (%s): starting from the journal alone",
                      self._file("ledger.json"), e)
        try:
            with open(self._file("ledger.journal"), "rb") as f:
                for n, raw in enumerate(f, 1):
                    try:
                        line = json.loads(raw.decode("utf-8"))
                    except ValueError:
                        log.warning("ledger: %s line %d is unreadable (a torn last write?): "
                                    "skipped", self._file("ledger.journal"), n)
                        continue
                    if line.get("seq", 0) > self._seq:
                        self._replay(line, exposed)
                        self._seq = line["seq"]
        except FileNotFoundError:
            pass
        # What a memory buffer held when the relay last stopped without saying
        # it was delivered: a gap now.
        for (who, db, rp), (start, end) in exposed.items():
            log.error("ledger: output %s of listener %s may miss points of %s/%s between %d "
                      "and %d: the relay stopped with them in a memory buffer", who[1], who[0],
                      db, rp or "(default)", start, end)
            self._add(who, db, rp, start, end, 1, "crash", time.time())
        self._snapshot()
        self._journal = os.open(self._file("ledger.journal"),
                                os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        self._flusher = gevent.spawn(self._flush_every)

    def _replay(self, line, exposed):
        if "add" in line:
            who, db, rp, start, end, points, reason, when = line["add"]
            self._add(tuple(who), db, rp, start, end, points, reason, when)
        elif "sub" in line:
            who, db, rp, start, end = line["sub"]
            self._sub(tuple(who), db, rp, start, end)
        elif "forget" in line:
            self._gaps.pop(tuple(line["forget"]), None)
        elif "expose" in line:
            who, db, rp, start, end = line["expose"]
            exposed[(tuple(who), db, rp)] = (start, end)
        elif "covered" in line:
            who = tuple(line["covered"])
            for key in [k for k in exposed if k[0] == who]:
                del exposed[key]

    def _journal_line(self, obj):
        if self._journal is None:
            return
        self._seq += 1
        obj["seq"] = self._seq
        data = json.dumps(obj, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            os.write(self._journal, data)  # in the page cache: safe from SIGKILL
        except OSError as e:
            log.error("ledger: cannot write %s: %s (a gap may be forgotten at restart)",
                      self._file("ledger.journal"), e)
            return
        self._dirty = True
        self._lines += 1
        if self._lines >= SNAPSHOT_EVERY:
            self._snapshot()

    def _snapshot(self):
        """Write every range and exposure, then start the journal afresh."""
        data = {
            "seq": self._seq,
            "gaps": [{"who": list(who), "ranges": [r.as_dict() for key in sorted(series)
                                                   for r in series[key]]}
                     for who, series in sorted(self._gaps.items())],
            "exposed": [{"who": list(who), "db": db, "rp": rp, "start": w[0], "end": w[1]}
                        for who, windows in self._exposure.items()
                        for (db, rp), w in windows.items()],
        }
        tmp = self._file("ledger.json.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, json.dumps(data, separators=(",", ":")).encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._file("ledger.json"))
            dir_fd = os.open(self.state_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as e:
            log.error("ledger: cannot write %s: %s", self._file("ledger.json"), e)
            return
        if self._journal is not None:
            # The snapshot holds everything up to seq: what the journal held is in it.
            os.ftruncate(self._journal, 0)
        self._lines = 0

    def _flush_every(self):
        while True:
            gevent.sleep(FSYNC_EVERY)
            if self._dirty and self._journal is not None:
                self._dirty = False
                try:
                    gevent.get_hub().threadpool.apply(os.fsync, (self._journal,))
                except OSError as e:
                    log.error("ledger: fsync of %s failed: %s", self._file("ledger.journal"), e)

    def close(self):
        if self._flusher is not None:
            self._flusher.kill()
            self._flusher = None
        if self._journal is not None:
            self._snapshot()
            os.close(self._journal)
            self._journal = None
        self._release()

    def _release(self):
        if self._lock is not None:
            os.close(self._lock)  # and with it the flock
            self._lock = None


# -- what a write covers -------------------------------------------------------------


def extent(endpoints, key, body):
    """``(db, rp, start, end, points)`` of a write as the relay sent it to an
    output (its retry-buffer key and body), or None if it holds no point.

    The lines were stamped by the relay when they had no timestamp, so every
    line's last field is its time, in the request's precision: read by
    :func:`.lineprotocol.times`, without scanning the lines (a range that may
    be a little wider than the points', and a count a little higher, when a
    string field spans lines).
    """
    endpoint, query, _ = key
    params = parse_qs(query, keep_blank_values=True)
    if endpoint == endpoints.write_prom:
        return _prom_extent(params, body)
    if endpoint == endpoints.write_v2:
        bucket = params.get("bucket", [""])[0]
        db, _, rp = bucket.partition("/")
        unit = apiv2.PRECISION_NS.get(params.get("precision", ["ns"])[0] or "ns", 1)
    else:
        db = params.get("db", [""])[0]
        rp = params.get("rp", [""])[0]
        unit = lineprotocol.PRECISION_NS.get(params.get("precision", ["n"])[0] or "n", 1)
    times = lineprotocol.times(body)
    if times is None:
        return None
    start, end, n = times
    return db, rp, start * unit, end * unit, n


def _prom_extent(params, body):
    """A Prometheus remote write (snappy protobuf): its samples' times."""
    db = params.get("db", [""])[0]
    rp = params.get("rp", [""])[0]
    try:
        times = list(_prom_sample_times(_unsnappy(body)))
    except (ValueError, IndexError):
        return None
    if not times:
        return None
    return db, rp, min(times) * 10 ** 6, max(times) * 10 ** 6, len(times)


def _varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data):
    """(field number, wire type, value) of a protobuf message, in order."""
    i, n = 0, len(data)
    while i < n:
        tag, i = _varint(data, i)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wire)
        yield number, wire, value


def _prom_sample_times(message):
    """Timestamps (ms) of every sample of a WriteRequest: timeseries = 1,
    samples = 2 in each, timestamp = 2 in each sample."""
    for number, wire, series in _fields(message):
        if number == 1 and wire == 2:
            for n2, w2, sample in _fields(series):
                if n2 == 2 and w2 == 2:
                    for n3, w3, value in _fields(sample):
                        if n3 == 2 and w3 == 0:
                            yield value - (1 << 64) if value >= 1 << 63 else value


def _unsnappy(data):
    """Snappy's block format, decoded (Prometheus remote write bodies)."""
    length, i = _varint(data, 0)
    out = bytearray()
    n = len(data)
    while i < n:
        tag = data[i]
        i += 1
        kind = tag & 3
        if kind == 0:  # a literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[i:i + extra], "little")
                i += extra
            size += 1
            out += data[i:i + size]
            i += size
            continue
        if kind == 1:
            size = ((tag >> 2) & 7) + 4
            offset = ((tag >> 5) << 8) | data[i]
            i += 1
        elif kind == 2:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[i:i + 2], "little")
            i += 2
        else:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[i:i + 4], "little")
            i += 4
        if not 0 < offset <= len(out):
            raise ValueError("bad snappy offset")
        start = len(out) - offset
        for k in range(size):  # may overlap what it copies
            out.append(out[start + k])
    if len(out) != length:
        raise ValueError("snappy length mismatch")
    return bytes(out)


class NullLedger(object):
    """A ledger that keeps nothing, for outputs built without one."""

    def record(self, *args, **kwargs):
        pass

    def expose(self, *args, **kwargs):
        pass

    def covered(self, *args, **kwargs):
        pass

    def status(self, who):
        return {"points": 0, "ranges": []}

    def points(self, who):
        return 0

    def ranges(self, who):
        return []

    def overlaps(self, *args):
        return False


NULL = NullLedger()
