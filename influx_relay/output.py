"""An HTTP output: a backend, the retry buffer of what it has missed, and the
counters of both.

Callers ask an output to do things; they never reach through it to its
backend: :meth:`Output.send` makes a direct write (the fan-out's), :meth:`~Output.hold`
queues one for later, :meth:`~Output.ping` and :meth:`~Output.query` serve /health
and /admin. Each does its own accounting, in :class:`OutputCounters`, and every
write it gives up that another output stored goes into the gap ledger
(:mod:`.ledger`), to be repaired.

While an output's buffer is empty, writes go to its backend directly. Once it
holds anything, new writes for that backend join the end of the buffer instead
of overtaking it, and one greenlet per output sends the buffer oldest first,
batching writes that share an endpoint, query string and credentials, until it
is empty again. So a backend that was down gets every write it missed, in the
order the relay acknowledged them.
"""

import bisect
import dataclasses
import logging
import shutil
import time
from typing import Dict, NamedTuple, Optional, Tuple

import gevent
from gevent.event import Event

from . import ledger as ledger_mod, logs, text
from .backend import Backend, HTTPBackend
from .buffer import PENDING, READY, BufferFull, Entry, RetryBuffer, make_buffer
from .coalesce import CoalesceStats, CoalescingBackend
from .errors import BackendError
from .httpclient import Streamed
from .responses import Response, retryable
from .retry import RetryPolicy

log = logging.getLogger(__name__)

#: What a direct write to a backend came to.
OK, REJECTED, FAILED = "ok", "rejected", "failed"

#: Upper bounds (seconds) of the direct write latency histogram's buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Results of a direct write, plus "buffered": queued for a retry.
WRITE_RESULTS = (OK, REJECTED, FAILED, "buffered")
RETRY_RESULTS = (OK, REJECTED, FAILED)
#: Why a write another backend took never reached this one: its buffer was full;
#: the backend refused it on retry; it waited longer than buffer-max-age; an
#: admin flushed it; or the output has no buffer and its backend failed it.
DROP_REASONS = ("full", "rejected", "expired", "flushed", "missed")

#: Requests in flight to one backend at once, per pool-size; with
#: max-in-flight-mb bytes, the bound past which a write is not sent to it: it
#: counts as failed for that backend (buffered if the output has a buffer, else
#: missed), so a backend that accepts connections and never answers cannot
#: hold the relay's memory and file descriptors. One write larger than the
#: limit still goes, alone.
MAX_IN_FLIGHT_REQUESTS_PER_POOL_SLOT = 4
#: Seconds between two progress lines of a backlog being replayed.
REPLAY_LOG_EVERY = 10.0


class Replay(object):
    """A backlog being delivered: how far it is, how fast, how long to go."""

    __slots__ = ("started", "bytes", "points", "writes", "logged")

    def __init__(self):
        self.started = self.logged = time.monotonic()
        self.bytes = self.points = self.writes = 0

    def figures(self, left):
        """``(percent, points/s, seconds left or None)`` with ``left`` bytes to go."""
        elapsed = max(time.monotonic() - self.started, 1e-6)
        done = self.bytes
        percent = 100.0 * done / (done + left) if done + left else 100.0
        eta = left / (done / elapsed) if done else None
        return percent, self.points / elapsed, eta

    def as_dict(self, left):
        percent, rate, eta = self.figures(left)
        return {"percent": round(percent, 1), "delivered_bytes": self.bytes,
                "delivered_points": self.points, "backlog_bytes": left,
                "points_per_s": round(rate), "eta_s": round(eta) if eta is not None else None,
                "running_s": round(time.monotonic() - self.started, 1)}


class Sent(NamedTuple):
    """A direct write's outcome: ``result`` (OK: 2xx, REJECTED: the data is
    wrong, FAILED: try later), the backend's ``response`` (None when it did
    not answer) and the :class:`BackendError` (None when it did)."""

    result: str
    response: Optional[Response]
    error: Optional[BackendError]

    @property
    def reason(self) -> str:
        if self.error is not None:
            return self.error.reason
        assert self.response is not None
        return "HTTP %d: %s" % (self.response.status, snippet(self.response.body))


class Readiness(NamedTuple):
    """Whether an output's backend may serve reads (``status`` "ready"), and if
    not why: "down" (it does not answer its ping), "lagging" (writes wait in
    its buffer), "gap" (it misses points another output holds)."""

    status: str
    backlog_bytes: int
    oldest_s: float
    gap_points: int
    reason: str

    def as_dict(self):
        out = {"status": self.status}
        if self.status != "ready":
            out.update(backlog_bytes=self.backlog_bytes, oldest_s=self.oldest_s,
                       gap_points=self.gap_points, reason=self.reason)
        return out


class OutputCounters(object):
    """Everything counted about one output, read by /status and /metrics; bumped
    once per write or retried batch, never per point."""

    __slots__ = ("writes", "retries", "dropped", "latency_buckets", "latency_sum", "up",
                 "replayed_bytes", "replayed_batches")

    def __init__(self):
        self.writes = dict.fromkeys(WRITE_RESULTS, 0)
        self.retries = dict.fromkeys(RETRY_RESULTS, 0)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.latency_sum = 0.0
        self.up = True  # until a write to it fails
        self.replayed_bytes = 0
        self.replayed_batches = 0

    def direct(self, result, seconds):
        """A direct write ended with ``result``, after ``seconds``."""
        self.writes[result] += 1
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds


class Output(object):
    backend: Backend
    buffer: Optional[RetryBuffer]

    def __init__(self, cfg, backend: Backend, buffer: Optional[RetryBuffer] = None,
                 policy: Optional[RetryPolicy] = None, max_batch: int = 512 * 1024,
                 max_age: Optional[float] = None, ledger=ledger_mod.NULL, listener: str = ""):
        self.cfg = cfg
        self.name = cfg.name
        #: How the ledger knows this output: (listener name, output name).
        self.who = (listener, cfg.name)
        self.ledger = ledger
        self.backend = backend
        self.buffer = buffer
        self.policy = policy or RetryPolicy()
        self.max_batch = max_batch
        self.max_age = max_age
        self.counters = OutputCounters()
        self._full_drops = 0  # writes dropped since the buffer became full
        self._down_failures = 0  # failed attempts since the backend went down
        self._wake = Event()
        self._drained = Event()  # set while the buffer is empty
        if not buffer:  # a disk buffer may open with a backlog to replay
            self._drained.set()
        self._loop = None
        self._failures = 0
        self.replay = None  # a Replay while a backlog is being delivered
        self._remover = None  # for an adopted buffer: removes it once delivered
        self.max_in_flight_bytes = cfg.max_in_flight_mb * 1024 * 1024
        self.max_in_flight_requests = MAX_IN_FLIGHT_REQUESTS_PER_POOL_SLOT * cfg.pool_size
        self.in_flight_bytes = 0
        self.in_flight_requests = 0
        self._warn_in_flight = logs.Throttled(log)
        self._ping = (0.0, False, "")  # (when, ok, text) of the last ping
        self._pinging = None  # an Event while a ping runs: others wait for it
        self._warn_missed = logs.Throttled(log, logging.ERROR)

    @classmethod
    def from_config(cls, cfg, buffered: bool = True, ledger=ledger_mod.NULL,
                    listener: str = "") -> "Output":
        """The output ``cfg`` describes: its backend (merging small writes with
        ``coalesce``) and, if ``buffered``, the retry buffer it asks for; what
        it gives up goes into ``ledger`` as listener ``listener``'s."""
        backend: Backend = HTTPBackend(cfg)
        if cfg.coalesce:
            backend = CoalescingBackend(backend, cfg.coalesce_max_kb * 1024)
        try:
            buffer = make_buffer(cfg, on_damaged=_damaged(ledger, (listener, cfg.name))) \
                if buffered else None
        except BaseException:
            backend.close()
            raise
        policy = RetryPolicy(cap=cfg.max_delay_interval)
        return cls(cfg, backend, buffer, policy, cfg.max_batch_kb * 1024,
                   cfg.buffer_max_age or None, ledger, listener)

    def __str__(self):
        return self.name

    def adopt(self, path):
        """Replay to this output's backend the disk buffer left in ``path`` by a
        layout of workers that no longer runs, then remove the directory.
        Returns the output that drains it (:meth:`close_adopted` stops it)."""
        cfg = dataclasses.replace(self.cfg, buffer_path=path)
        buffer = make_buffer(cfg, on_damaged=_damaged(self.ledger, self.who))
        orphan = Output(cfg, self.backend, buffer, self.policy, self.max_batch, self.max_age,
                        self.ledger, self.who[0])
        if buffer:
            log.warning("output %s: replaying %d write(s) (%d bytes) left in %s by a worker "
                        "that no longer runs", self, len(buffer), buffer.size, path)
        orphan.start()
        orphan._remover = gevent.spawn(orphan._remove_when_drained)
        return orphan

    def _remove_when_drained(self):
        self._drained.wait()
        if self._loop is not None:
            self._loop.kill()
        self.buffer.close()
        shutil.rmtree(self.cfg.buffer_path, ignore_errors=True)
        log.info("output %s: %s delivered and removed", self, self.cfg.buffer_path)

    def close_adopted(self):
        """Stop draining an adopted buffer (what is left stays on disk for next time)."""
        remover = self._remover
        if remover is not None and not remover.dead:
            remover.kill()
            if self._loop is not None:
                self._loop.kill()
            self.buffer.close()

    @property
    def coalesce_stats(self) -> Optional[CoalesceStats]:
        """The counters of merged writes (a CoalesceStats), or None without ``coalesce``."""
        return self.backend.stats if isinstance(self.backend, CoalescingBackend) else None

    # -- sending ---------------------------------------------------------------

    def send(self, endpoint: str, query: str, body: bytes, headers: Dict[str, str]) -> Sent:
        """Write ``body`` to the backend now; a :class:`Sent`. Counted, and the
        backend marked up or down. Past the in-flight limits the write is not
        sent and comes back FAILED at once."""
        size = len(body)
        if self.in_flight_requests and (
                self.in_flight_bytes + size > self.max_in_flight_bytes
                or self.in_flight_requests >= self.max_in_flight_requests):
            return self._over_limit(size)
        self.in_flight_bytes += size
        self.in_flight_requests += 1
        started = time.monotonic()
        response: Optional[Response] = None
        error: Optional[BackendError] = None
        try:
            response = self.backend.post(endpoint, query, body, headers)
        except BackendError as e:
            error = e
        except Exception as e:  # a bug must not leave the client waiting
            log.exception("%s: unexpected error while writing", self)
            error = BackendError(self, "internal error: %s" % e)
        finally:
            self.in_flight_bytes -= size
            self.in_flight_requests -= 1
        if response is None or retryable(response.status):
            result = FAILED
        elif response.status >= 300:
            result = REJECTED
        else:
            result = OK
        sent = Sent(result, response, error)
        self.counters.direct(result, time.monotonic() - started)
        if result == FAILED:
            self.answered(False, sent.reason)
        else:
            self.answered(True)
        return sent

    def _over_limit(self, size: int) -> Sent:
        reason = ("%d request(s), %d bytes, already in flight to a slow backend (limits %d, %d)"
                  % (self.in_flight_requests, self.in_flight_bytes, self.max_in_flight_requests,
                     self.max_in_flight_bytes))
        self._warn_in_flight("output %s: a write of %d bytes was not sent: %s", self, size, reason)
        self.counters.writes[FAILED] += 1
        self.answered(False, reason)
        return Sent(FAILED, None, BackendError(self, reason))

    def missed(self, sent: Sent, key: tuple, body: bytes) -> None:
        """A write another backend took failed here, and this output has no
        buffer to keep it: the backend will never have it. Counted, logged,
        and in the ledger."""
        self.counters.dropped["missed"] += 1
        self._warn_missed("output %s: missed a write another backend took (no retry buffer): %s",
                          self, sent.reason)
        self.gap(key, body, "no buffer")

    def refused(self, sent: Sent, key: tuple, body: bytes) -> None:
        """The backend refused (4xx) a write another backend took: the two
        differ, and the ledger says where."""
        assert sent.response is not None
        self.gap(key, body, "rejected %d" % sent.response.status)

    def gap(self, key: tuple, body: bytes, reason: str) -> None:
        """This output's backend will not have this write: into the ledger."""
        extent = ledger_mod.extent(self.cfg.endpoints, key, body)
        if extent is not None:
            self.ledger.record(self.who, *extent, reason)

    def _gaps(self, entries, reason):
        """Put buffered entries the backend will not get into the ledger (reading
        a disk buffer's back, yielding now and then: there may be many)."""
        for i, entry in enumerate(entries):
            self.gap(entry.key, self.buffer.body(entry), reason)
            if i % 256 == 255:
                gevent.sleep(0)

    def ping(self, timeout: float) -> Tuple[bool, str]:
        """``(ok, text)``: whether the backend answers its ping endpoint with 2xx
        within ``timeout``, as /health reports it ("OK. Time taken 3ms")."""
        start = time.monotonic()
        endpoint = self.cfg.endpoints.ping
        try:
            r = self.backend.get(endpoint, timeout=timeout)
        except BackendError as e:
            return self._pinged(False, "KO. %s" % e.reason)
        if r.status >= 300:
            return self._pinged(False, "KO. HTTP %d from %s" % (r.status, endpoint))
        return self._pinged(True, "OK. Time taken %dms" % round((time.monotonic() - start) * 1000))

    def _pinged(self, ok, text):
        self._ping = (time.monotonic(), ok, text)
        return ok, text

    def cached_ping(self, max_age: float, timeout: float) -> Tuple[bool, str]:
        """:meth:`ping`, or its answer if no older than ``max_age`` seconds;
        callers that come while one runs share it."""
        when, ok, text = self._ping
        if time.monotonic() - when <= max_age:
            return ok, text
        if self._pinging is not None:
            self._pinging.wait(timeout)
            return self._ping[1:]
        pinging = self._pinging = Event()
        try:
            ok, text = self.ping(timeout)
        finally:
            pinging.set()
            self._pinging = None
        return ok, text

    def readiness(self, max_age: float = 1.0, timeout: Optional[float] = None) -> Readiness:
        """Whether this output's backend may serve reads now (see
        :class:`Readiness`): it answers its ping (cached ``max_age`` seconds),
        holds no backlog, and misses no point another output holds."""
        ok, text = self.cached_ping(max_age, timeout or self.cfg.timeout)
        buffer = self.buffer
        backlog = buffer.size if buffer else 0
        oldest = buffer.oldest() if buffer else None
        oldest_s = round(time.time() - oldest, 3) if oldest else 0.0
        gap = self.ledger.points(self.who)
        if not ok:
            return Readiness("down", backlog, oldest_s, gap, text[4:] if text[:4] == "KO. " else text)
        if buffer:
            return Readiness("lagging", backlog, oldest_s, gap, "%d write(s), %d bytes, wait in "
                             "its retry buffer" % (len(buffer), backlog))
        if gap:
            return Readiness("gap", 0, 0.0, gap, "it misses %d point(s) another output holds "
                             "(the gap ledger), until a repair copies them" % gap)
        return Readiness("ready", 0, 0.0, 0, "")

    def open_query(self, method: str, query_string: str, body: bytes = b"",
                   headers: Optional[Dict[str, str]] = None, endpoint: Optional[str] = None,
                   timeout: Optional[float] = None) -> Streamed:
        """Send a query (to the query endpoint, or ``endpoint``) and return as
        soon as the answer's head is in: a :class:`~.httpclient.Streamed` to
        read as it comes (each wait bounded by the output's timeout). Raises
        :class:`BackendError` when there is no answer."""
        return self.backend.stream(method, endpoint or self.cfg.endpoints.query, query_string,
                                   body, headers, timeout)

    def query(self, query_string: str, body: bytes, headers: Dict[str, str]) -> Response:
        """POST a query to the backend's query endpoint: its Response, or raises
        :class:`BackendError`. Never buffered nor retried."""
        return self.backend.post(self.cfg.endpoints.query, query_string, body, headers)

    # -- the state the fan-out reads -------------------------------------------

    @property
    def direct(self):
        """Whether a new write may go straight to the backend (nothing buffered)."""
        return not self.buffer

    @property
    def draining(self):
        """Whether the backlog is being delivered to a backend that answers well."""
        return self.buffer is not None and self._failures == 0 and bool(self.buffer)

    @property
    def has_buffer(self):
        return self.buffer is not None

    @property
    def durable(self):
        return self.buffer is not None and self.buffer.durable

    def wait_direct(self, timeout, give_up=lambda: False):
        """Wait, up to ``timeout`` seconds, for a draining backlog to be through."""
        deadline = time.monotonic() + timeout
        while not self.direct:
            remaining = deadline - time.monotonic()
            if self._failures or remaining <= 0 or give_up():
                return False
            self._drained.wait(min(remaining, 0.1))  # and look at _failures again
        return not give_up()

    def start(self):
        if self.buffer is not None and self._loop is None:
            self._loop = gevent.spawn(self._run)
            if self.buffer:
                self._wake.set()

    def hold(self, key: tuple, body: bytes, pending: bool = False) -> Optional[Entry]:
        """Queue one write for this backend; the :class:`Entry`, or None if it did not fit."""
        buffer = self.buffer
        assert buffer is not None, "hold() on an output without a buffer"
        entry = Entry(key, body, PENDING if pending else READY)
        was_empty = not buffer
        try:
            buffer.append([entry])
            self._drained.clear()
        except BufferFull as e:
            self.counters.dropped["full"] += 1
            self._full_drops += 1
            self.gap(key, body, "full")
            # One line when the buffer fills up, one when it has room again.
            level = logging.ERROR if self._full_drops == 1 else logging.DEBUG
            log.log(level, "output %s: %s: dropped a write of %d bytes", self, e, entry.size)
            return None
        if self._full_drops:
            log.warning("output %s: buffer has room again; %d write(s) were dropped while it "
                        "was full", self, self._full_drops)
            self._full_drops = 0
        self.counters.writes["buffered"] += 1
        if not buffer.durable:
            # Lost if the relay dies before the backend has it: the ledger
            # keeps the window of what the memory buffer holds.
            extent = ledger_mod.extent(self.cfg.endpoints, key, body)
            if extent is not None:
                self.ledger.expose(self.who, *extent)
        if was_empty and not pending:
            # When the backend is down, the "backend down" line said it already.
            level = logging.WARNING if self.counters.up else logging.DEBUG
            log.log(level, "output %s: backend is failing; buffering its writes", self)
        self._wake.set()
        return entry

    def answered(self, up, reason=None):
        """Record whether the backend answered its last write (direct or retried),
        and log when that changes: one line when it goes down, one when it is back.
        Returns whether it changed."""
        counters = self.counters
        if not up:
            self._down_failures += 1
        if up == counters.up:
            return False
        counters.up = up
        if not up:
            if self.buffer is not None:
                log.warning("output %s: backend down: %s; writes another backend acknowledges "
                            "are buffered for it", self, reason)
            else:
                log.error("output %s: backend down: %s; it misses every write until it is back "
                          "(no retry buffer)", self, reason)
            return True
        failures, self._down_failures = self._down_failures, 0
        if self.buffer:
            log.info("output %s: backend is back after %d failed attempt(s); %d buffered "
                     "write(s), %d bytes, to replay", self, failures, len(self.buffer),
                     self.buffer.size)
        else:
            log.info("output %s: backend is back after %d failed attempt(s)", self, failures)
        return True

    def sync(self):
        """Make what :meth:`hold` queued durable (disk buffers), per the sync policy."""
        self.buffer.sync()

    # -- the retry loop ----------------------------------------------------

    def _run(self):
        buffer = self.buffer
        while True:
            head = buffer.head()
            if head is None:
                self._drained.set()
                self.replay = None
                if not buffer.durable:
                    self.ledger.covered(self.who)
                self._wake.clear()
                self._wake.wait()
                continue
            if head.state == PENDING:
                head.wait()
                continue
            if self.max_age and time.time() - head.created > self.max_age:
                self._drop_expired()
                continue
            self._send_batch(buffer.batch(self.max_batch))

    def _send_batch(self, batch):
        buffer = self.buffer
        counters = self.counters
        endpoint, query, headers = batch[0].key
        if endpoint == self.cfg.endpoints.write_prom:
            batch = batch[:1]  # a protobuf body: two cannot be joined into one
        body = b"\n".join(buffer.body(e) for e in batch)
        try:
            response = self.backend.post(endpoint, query, body, dict(headers))
        except BackendError as e:
            return self._failed(e.reason, len(batch))
        self.answered(response.status < 300 or 400 <= response.status < 500)
        if response.status < 300:
            buffer.remove(batch)
            counters.retries[OK] += 1
            counters.replayed_bytes += len(body)
            counters.replayed_batches += 1
            self._failures = 0
            self._replayed(endpoint, body, len(batch))
            return
        if not retryable(response.status):
            counters.retries[REJECTED] += 1
            self._gaps(batch, "rejected %d" % response.status)
            buffer.remove(batch)
            counters.dropped["rejected"] += len(batch)
            log.error(
                "output %s: backend rejected %d buffered write(s) (%d bytes) with HTTP %d, "
                "dropped: %s", self, len(batch), len(body), response.status,
                snippet(response.body),
            )
            return
        self._failed("HTTP %d" % response.status, len(batch))

    def _replayed(self, endpoint, body, writes):
        """A batch of the backlog was delivered: progress, in the log every
        REPLAY_LOG_EVERY seconds while it lasts, and once when it is done."""
        replay = self.replay
        if replay is None:
            replay = self.replay = Replay()
        replay.bytes += len(body)
        replay.writes += writes
        replay.points += writes if endpoint == self.cfg.endpoints.write_prom \
            else body.count(b"\n") + 1
        left = self.buffer.size
        now = time.monotonic()
        if not self.buffer:
            self.replay = None
            elapsed = now - replay.started
            log.info("output %s: backlog delivered (%d write(s), %d point(s), %s in %s, %d "
                     "points/s); writing directly again", self, replay.writes, replay.points,
                     text.size(replay.bytes), text.duration(elapsed), replay.points / max(elapsed, 1e-6))
        elif now - replay.logged >= REPLAY_LOG_EVERY:
            replay.logged = now
            percent, rate, eta = replay.figures(left)
            log.info("output %s: replaying its backlog: %.0f%% delivered (%s, %s to go), %d "
                     "points/s, %s left", self, percent, text.size(replay.bytes), text.size(left), rate,
                     "about " + text.duration(eta) if eta is not None else "unknown time")

    def _failed(self, reason, n):
        self._failures += 1
        self.counters.retries[FAILED] += 1
        # A backend failing its retries is down: answered() says so once.
        self.answered(False, reason)
        delay = self.policy.delay(self._failures)
        log.debug("output %s: retry of %d buffered write(s) failed (%s); next in %.1fs",
                  self, n, reason, delay)
        gevent.sleep(delay)

    def _drop_expired(self):
        dropped = 0
        buffer = self.buffer
        while True:
            head = buffer.head()
            if head is None or head.state != READY or time.time() - head.created <= self.max_age:
                break
            self._gaps([head], "expired")
            buffer.remove([head])
            dropped += 1
        self.counters.dropped["expired"] += dropped
        log.error("output %s: dropped %d buffered write(s) older than %gs",
                  self, dropped, self.max_age)

    # -- operations ----------------------------------------------------------

    @property
    def state(self):
        """In a word: "down" (its last write, or a ping of the last minute,
        failed), "replaying" (its backlog is being delivered) or "ok"."""
        when, pinged, _ = self._ping
        if not self.counters.up or (when and not pinged and time.monotonic() - when < 60):
            return "down"
        if self.buffer:
            return "replaying"
        return "ok"

    def status(self):
        """What /status shows of this output."""
        counters = self.counters
        out = {"state": self.state, "backlog": bool(self.buffer), "direct": self.direct,
               "up": counters.up, "gaps": self.ledger.status(self.who)}
        stats = self.coalesce_stats
        if stats is not None:
            out.update({"coalesced_requests": stats.requests, "coalesced_writes": stats.writes,
                        "coalesced_split": stats.split})
        if self.buffer is None:
            out["buffer"] = None
            return out
        oldest = self.buffer.oldest()
        out.update({
            "buffered_bytes": self.buffer.size,
            "buffered_writes": len(self.buffer),
            "oldest_age_seconds": round(time.time() - oldest, 3) if oldest else 0,
            "limit_bytes": self.buffer.limit,
            "durable": self.buffer.durable,
            "retries": counters.retries[FAILED],
            "replayed_bytes": counters.replayed_bytes,
            "replayed_batches": counters.replayed_batches,
            "replay": self.replay.as_dict(self.buffer.size) if self.replay else None,
        })
        out.update({"dropped_" + reason: n for reason, n in counters.dropped.items()})
        return out

    def flush(self) -> Tuple[int, int]:
        """Drop the whole buffer; return (writes, bytes) dropped."""
        if self.buffer is None:
            return 0, 0
        self._gaps(self.buffer.entries(), "flushed")
        n, size = self.buffer.clear()
        self._drained.set()
        self.counters.dropped["flushed"] += n
        if n:
            log.warning("output %s: flushed %d buffered write(s), %d bytes", self, n, size)
        return n, size

    def close(self, timeout=0):
        """Stop: give a memory backlog ``timeout`` seconds to drain, then say what is lost."""
        buffer = self.buffer
        if buffer is not None:
            if buffer and not buffer.durable and timeout > 0:
                deadline = time.time() + timeout
                while buffer.head() is not None and time.time() < deadline:
                    gevent.sleep(0.05)
            if self._loop is not None:
                self._loop.kill()
            if buffer.head() is not None:
                if buffer.durable:
                    log.info("output %s: %d write(s) stay buffered on disk", self, len(buffer))
                else:
                    entries = list(buffer.entries())
                    points = sum(buffer.body(e).count(b"\n") + 1 for e in entries)
                    log.error("output %s: shutting down with %d buffered write(s): %d point(s) lost",
                              self, len(buffer), points)
                    self._gaps(entries, "shutdown")
            if not buffer.durable:
                self.ledger.covered(self.who)
            buffer.close()
        self.backend.close()


def _damaged(ledger, who):
    """What a disk buffer calls for a damaged record it skips: into the ledger."""

    def damaged(before, after, nbytes):
        # What a damaged record held cannot be read: not its database, nor its
        # points' times. The times of the records around it bound when it was
        # written, which is when the relay stamped its points.
        now = time.time()
        start = int(((before if before is not None else 0) - 60) * 10 ** 9)
        end = int(((after if after is not None else now) + 60) * 10 ** 9)
        ledger.record(who, "", "", max(0, start), end, 1, "damaged")

    return damaged


def snippet(body, limit=200):
    """A backend's answer body, as text, cut short."""
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
