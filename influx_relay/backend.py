"""One InfluxDB server the relay writes to, over pooled keep-alive connections."""

import json
import logging
from collections import namedtuple

import gevent
import urllib3

from . import __version__
from .errors import BackendError

log = logging.getLogger(__name__)

USER_AGENT = "influx-relay/%s" % __version__

#: What a backend answered: ``status`` and the raw ``body`` and content type.
Response = namedtuple("Response", "status body content_type")


def error_response(status, message):
    """A :class:`Response` in InfluxDB's error shape: ``{"error":"..."}``."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, "application/json")


def retryable(status):
    """Whether a backend's answer means "try again later" (5xx, or 429 Too Many
    Requests, InfluxDB 2.x's rate limit), not "this data is wrong" (other 4xx)."""
    return status >= 500 or status == 429


class HTTPBackend(object):
    """An HTTP output: posts bodies to one server's endpoints.

    Every call either returns the server's :class:`Response`, whatever its
    status, or raises :class:`BackendError` when there was no answer (refused,
    reset, timed out, not HTTP).
    """

    def __init__(self, output):
        self.output = output
        self.name = output.name
        self.timeout = output.timeout
        kwargs = {}
        if output.scheme == "https":
            kwargs["cert_reqs"] = "CERT_NONE" if output.skip_tls_verification else "CERT_REQUIRED"
            if output.skip_tls_verification:
                kwargs["assert_hostname"] = False
        self.pool = urllib3.connection_from_url(
            output.base_url,
            maxsize=output.pool_size,
            block=False,
            retries=False,
            timeout=urllib3.Timeout(connect=output.timeout, read=output.timeout),
            **kwargs
        )

    def __repr__(self):
        return "<HTTPBackend %s %s>" % (self.name, self.output.base_url)

    def __str__(self):
        return self.name

    def post(self, endpoint, query, body, headers):
        """POST ``body`` to ``endpoint`` (a path) with the raw ``query`` string."""
        url = endpoint + "?" + query if query else endpoint
        return self.request("POST", url, body, headers)

    def request(self, method, url, body=None, headers=None):
        all_headers = {"User-Agent": USER_AGENT}
        if headers:
            all_headers.update(headers)
        # urllib3's own timeouts bound each socket operation; this one bounds
        # the whole exchange, so a server trickling its answer cannot hold a
        # request (or a retry buffer) longer than the configured timeout.
        try:
            with gevent.Timeout(self.timeout):
                r = self.pool.urlopen(
                    method,
                    url,
                    body=body,
                    headers=all_headers,
                    retries=False,
                    redirect=False,
                    assert_same_host=False,
                    preload_content=True,
                )
        except gevent.Timeout:
            raise BackendError(self, "no answer within %gs" % self.timeout)
        except urllib3.exceptions.HTTPError as e:
            raise BackendError(self, _describe(e))
        except OSError as e:  # pragma: no cover - urllib3 wraps most of these
            raise BackendError(self, str(e))
        return Response(r.status, r.data, r.headers.get("Content-Type", ""))

    def close(self):
        self.pool.close()


def _describe(exc):
    """A short reason for a urllib3 error, without its repr noise."""
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        return "connection failed: %s" % str(reason).split(": ", 1)[-1]
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return "read timed out"
    if isinstance(exc, urllib3.exceptions.ConnectTimeoutError):
        return "connect timed out"
    return str(reason)
