"""An HTTP output: a backend, and the retry buffer of what it has missed.

While an output's buffer is empty, writes go to its backend directly (the
fan-out sends them). Once it holds anything, new writes for that backend join
the end of the buffer instead of overtaking it, and one greenlet per output
sends the buffer oldest first, batching writes that share an endpoint, query
string and credentials, until it is empty again. So a backend that was down
gets every write it missed, in the order the relay acknowledged them.
"""

import logging
import time

import gevent
from gevent.event import Event

from .buffer import PENDING, READY, BufferFull, Entry
from .backend import retryable
from .errors import BackendError
from .metrics import OutputMetrics
from .retry import RetryPolicy

log = logging.getLogger(__name__)


class OutputStats(object):
    """Counters of one output, read by /status and /metrics."""

    __slots__ = ("dropped_full", "dropped_rejected", "dropped_expired", "dropped_flushed",
                 "retries", "replayed_bytes", "replayed_batches")

    def __init__(self):
        for name in self.__slots__:
            setattr(self, name, 0)


class Output(object):
    def __init__(self, backend, buffer=None, policy=None, max_batch=512 * 1024, max_age=None):
        self.backend = backend
        self.cfg = backend.output
        self.name = backend.name
        self.buffer = buffer
        self.policy = policy or RetryPolicy()
        self.max_batch = max_batch
        self.max_age = max_age
        self.stats = OutputStats()
        self.metrics = OutputMetrics()
        self._full_drops = 0  # writes dropped since the buffer became full
        self._down_failures = 0  # failed attempts since the backend went down
        self._wake = Event()
        self._drained = Event()  # set while the buffer is empty
        if not buffer:  # a disk buffer may open with a backlog to replay
            self._drained.set()
        self._loop = None
        self._failures = 0

    @classmethod
    def from_config(cls, cfg, backend, buffer):
        policy = RetryPolicy(cap=cfg.max_delay_interval)
        max_age = cfg.buffer_max_age or None
        return cls(backend, buffer, policy, cfg.max_batch_kb * 1024, max_age)

    def __str__(self):
        return self.name

    @property
    def direct(self):
        """Whether a new write may go straight to the backend (nothing buffered)."""
        return not self.buffer

    @property
    def draining(self):
        """Whether the backlog is being delivered to a backend that answers well."""
        return self.buffer is not None and self._failures == 0 and bool(self.buffer)

    def wait_direct(self, timeout, give_up=lambda: False):
        """Wait, up to ``timeout`` seconds, for a draining backlog to be through."""
        deadline = time.monotonic() + timeout
        while not self.direct:
            remaining = deadline - time.monotonic()
            if self._failures or remaining <= 0 or give_up():
                return False
            self._drained.wait(min(remaining, 0.1))  # and look at _failures again
        return not give_up()

    @property
    def has_buffer(self):
        return self.buffer is not None

    def start(self):
        if self.buffer is not None and self._loop is None:
            self._loop = gevent.spawn(self._run)
            if self.buffer:
                self._wake.set()

    def hold(self, key, body, pending=False):
        """Queue one write for this backend; the :class:`Entry`, or None if it did not fit."""
        entry = Entry(key, body, PENDING if pending else READY)
        was_empty = not self.buffer
        try:
            self.buffer.append([entry])
            self._drained.clear()
        except BufferFull as e:
            self.stats.dropped_full += 1
            self._full_drops += 1
            # One line when the buffer fills up, one when it has room again.
            level = logging.ERROR if self._full_drops == 1 else logging.DEBUG
            log.log(level, "output %s: %s: dropped a write of %d bytes", self, e, entry.size)
            return None
        if self._full_drops:
            log.warning("output %s: buffer has room again; %d write(s) were dropped while it "
                        "was full", self, self._full_drops)
            self._full_drops = 0
        self.metrics.writes["buffered"] += 1
        if was_empty and not pending:
            # When the backend is down, the "backend down" line said it already.
            level = logging.WARNING if self.metrics.up else logging.DEBUG
            log.log(level, "output %s: backend is failing; buffering its writes", self)
        self._wake.set()
        return entry

    def answered(self, up, reason=None):
        """Record whether the backend answered its last write (direct or retried),
        and log when that changes: one line when it goes down, one when it is back.
        Returns whether it changed."""
        metrics = self.metrics
        if not up:
            self._down_failures += 1
        if up == metrics.up:
            return False
        metrics.up = up
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
            self.metrics.retries["ok"] += 1
            self.stats.replayed_bytes += len(body)
            self.stats.replayed_batches += 1
            self._failures = 0
            if not buffer:
                log.info("output %s: backlog delivered; writing directly again", self)
            return
        if not retryable(response.status):
            self.metrics.retries["rejected"] += 1
            buffer.remove(batch)
            self.stats.dropped_rejected += len(batch)
            log.error(
                "output %s: backend rejected %d buffered write(s) (%d bytes) with HTTP %d, "
                "dropped: %s", self, len(batch), len(body), response.status,
                response.body[:200].decode("utf-8", "replace").strip(),
            )
            return
        self._failed("HTTP %d" % response.status, len(batch))

    def _failed(self, reason, n):
        self._failures += 1
        self.stats.retries += 1
        self.metrics.retries["failed"] += 1
        # A backend failing its retries is down: answered() says so once.
        self.answered(False, reason)
        delay = self.policy.delay(self._failures)
        level = logging.DEBUG
        log.log(level, "output %s: retry of %d buffered write(s) failed (%s); next in %.1fs",
                self, n, reason, delay)
        gevent.sleep(delay)

    def _drop_expired(self):
        dropped = 0
        buffer = self.buffer
        while True:
            head = buffer.head()
            if head is None or head.state != READY or time.time() - head.created <= self.max_age:
                break
            buffer.remove([head])
            dropped += 1
        self.stats.dropped_expired += dropped
        log.error("output %s: dropped %d buffered write(s) older than %gs",
                  self, dropped, self.max_age)

    # -- operations ----------------------------------------------------------

    def status(self):
        """What /status shows of this output."""
        out = {"backlog": bool(self.buffer), "direct": self.direct}
        coalescer = getattr(self.backend, "coalescer", None)
        if coalescer is not None:
            c = coalescer.stats
            out.update({"coalesced_requests": c.requests, "coalesced_writes": c.writes,
                        "coalesced_split": c.split})
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
        })
        out.update({name: getattr(self.stats, name) for name in OutputStats.__slots__})
        return out

    def flush(self):
        """Drop the whole buffer; return (writes, bytes) dropped."""
        if self.buffer is None:
            return 0, 0
        n, size = self.buffer.clear()
        self._drained.set()
        self.stats.dropped_flushed += n
        if n:
            log.warning("output %s: flushed %d buffered write(s), %d bytes", self, n, size)
        return n, size

    def close(self, timeout=0):
        """Stop: give a memory backlog ``timeout`` seconds to drain, then say what is lost."""
        if self.buffer is not None:
            if self.buffer and not self.buffer.durable and timeout > 0:
                deadline = time.time() + timeout
                while self.buffer.head() is not None and time.time() < deadline:
                    gevent.sleep(0.05)
            if self._loop is not None:
                self._loop.kill()
            if self.buffer.head() is not None:
                if self.buffer.durable:
                    log.info("output %s: %d write(s) stay buffered on disk", self, len(self.buffer))
                else:
                    points = sum(self.buffer.body(e).count(b"\n") + 1 for e in self.buffer.entries)
                    log.error("output %s: shutting down with %d buffered write(s): %d point(s) lost",
                              self, len(self.buffer), points)
            self.buffer.close()
        self.backend.close()
