"""Concurrent small writes to one backend, merged into fewer requests.

Per small write, most of the relay's time goes to HTTP exchanges: the
client's, and one per backend. When many clients write small bodies at once
with the same endpoint, query string (db, rp, precision, credentials) and
headers, their bodies can go to a backend as one request: line protocol
bodies join with a newline.

For each such request key, up to ``in_flight`` requests go out at once, as
they come: a write is never delayed while its key has a free slot. A write
arriving while every slot is taken waits, with the writes after it, until a
request of its key completes; then the waiting ones go as one request (up
to ``max_bytes``), in the order they arrived. Each write still gets its own
answer, as if it had been sent alone:

* 2xx: every merged write has it;
* 5xx, 429, or no answer: every merged write has it (each fails as it would
  have alone; the fan-out buffers or answers 503 per write, as ever);
* any other answer (a 4xx: a field type conflict, a line InfluxDB cannot
  parse, an unknown database, a body too large) to a merged request: each
  write is sent again alone and gets its own answer, so that one client's bad
  data never turns into another client's 400. InfluxDB may already have
  stored the valid points of the merged request ("partial write"): sending
  them again is harmless, since the relay stamped every point with its time,
  and a point written twice with the same series and timestamp overwrites
  itself.

Bounds: a body of ``max_body`` bytes or more is never held (it goes as it
comes, on its own); at most ``max_batches`` merged requests wait per key,
each of at most ``max_bytes`` and ``max_writes``; a write that finds them all
full goes on its own, as it would without coalescing (the listener's own
limits on concurrent requests and bytes in bound those). A waiting merged
request gives up after the backend's timeout if no slot came free (the backend
is stuck: its writes fail as unanswered requests do), and once sent it has the
timeout again: no write waits more than about twice the timeout. (One timer
per merged request, not one per write: waiting costs a write less CPU than
its own request would.)
"""

import logging
from collections import deque
from typing import Dict

import gevent
from gevent.event import Event

from .backend import Backend
from .errors import BackendError
from .responses import Response, retryable

log = logging.getLogger(__name__)

#: Requests of one key in flight at once before writes wait to be merged.
DEFAULT_IN_FLIGHT = 1  # 1 used the least CPU per write (2 and 4 measured too)
#: Bodies this size or larger are never held or merged.
DEFAULT_MAX_BODY = 64 * 1024
#: Merged requests waiting per key; past that a write goes on its own.
DEFAULT_MAX_BATCHES = 4
#: Writes in one merged request.
DEFAULT_MAX_WRITES = 1000


class CoalesceStats(object):
    """Counters of one coalescing backend, read by /status and /metrics."""

    __slots__ = ("requests", "writes", "split")

    def __init__(self):
        self.requests = 0  # merged requests sent (two writes or more)
        self.writes = 0    # writes that went in them
        self.split = 0     # merged requests answered 4xx, their writes sent again alone


class CoalescingBackend(object):
    """A backend whose ``post()`` merges concurrent small writes (see above);
    everything else goes to ``backend`` as it is.

    ``post`` returns a Response or raises :class:`BackendError`, for each
    write its own, as the backend's does.
    """

    def __init__(self, backend: Backend, max_bytes: int, in_flight=DEFAULT_IN_FLIGHT,
                 max_body=DEFAULT_MAX_BODY, max_batches=DEFAULT_MAX_BATCHES,
                 max_writes=DEFAULT_MAX_WRITES):
        self.backend = backend
        self.name = backend.name
        self.send = backend.post
        self.timeout = backend.timeout
        self.max_bytes = max_bytes
        self.in_flight = in_flight
        self.max_body = min(max_body, max_bytes)
        self.max_batches = max_batches
        self.max_writes = max_writes
        self.stats = CoalesceStats()
        self._keys: dict = {}
        self._hub = gevent.get_hub()

    def __str__(self):
        return self.name

    def get(self, *args, **kwargs):
        return self.backend.get(*args, **kwargs)

    def request(self, *args, **kwargs):
        return self.backend.request(*args, **kwargs)

    def stream(self, *args, **kwargs):
        return self.backend.stream(*args, **kwargs)

    def close(self):
        self.backend.close()

    def post(self, endpoint: str, query: str, body: bytes, headers: Dict[str, str]) -> Response:
        # Only line protocol can be joined (not a Prometheus protobuf, not a query form).
        if len(body) >= self.max_body or \
                not headers.get("Content-Type", "").startswith("text/plain"):
            return self.send(endpoint, query, body, headers)
        key = (endpoint, query, tuple(headers.items()))
        slot = self._keys.get(key)
        if slot is None:
            slot = self._keys[key] = _Slot()
        if slot.busy < self.in_flight:
            slot.busy += 1
            try:
                return self.send(endpoint, query, body, headers)
            finally:
                self._next(key, slot)
        batch = self._join(key, slot, body)
        if batch is None:
            return self.send(endpoint, query, body, headers)  # the queue is full: alone
        return self._wait(key, slot, batch, body, endpoint, query, headers)

    def _join(self, key, slot, body):
        """The waiting batch ``body`` joins (appended to it), or None if all are full."""
        queue = slot.queue
        if queue:
            batch = queue[-1]
            if batch.size + len(body) + 1 <= self.max_bytes and \
                    len(batch.bodies) < self.max_writes:
                batch.bodies.append(body)
                batch.size += len(body) + 1
                return batch
        if len(queue) >= self.max_batches:
            return None
        batch = _Batch(body)
        batch.timer = self._hub.loop.timer(self.timeout)
        batch.timer.start(self._expire, key, slot, batch)
        queue.append(batch)
        return batch

    def _wait(self, key, slot, batch, body, endpoint, query, headers):
        batch.done.wait()  # bounded: the batch expires, or its request has a timeout
        result = batch.result
        if result is _SPLIT:
            return self.send(endpoint, query, body, headers)
        if isinstance(result, BackendError):
            raise result
        return result

    def _expire(self, key, slot, batch):
        """No request of this key came back within the timeout while ``batch``
        waited: the backend is stuck. Its writes fail as unanswered requests do."""
        if batch.sent:
            return
        slot.queue.remove(batch)
        self._forget(key, slot)
        batch.result = BackendError(self.backend, "no answer within %gs (waiting behind %d "
                                    "request(s) in flight)" % (self.timeout, slot.busy))
        batch.done.set()

    def _next(self, key, slot):
        """A request of ``key`` is over: send what waits for it, if anything."""
        slot.busy -= 1
        if slot.queue:
            slot.busy += 1
            batch = slot.queue.popleft()
            batch.sent = True
            batch.timer.close()
            gevent.spawn(self._send_batch, key, slot, batch)
        else:
            self._forget(key, slot)

    def _forget(self, key, slot):
        if not slot.busy and not slot.queue and self._keys.get(key) is slot:
            del self._keys[key]

    def _send_batch(self, key, slot, batch):
        endpoint, query, headers = key
        bodies = batch.bodies
        result = None
        try:
            body = bodies[0] if len(bodies) == 1 else b"\n".join(bodies)
            try:
                result = self.send(endpoint, query, body, dict(headers))
            except BackendError as e:
                result = e
            if len(bodies) > 1:
                self.stats.requests += 1
                self.stats.writes += len(bodies)
                if not isinstance(result, BackendError) and result.status >= 300 and \
                        not retryable(result.status):
                    # Whose data was it? Each write is sent again alone (see above).
                    self.stats.split += 1
                    log.debug("%s: merged request of %d writes answered HTTP %d: sending "
                              "each alone", self.backend, len(bodies), result.status)
                    result = _SPLIT
        except BaseException as e:  # killed, or a bug: no waiter is left hanging
            if result is None:
                result = BackendError(self.backend, "internal error: %r" % e)
            raise
        finally:
            batch.result = result
            batch.done.set()
            self._next(key, slot)


class _Slot(object):
    __slots__ = ("busy", "queue")

    def __init__(self):
        self.busy = 0         # requests of this key in flight
        self.queue = deque()  # _Batch waiting, oldest first


class _Batch(object):
    __slots__ = ("bodies", "size", "sent", "done", "result", "timer")

    def __init__(self, body):
        self.bodies = [body]
        self.size = len(body)
        self.sent = False
        self.done = Event()
        self.result = None
        self.timer = None


#: A merged request was refused (4xx): each write must be sent alone.
_SPLIT = object()
