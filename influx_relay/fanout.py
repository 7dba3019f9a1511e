"""Copy one write to every output and decide what the client hears.

The rules, from influxdb-relay:

* the client gets 204 as soon as one backend answers 2xx;
* a backend's 4xx goes back to the client at once, as the backend sent it
  (the data is wrong and retrying will not help);
* only when every backend failed (5xx or no answer) does the client get a
  5xx, so that the client retries.

A redirect (3xx) counts as a failure too: it is never followed, and never
passed to the client (whose credentials would follow it).

A 429 (Too Many Requests: InfluxDB 2.x's and Cloud's rate limits and quotas)
counts as a failure, not a rejection: the data is fine, the backend says
"later". So it is retried from a buffer like a 5xx, never dropped.

With retry buffers (see :mod:`.output`), a write is sent directly only to the
outputs whose buffer is empty; the others would let it overtake their backlog.
Once one backend has acknowledged the write, every other buffered output
keeps it: queued behind its backlog, or as the failed write to retry, or, while
its direct request is still in flight, as a PENDING entry holding its place
in line. When no backend acknowledged the write, no buffer keeps it: the client
gets the 5xx and owns the retry, so a point the relay stamped can never end up
twice on one backend and once on another.
"""

import logging

import gevent
from gevent.queue import Queue

from . import output as output_mod, workers
from .responses import WRITTEN, Response, error_response

log = logging.getLogger(__name__)

NO_BACKEND = error_response(503, "unable to write points")
ALL_BACKLOGGED = error_response(
    503, "unable to write points: every backend is still delivering its backlog"
)

_IN_FLIGHT, _OK, _REJECTED, _FAILED, _SKIPPED = range(5)
_STATE = {output_mod.OK: _OK, output_mod.REJECTED: _REJECTED, output_mod.FAILED: _FAILED}


class Fanout(object):
    """The outputs of one listener."""

    def __init__(self, outputs):
        self.outputs = tuple(outputs)

    def write(self, endpoint_of, query: str, body: bytes, headers, bodies=None,
              translate=None) -> Response:
        """Send ``body`` to every output; return the :class:`Response` for the client.

        ``endpoint_of(output)`` gives the path to post to on that output's backend.
        With ``bodies`` (filters), each output gets ``bodies[output]`` instead, and
        one with no body in it takes no part in this write: it is neither sent
        the write nor counted as failing it. ``translate(output, query, headers)``,
        when given, returns the query string and headers that output's backend
        gets instead of the client's (its API differs from the client's); a
        retry buffer keeps those, so a replay is the same request.
        """
        targets = self.outputs
        if bodies is not None:
            targets = tuple(o for o in targets if bodies.get(o))
            if not targets:
                return WRITTEN  # filtered out everywhere: nothing to write
        if translate is None:
            def request_of(output):
                return endpoint_of(output), query, headers
        else:
            def request_of(output):
                return (endpoint_of(output),) + tuple(translate(output, query, headers))
        results = Queue()
        outcome = _Outcome()
        sends = []
        for output in targets:
            if output.direct:
                run = _Send.run
            elif output.draining:
                # A backend that is well but still delivering its backlog (a
                # slower backend's earlier writes, often) takes this write once
                # the backlog is through, if no other backend takes it first.
                run = _Send.run_after_backlog
            else:
                continue
            endpoint, out_query, out_headers = request_of(output)
            out_body = body if bodies is None else bodies[output]
            send = _Send(output, endpoint, results, outcome, out_query, out_headers, out_body)
            workers.spawn(run, send, out_query, out_body, out_headers)
            sends.append(send)
        if not sends:
            return ALL_BACKLOGGED
        try:
            return self._decide(sends, results, request_of, targets, body, bodies)
        finally:
            # Sends that finished before the write looked are still queued, and
            # each holds the queue: a cycle that would keep their bodies until
            # the garbage collector runs (6x the memory under 64 big writes).
            while results.qsize():
                results.get_nowait()

    def _decide(self, sends, results, request_of, targets, body, bodies):
        """The client's answer, from the sends' results as they come."""
        failures = []
        for _ in sends:
            send = results.get()
            if send.state in (_FAILED, _SKIPPED):
                failures.append(send)
                continue
            # Decided. From here the other sends settle or report themselves.
            taken = send.state == _OK
            for s in sends:
                s.decided = True
                s.acked = taken
            synced = ()
            if taken:
                synced = self._hold_for_the_others(send, sends, request_of, targets, body, bodies)
            for s in sends:
                if s is not send and s.state != _IN_FLIGHT:
                    s.report()
            _sync(synced)
            return WRITTEN if taken else send.sent.response
        for s in sends:
            s.decided = True
        if all(s.state == _SKIPPED for s in failures):
            return ALL_BACKLOGGED
        return _all_failed([s for s in failures if s.state == _FAILED])

    def _hold_for_the_others(self, acked, sends, request_of, targets, body, bodies):
        """The write is acknowledged: every buffered output that lacks it keeps it.

        Returns the outputs that took it, to be synced (this must not yield).
        """
        by_output = {s.output: s for s in sends}
        held = []
        for output in targets:
            if output is acked.output or not output.has_buffer:
                continue
            send = by_output.get(output)
            if send is not None and send.state in (_OK, _REJECTED):
                continue
            endpoint, query, headers = request_of(output)
            key = (endpoint, query, tuple(sorted(headers.items())))
            pending = send is not None and send.started and send.state == _IN_FLIGHT
            entry = output.hold(key, body if bodies is None else bodies[output], pending=pending)
            if send is not None:
                send.entry = entry
            if entry is not None:
                held.append(output)
        return held

    def start(self):
        for output in self.outputs:
            output.start()

    def close(self, timeout=0):
        jobs = [gevent.spawn(output.close, timeout) for output in self.outputs]
        gevent.joinall(jobs)


class _Send(object):
    """One direct request of one write to one output."""

    __slots__ = ("output", "endpoint", "results", "outcome", "state", "sent", "decided", "acked",
                 "entry", "started", "query", "headers", "body")

    def __init__(self, output, endpoint, results, outcome, query, headers, body):
        self.output = output
        self.endpoint = endpoint
        self.results = results
        self.outcome = outcome
        self.query, self.headers, self.body = query, headers, body
        self.state = _IN_FLIGHT
        self.sent = self.entry = None
        self.decided = self.acked = self.started = False

    def run_after_backlog(self, query, body, headers):
        """Wait (within the output's timeout) for its backlog to be through, then send."""
        if self.output.wait_direct(self.output.cfg.timeout, lambda: self.decided):
            return self.run(query, body, headers)
        self.state = _SKIPPED
        if not self.decided:
            self.results.put(self)

    def run(self, query, body, headers):
        self.started = True
        self.sent = self.output.send(self.endpoint, query, body, headers)
        self.state = _STATE[self.sent.result]
        if self.state == _OK:
            self.outcome.stored()
        elif self.state == _REJECTED:
            self.outcome.refused(self)
        if not self.decided:
            self.results.put(self)
            return
        # The client has its answer; what follows is this output's business.
        if self.entry is not None:
            self.entry.settle(self.state == _OK)
        elif self.state != _OK:
            self.report()

    def key(self):
        return (self.endpoint, self.query, tuple(sorted(self.headers.items())))

    def report(self):
        """Log a failure to take the write, saying whether it is kept for a retry;
        a failed write another backend took, with no buffer to keep it, is missed."""
        if self.state in (_OK, _SKIPPED):
            return
        if self.acked and self.state == _FAILED and not self.output.has_buffer:
            self.output.missed(self.sent, self.key(), self.body)
            return
        # A failure took the backend down or found it down: Output.answered()
        # announced that once. A rejection is news each time.
        level = logging.WARNING if self.state == _REJECTED else logging.DEBUG
        reason = self.sent.reason
        if self.entry is not None:
            log.log(level, "write to %s failed: %s (buffered for retry)", self.output, reason)
        else:
            log.log(level, "write to %s failed: %s", self.output, reason)


class _Outcome(object):
    """What one write came to on every output, as their answers come (before the
    client's answer and after): a backend that refused (4xx) a write another
    stored now differs from it, and the gap ledger must say so, whichever came
    first (say, a database that exists on one backend only)."""

    __slots__ = ("taken", "refusals")

    def __init__(self):
        self.taken = False
        # What each refusal will record if another output stores the write:
        # (output, sent, key, body), not the send, which holds this outcome.
        self.refusals = []

    def stored(self):
        self.taken = True
        refusals, self.refusals = self.refusals, []
        for output, sent, key, body in refusals:
            output.refused(sent, key, body)

    def refused(self, send):
        if self.taken:
            send.output.refused(send.sent, send.key(), send.body)
        else:
            self.refusals.append((send.output, send.sent, send.key(), send.body))


def _sync(outputs):
    """Make the held write durable on every disk buffer, their fsyncs at once."""
    durable = [o for o in outputs if o.durable]
    if len(durable) == 1:
        durable[0].sync()
    elif durable:
        gevent.joinall([gevent.spawn(o.sync) for o in durable])


def _all_failed(failures):
    """Every backend failed: pick the most useful 5xx for the client."""
    for failure in failures:
        failure.report()
    for failure in failures:
        response = failure.sent.response
        if (response is not None and not 300 <= response.status < 400
                and "json" in response.content_type and response.body.strip()):
            return response
    if len(failures) == 1 and failures[0].sent.error is not None:
        return error_response(503, "unable to write points: %s" % failures[0].sent.error)
    return NO_BACKEND
