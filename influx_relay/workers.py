"""Greenlets kept for reuse by the fan-out's sends.

Every write runs one send per backend, each in its own greenlet. Creating a
greenlet and starting it costs about ten times what handing work to one that
already exists does (``gevent.spawn`` pair: ~25 µs; this: ~5 µs), and for a
one-line write that was a fifth of the relay's CPU. So a send runs on a
worker that finished an earlier one, waiting for its next job; a new worker
is made only when none is free. At most ``max_idle`` workers wait; one that
finishes a job when that many already wait just ends.

Workers waiting for work are not counted among the greenlets /metrics reports
(they are a bounded cache, not work in progress); :func:`idle` says how many.
"""

import logging

import gevent
from gevent.hub import Waiter, get_hub

log = logging.getLogger(__name__)

#: Workers kept waiting at most; more at once than this are made and let end.
MAX_IDLE = 256

_idle: list = []  # Waiters of the workers waiting for a job, the most recent last


def spawn(function, *args):
    """Run ``function(*args)`` in a greenlet, soon (as ``gevent.spawn`` does)."""
    if _idle:
        waiter = _idle.pop()
    else:
        waiter = Waiter()
        gevent.spawn(_work, waiter)
    get_hub().loop.run_callback(waiter.switch, (function, args))


def idle():
    """How many workers wait for a job."""
    return len(_idle)


def _work(waiter):
    while True:
        function, args = waiter.get()
        try:
            function(*args)
        except Exception:  # a bug: say so, and keep the worker
            log.exception("unexpected error in %r", function)
        # A waiting worker must not keep its last job's body alive.
        function = args = None
        if len(_idle) >= MAX_IDLE:
            return
        waiter = Waiter()
        _idle.append(waiter)
