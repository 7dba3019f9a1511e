"""Copy one write to every backend and decide what the client hears.

The rules, from influxdb-relay:

* the client gets 204 as soon as one backend answers 2xx;
* a backend's 4xx goes back to the client at once, as the backend sent it
  (the data is wrong and retrying will not help);
* only when every backend failed (5xx or no answer) does the client get a
  5xx, so that the client retries.

Backend requests still in flight after the client was answered run to their
end; their failures are logged with the backend's name.
"""

import logging

import gevent
from gevent.queue import Queue

from .backend import Response, error_response
from .errors import BackendError

log = logging.getLogger(__name__)

WRITTEN = Response(204, b"", "")
NO_BACKEND = error_response(503, "unable to write points")


class Fanout(object):
    """The set of backends one listener writes to."""

    def __init__(self, backends):
        self.backends = tuple(backends)

    def write(self, endpoint_of, query, body, headers):
        """Send ``body`` to every backend; return the :class:`Response` for the client.

        ``endpoint_of(backend)`` gives the path to post to on that backend.
        """
        results = Queue()
        fate = _Fate()
        for backend in self.backends:
            gevent.spawn(_send, backend, endpoint_of(backend), query, body, headers, results, fate)
        failures = []
        for _ in self.backends:
            outcome = results.get()
            response = outcome[1]
            if response is not None and response.status < 500:
                fate.decided = True
                for failure in failures:
                    _report(*failure)
                while not results.empty():
                    _report(*results.get_nowait())
                return WRITTEN if response.status < 300 else response
            failures.append(outcome)
        return _all_failed(failures)

    def close(self):
        for backend in self.backends:
            backend.close()


class _Fate(object):
    """Whether the client of one write has had its answer yet."""

    __slots__ = ("decided",)

    def __init__(self):
        self.decided = False


def _send(backend, endpoint, query, body, headers, results, fate):
    response = error = None
    try:
        response = backend.post(endpoint, query, body, headers)
    except BackendError as e:
        error = e
    except Exception as e:  # a bug must not leave the client waiting
        log.exception("%s: unexpected error while writing", backend)
        error = BackendError(backend, "internal error: %s" % e)
    if fate.decided:
        # The client has its answer; this backend's outcome is ours to report.
        _report(backend, response, error)
    else:
        results.put((backend, response, error))


def _report(backend, response, error):
    """Log a backend's failure to take a write."""
    if error is not None:
        log.warning("write to %s failed: %s", backend, error.reason)
    elif response.status >= 300:
        log.warning(
            "write to %s failed: HTTP %d: %s", backend, response.status, _snippet(response.body)
        )


def _all_failed(failures):
    """Every backend failed: pick the most useful 5xx for the client."""
    for failure in failures:
        _report(*failure)
    for backend, response, error in failures:
        if response is not None and "json" in response.content_type and response.body.strip():
            return response
    if len(failures) == 1 and failures[0][2] is not None:
        return error_response(503, "unable to write points: %s" % failures[0][2])
    return NO_BACKEND


def _snippet(body, limit=200):
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."
