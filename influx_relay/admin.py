"""Requests to every backend that are not writes: /health pings, /admin queries.

Both go through each output (its TLS settings, ``skip-tls-verification``,
``ca-file``, and credentials apply to them too). Neither is buffered or retried.
"""

import logging

import gevent

from .errors import BackendError
from .responses import error_response

log = logging.getLogger(__name__)

HEALTHY, PROBLEM, CRITICAL = "healthy", "problem", "critical"


def health(outputs, timeout):
    """Ping every output's backend at once, each within ``timeout`` seconds.

    Returns ``(http_status, report)``: 200 with status "healthy" (every backend
    answered 2xx) or "problem" (some did), 503 with "critical" (none did).
    """
    jobs = [gevent.spawn(output.ping, timeout) for output in outputs]
    gevent.joinall(jobs)
    report = {"status": HEALTHY, "healthy": {}, "problem": {}}
    for output, job in zip(outputs, jobs):
        ok, text = job.value if job.successful() else (False, "KO. internal error")
        report["healthy" if ok else "problem"][output.name] = text
    if not report["healthy"]:
        report["status"] = CRITICAL
        return 503, report
    if report["problem"]:
        report["status"] = PROBLEM
    return 200, report


def query(outputs, query_string, body, headers):
    """POST one query to every output's query endpoint.

    Every backend is waited for (each within its timeout). Returns
    ``(response, outcome)``: the response for the client is the first 2xx
    answer (in output order) if any backend succeeded, else the first 4xx,
    else a 503; ``outcome`` says what each backend answered ("a=200, b=failed"),
    so that a client can see a query that did not land everywhere. Failures
    are logged per backend, without the query or the backend's error text:
    either may hold a password (CREATE USER ... WITH PASSWORD).
    """
    jobs = [gevent.spawn(_query, output, query_string, body, headers) for output in outputs]
    gevent.joinall(jobs)
    results = []
    for output, job in zip(outputs, jobs):
        result = job.value if job.successful() else BackendError(output, "internal error")
        results.append((output, result))
        if isinstance(result, BackendError):
            log.warning("admin query to %s failed: %s", output, result.reason)
        elif result.status >= 300:
            log.warning("admin query to %s failed: HTTP %d", output, result.status)
    outcome = ", ".join(
        "%s=%s" % (o.name, "failed" if isinstance(r, BackendError) else r.status)
        for o, r in results
    )
    answers = [r for _, r in results if not isinstance(r, BackendError)]
    for wanted in (lambda s: s < 300, lambda s: 400 <= s < 500):
        for r in answers:
            if wanted(r.status):
                return r, outcome
    return error_response(503, "unable to run the query: every backend failed"), outcome


def _query(output, query_string, body, headers):
    try:
        return output.query(query_string, body, headers)
    except BackendError as e:
        return e
