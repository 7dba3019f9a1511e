"""What an HTTP exchange ends with: a status, a body and its content type.

Shared by every layer that answers or is answered: the backends' answers, the
fan-out's verdict and the listener's own replies are all :class:`Response`
values, and :func:`retryable` is the one rule for which of them mean "try
again later".
"""

import json
from typing import NamedTuple, Tuple

Headers = Tuple[Tuple[str, str], ...]


class Response(NamedTuple):
    """An answer: ``status``, the raw ``body``, its content type, and more
    ``headers`` as (name, value) pairs."""

    status: int
    body: bytes
    content_type: str
    headers: Headers = ()

JSON = "application/json"


def error_response(status: int, message: str, headers=()) -> Response:
    """A :class:`Response` in InfluxDB 1.x's error shape: ``{"error":"..."}``."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, JSON, tuple(headers))


def json_response(status: int, obj: object, headers=()) -> Response:
    body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, JSON, tuple(headers))


def retryable(status: int) -> bool:
    """Whether a backend's answer means "try again later" (5xx, or 429 Too Many
    Requests, InfluxDB 2.x's rate limit), not "this data is wrong" (other 4xx).

    A redirect (3xx) is a failure too: the relay never follows one (it would
    carry the client's credentials elsewhere), and it is no answer about the
    data; the output's location is wrong, so the write waits for a fix."""
    return status >= 500 or status == 429 or 300 <= status < 400


#: The answer to a write that every backend concerned took (InfluxDB's 204).
WRITTEN = Response(204, b"", "")
