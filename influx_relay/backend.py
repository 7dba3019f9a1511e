"""One InfluxDB server the relay talks to: its endpoints, credentials, TLS and
connections.

Every call returns the server's :class:`~.responses.Response`, whatever its
status, or raises :class:`~.errors.BackendError` when there was no answer
(refused, reset, timed out, not HTTP, a certificate that does not verify), its
reason phrased for the operator. Nothing here decides what an answer means for
a write: that is the output's (:mod:`.output`).
"""

import base64
import logging
import socket
from typing import Dict, Optional, Protocol

import gevent
from gevent import ssl

from .errors import BackendError
from .http11 import ProtocolError
from .httpclient import ConnectionPool, IdleTimeout, Streamed
from .responses import Response

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What an output needs of a backend (an :class:`HTTPBackend`, or one wrapped
    by :class:`~.coalesce.CoalescingBackend`)."""

    name: str
    timeout: float

    def post(self, endpoint: str, query: str, body: bytes, headers: Dict[str, str]) -> Response: ...

    def get(self, endpoint: str, query: str = "", headers: Optional[Dict[str, str]] = None,
            timeout: Optional[float] = None) -> Response: ...

    def request(self, method: str, endpoint: str, query: str = "", body: bytes = b"",
                headers: Optional[Dict[str, str]] = None,
                timeout: Optional[float] = None) -> Response: ...

    def stream(self, method: str, endpoint: str, query: str = "", body: bytes = b"",
               headers: Optional[Dict[str, str]] = None,
               timeout: Optional[float] = None) -> Streamed: ...

    def close(self) -> None: ...


class HTTPBackend(object):
    """An HTTP(S) InfluxDB server, per an output's config ``cfg``."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.name = cfg.name
        self.timeout = cfg.timeout
        self.auth = _authorization(cfg)
        context = tls_context(cfg) if cfg.scheme == "https" else None
        self.pool = ConnectionPool(cfg.host, cfg.port, cfg.pool_size, cfg.timeout, context)

    def __repr__(self):
        return "<HTTPBackend %s %s>" % (self.name, self.cfg.base_url)

    def __str__(self):
        return self.name

    def post(self, endpoint: str, query: str, body: bytes, headers: Dict[str, str]) -> Response:
        """POST ``body`` to ``endpoint`` (a path) with the raw ``query`` string."""
        return self.request("POST", endpoint, query, body, headers)

    def get(self, endpoint: str, query: str = "", headers: Optional[Dict[str, str]] = None,
            timeout: Optional[float] = None) -> Response:
        return self.request("GET", endpoint, query, b"", headers, timeout)

    def request(self, method: str, endpoint: str, query: str = "", body: bytes = b"",
                headers: Optional[Dict[str, str]] = None,
                timeout: Optional[float] = None) -> Response:
        """One exchange, bounded by ``timeout`` (the output's own at most)."""
        target, pairs, timeout = self._prepare(endpoint, query, headers, timeout)
        try:
            with gevent.Timeout(timeout):
                return self.pool.request(method, target, body, pairs)
        except gevent.Timeout:
            raise BackendError(self, "no answer within %gs" % timeout)
        except Exception as e:
            raise self._failure(e)

    def stream(self, method: str, endpoint: str, query: str = "", body: bytes = b"",
               headers: Optional[Dict[str, str]] = None,
               timeout: Optional[float] = None) -> Streamed:
        """Like :meth:`request`, but returns once the response head is in: a
        :class:`~.httpclient.Streamed`, whose body the caller reads as it
        comes; each wait for more is bounded by the timeout too, and what goes
        wrong meanwhile is a :class:`BackendError`."""
        target, pairs, timeout = self._prepare(endpoint, query, headers, timeout)
        try:
            with gevent.Timeout(timeout):
                answer = self.pool.stream(method, target, body, pairs)
        except gevent.Timeout:
            raise BackendError(self, "no answer within %gs" % timeout)
        except Exception as e:
            raise self._failure(e)
        answer.idle_timeout = timeout
        answer.failure = self._failure
        return answer

    def _prepare(self, endpoint, query, headers, timeout):
        target = endpoint + "?" + query if query else endpoint
        pairs = list(headers.items()) if headers else []
        if self.auth is not None:
            # The output's own credentials replace the client's.
            pairs = [(k, v) for k, v in pairs if k.lower() != "authorization"]
            pairs.append(("Authorization", self.auth))
            target = _without_credentials(target)
        if timeout is None or timeout > self.timeout:
            timeout = self.timeout
        return target, pairs, timeout

    def _failure(self, e):
        """The BackendError for what a request raised (and a bug's, re-raised)."""
        if isinstance(e, ConnectionRefusedError):
            return BackendError(self, "connection failed: %s" % e)
        if isinstance(e, socket.gaierror):
            # Name the host: it is what the operator has to fix.
            return BackendError(self, "connection failed: Failed to resolve %r (%s)"
                                % (self.cfg.host, e.strerror or e))
        if isinstance(e, ssl.SSLError):
            return BackendError(self, "TLS: %s" % e)
        if isinstance(e, IdleTimeout):
            return BackendError(self, "the answer stopped: %s" % e)
        if isinstance(e, socket.timeout):
            return BackendError(self, "connect timed out")
        if isinstance(e, (OSError, ProtocolError)):
            return BackendError(self, str(e) or e.__class__.__name__)
        if isinstance(e, ValueError):  # a header that cannot be sent (see http11.check_field)
            return BackendError(self, "refused to send: %s" % e)
        raise e

    def close(self) -> None:
        self.pool.close()


def tls_context(cfg):
    """The client TLS context of an https output: the system's CAs (or
    ``ca-file``), host name checked, unless ``skip-tls-verification``."""
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    if cfg.skip_tls_verification:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log.warning("output %s: skip-tls-verification is set: the certificate of %s "
                    "is not verified", cfg.name, cfg.base_url)
    return context


def _authorization(cfg):
    """The Authorization header of an output's own credentials, or None.

    InfluxDB 1.x takes a username and password as HTTP Basic auth (which keeps
    the password out of URLs and access logs), and a token as "Token ...".
    """
    if cfg.token:
        return "Token " + cfg.token
    if cfg.username is not None:
        pair = ("%s:%s" % (cfg.username, cfg.password)).encode("utf-8")
        return "Basic " + base64.b64encode(pair).decode("ascii")
    return None


def _without_credentials(target):
    """``target`` without the client's ``u`` and ``p`` query parameters."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    kept = [p for p in query.split("&") if p.partition("=")[0] not in ("u", "p")]
    return path + "?" + "&".join(kept) if kept else path
