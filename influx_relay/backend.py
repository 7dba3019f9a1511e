"""One InfluxDB server the relay writes to, over pooled keep-alive connections."""

import base64
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
    Requests, InfluxDB 2.x's rate limit), not "this data is wrong" (other 4xx).

    A redirect (3xx) is a failure too: the relay never follows one (it would
    carry the client's credentials elsewhere), and it is no answer about the
    data; the output's location is wrong, so the write waits for a fix."""
    return status >= 500 or status == 429 or 300 <= status < 400


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
        self.auth = _authorization(output)
        kwargs = {}
        if output.scheme == "https":
            kwargs["cert_reqs"] = "CERT_NONE" if output.skip_tls_verification else "CERT_REQUIRED"
            if output.skip_tls_verification:
                kwargs["assert_hostname"] = False
                # Said once here, rather than by urllib3 on every request.
                urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
                log.warning("output %s: skip-tls-verification is set: the certificate of %s "
                            "is not verified", self.name, output.base_url)
            elif output.ca_file:
                kwargs["ca_certs"] = output.ca_file
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

    def request(self, method, url, body=None, headers=None, timeout=None):
        """One request; ``timeout`` (seconds) shortens the output's own if given."""
        all_headers = {"User-Agent": USER_AGENT}
        if headers:
            all_headers.update(headers)
        if self.auth is not None:
            # The output's own credentials replace the client's.
            for name in [h for h in all_headers if h.lower() == "authorization"]:
                del all_headers[name]
            all_headers["Authorization"] = self.auth
            url = _without_credentials(url)
        if timeout is None or timeout > self.timeout:
            timeout = self.timeout
        # urllib3's own timeouts bound each socket operation; this one bounds
        # the whole exchange, so a server trickling its answer cannot hold a
        # request (or a retry buffer) longer than the configured timeout.
        try:
            with gevent.Timeout(timeout):
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
            raise BackendError(self, "no answer within %gs" % timeout)
        except urllib3.exceptions.HTTPError as e:
            raise BackendError(self, _describe(e))
        except OSError as e:  # pragma: no cover - urllib3 wraps most of these
            raise BackendError(self, str(e))
        return Response(r.status, r.data, r.headers.get("Content-Type", ""))

    def close(self):
        self.pool.close()


def _authorization(output):
    """The Authorization header of an output's own credentials, or None.

    InfluxDB 1.x takes a username and password as HTTP Basic auth (which keeps
    the password out of URLs and access logs), and a token as "Token ...".
    """
    if output.token:
        return "Token " + output.token
    if output.username is not None:
        pair = ("%s:%s" % (output.username, output.password)).encode("utf-8")
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return None


def _without_credentials(url):
    """``url`` without the client's ``u`` and ``p`` query parameters."""
    path, sep, query = url.partition("?")
    if not sep:
        return url
    kept = [p for p in query.split("&") if p.partition("=")[0] not in ("u", "p")]
    return path + "?" + "&".join(kept) if kept else path


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
