"""InfluxDB 2.x's write API, and writes between the 1.x and the 2.x API.

A client writes with either API (``POST /write`` or ``POST /api/v2/write``),
and each HTTP output speaks one of them (``api = "v1"`` or ``"v2"``). The body,
line protocol, is the same in both; what differs is how a request names where
its points go (``db`` and ``rp``, or ``org`` and ``bucket``), the names of its
precisions, its credentials and the shape of its errors. This module computes,
for each output, the query string and headers its backend gets, and gives an
error the shape of the API the client spoke.

The mapping, from InfluxDB's own DBRP convention (1.8+ and 2.x):

* a 1.x write to a 2.x output goes to bucket ``db/rp`` (``db/autogen`` when
  the write names no retention policy), unless the output sets ``bucket``;
* a 2.x write to a 1.x output goes to the database and retention policy split
  from the bucket at its first "/" (``db`` alone when there is none);
* precisions: 1.x's ``n`` (and ``ns``) <-> 2.x's ``ns``, ``u`` <-> ``us``,
  ``ms`` and ``s`` are the same. A 1.x write with ``precision=us`` is read as
  nanoseconds, as InfluxDB 1.x reads it, so it reaches a 2.x output as ``ns``.
  1.x's ``m`` and ``h`` have no 2.x name: such a write is refused before
  fan-out when the listener has a 2.x output;
* credentials: an output's ``token`` replaces the client's. Without one, the
  client's ``Authorization`` header goes through, except that 1.x credentials
  (``p=`` or Basic auth) reach a 2.x output as ``Authorization: Token
  <password>``: a 1.x client moving to 2.x puts its API token in the password,
  as InfluxDB 2.x's and 3.x's own 1.x compatibility endpoints expect.
"""

import base64
import binascii
import json
from urllib.parse import parse_qsl, quote, urlencode

from .responses import Response, error_response as v1_error_response

#: The precisions /api/v2/write accepts (InfluxDB 2.x: ns, us, ms, s).
BAD_PRECISION = "invalid precision; valid precision units are ns, us, ms, and s"

#: Nanoseconds per unit of each precision /api/v2/write accepts (2.x: ns, us, ms, s).
PRECISION_NS = {"ns": 1, "us": 1000, "ms": 1000 ** 2, "s": 1000 ** 3}

# 1.x reads "us" (and "ns") as nanoseconds: see lineprotocol.PRECISION_NS.
_V1_TO_V2 = {"n": "ns", "ns": "ns", "us": "ns", "u": "us", "ms": "ms", "s": "s"}
_V2_TO_V1 = {"ns": "n", "us": "u", "ms": "ms", "s": "s"}

_JSON = "application/json; charset=utf-8"

#: InfluxDB 2.x's error codes, by the HTTP status it sends with each.
_CODES = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    404: "not found",
    405: "method not allowed",
    409: "conflict",
    413: "request too large",
    422: "unprocessable entity",
    429: "too many requests",
    500: "internal error",
    501: "not implemented",
    503: "unavailable",
}


def write_endpoint(output):
    """The path a write goes to on ``output``'s backend, for the API it speaks."""
    cfg = output.cfg
    return cfg.endpoints.write_v2 if cfg.api == "v2" else cfg.endpoints.write


def v1_precision_has_v2_name(precision):
    """Whether a 1.x precision (already checked as one) can be written to a 2.x output."""
    return precision in _V1_TO_V2


def _encode(pairs):
    return urlencode(pairs, quote_via=quote, safe="/")


class FromV1(object):
    """Per output, the request a ``/write`` (``params`` parsed from its query) becomes.

    Called by the fan-out as ``translate(output, query, headers)``; returns the
    query string and headers for that output's backend. ``precision`` must have
    a 2.x name (see :func:`v1_precision_has_v2_name`).
    """

    def __init__(self, params, precision, default_rp=None):
        db = params["db"][0]
        rp = params.get("rp", [""])[0] or default_rp or "autogen"
        self.bucket = "%s/%s" % (db, rp)
        self.precision = _V1_TO_V2[precision]
        self.password = params.get("p", [""])[0]

    def __call__(self, output, query, headers):
        cfg = output.cfg
        if cfg.api != "v2":
            return query, headers
        pairs = []
        if cfg.org:
            pairs.append(("org", cfg.org))
        pairs.append(("bucket", cfg.bucket or self.bucket))
        pairs.append(("precision", self.precision))
        auth = "Token " + cfg.token if cfg.token else self._credentials(headers)
        return _encode(pairs), _with_auth(headers, auth)

    def _credentials(self, headers):
        """The client's 1.x credentials as a 2.x ``Authorization`` value, or None."""
        auth = headers.get("Authorization")
        if auth:
            scheme, _, value = auth.strip().partition(" ")
            if scheme.lower() != "basic":
                return auth  # "Token ..." or "Bearer ...": already 2.x's
            try:
                userpass = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return auth  # not ours to judge: the backend answers 401
            return "Token " + userpass.partition(":")[2]
        if self.password:
            return "Token " + self.password
        return None


class FromV2(object):
    """Per output, the request a ``/api/v2/write`` (``params`` parsed from its query) becomes."""

    def __init__(self, params, precision, default_rp=None):
        self.org = params.get("org", [""])[0]
        bucket = params["bucket"][0]
        self.db, _, rp = bucket.partition("/")
        rp = rp or default_rp
        pairs = [("db", self.db)]
        if rp:
            pairs.append(("rp", rp))
        pairs.append(("precision", _V2_TO_V1[precision]))
        self.v1_query = _encode(pairs)

    def __call__(self, output, query, headers):
        cfg = output.cfg
        if cfg.api != "v2":
            return self.v1_query, headers
        if not (cfg.org or cfg.bucket or cfg.token):
            return query, headers
        if cfg.org or cfg.bucket:
            pairs = parse_qsl(query, keep_blank_values=True)
            if cfg.org:  # the backend's own organization: the client's org ID means nothing there
                pairs = [(k, v) for k, v in pairs if k not in ("org", "orgID")]
                pairs.insert(0, ("org", cfg.org))
            if cfg.bucket:
                pairs = [(k, cfg.bucket if k == "bucket" else v) for k, v in pairs]
            query = _encode(pairs)
        if cfg.token:
            headers = _with_auth(headers, "Token " + cfg.token)
        return query, headers


def _with_auth(headers, auth):
    out = {k: v for k, v in headers.items() if k != "Authorization"}
    if auth:
        out["Authorization"] = auth
    return out


# ---------------------------------------------------------------------------
# Errors in each API's shape

def error_code(status):
    """InfluxDB 2.x's error code for an HTTP status."""
    return _CODES.get(status) or ("invalid" if status < 500 else "internal error")


def error_response(status, message):
    """A :class:`Response` in InfluxDB 2.x's error shape: ``{"code":"...","message":"..."}``."""
    body = json.dumps({"code": error_code(status), "message": message},
                      separators=(",", ":")).encode() + b"\n"
    return Response(status, body, _JSON)


def _json_object(response):
    if "json" not in response.content_type.lower():
        return None
    try:
        obj = json.loads(response.body)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def as_v2(response):
    """``response`` (a backend's or the fan-out's) as a 2.x client expects it.

    An error in 1.x's shape (``{"error": ...}``), or not JSON at all, becomes
    ``{"code": ..., "message": ...}`` with the same status: the 2.x clients read
    ``message``.
    """
    if response.status < 400:
        return response
    obj = _json_object(response)
    if obj is not None and "code" in obj and "message" in obj:
        return response
    if obj is not None and isinstance(obj.get("error"), str):
        return error_response(response.status, obj["error"])
    text = response.body.decode("utf-8", "replace").strip()
    return error_response(response.status, text[:1000] or "HTTP %d" % response.status)


def as_v1(response):
    """``response`` as a 1.x client expects it: a 2.x error becomes ``{"error": ...}``."""
    if response.status < 400:
        return response
    obj = _json_object(response)
    if obj is None or "error" in obj or not isinstance(obj.get("message"), str):
        return response
    return v1_error_response(response.status, obj["message"])
