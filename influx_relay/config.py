"""Configuration: TOML in, frozen dataclasses out.

``load(path)`` parses and validates the whole file once; nothing else in the
relay reads the TOML dict. Every error is a :class:`ConfigError` whose text is
one line naming the file, the key path and the bad value.

Both file shapes in use today load: the original influxdb-relay one (``output =
[{...}]`` with ``location`` the full ``/write`` URL) and the veepee-oss one
(``[[http.output]]`` with ``location`` a base URL and optional ``endpoints``).
Every setting is documented, with its default, in ``sample.toml``.
"""

import difflib
import ipaddress
import json
import math
import os
import re
import ssl
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Optional, Tuple
from urllib.parse import urlsplit

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

from .errors import ConfigError

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BODY_SIZE = 25 * 1024 * 1024
DEFAULT_POOL_SIZE = 64
DEFAULT_MTU = 1024
DEFAULT_MAX_BATCH_KB = 512
DEFAULT_COALESCE_MAX_KB = 1024
DEFAULT_MAX_DELAY_INTERVAL = 10.0
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
PRECISIONS = ("n", "ns", "u", "us", "ms", "s", "m", "h")
APIS = ("v1", "v2")


@dataclass(frozen=True)
class Endpoints:
    """Paths on a backend, each starting with "/"."""

    write: str = "/write"
    ping: str = "/ping"
    query: str = "/query"
    write_prom: str = "/api/v1/prom/write"
    write_v2: str = "/api/v2/write"


@dataclass(frozen=True)
class HTTPOutput:
    name: str
    location: str            # as written in the file
    scheme: str              # "http" or "https"
    host: str                # without brackets, e.g. "::1"
    port: int                # explicit, or 80/443 from the scheme
    endpoints: Endpoints
    timeout: float = DEFAULT_TIMEOUT          # seconds
    skip_tls_verification: bool = False
    pool_size: int = DEFAULT_POOL_SIZE        # keep-alive connections kept per backend
    buffer_size_mb: int = 0                   # 0: no retry buffer
    max_batch_kb: int = DEFAULT_MAX_BATCH_KB
    max_delay_interval: float = DEFAULT_MAX_DELAY_INTERVAL
    buffer_path: Optional[str] = None         # a directory: the buffer lives on disk
    buffer_max_age: float = 0.0               # seconds; 0: buffered writes never expire
    buffer_sync: str = "1s"                   # "write", "os", or an interval
    buffer_sync_interval: float = 1.0         # seconds, when buffer_sync is an interval
    username: Optional[str] = None            # with password: Basic auth instead of the client's
    password: Optional[str] = field(default=None, repr=False)
    token: Optional[str] = field(default=None, repr=False)  # "Authorization: Token ..." instead
    ca_file: Optional[str] = None             # PEM CA bundle trusted for an https location
    filters: Tuple["Filter", ...] = ()        # the [[filter]] tables naming this output
    api: str = "v1"                           # the write API the backend speaks: "v1" or "v2"
    org: Optional[str] = None                 # v2: organization (None: the client's)
    bucket: Optional[str] = None              # v2: fixed bucket (None: from db/rp or the client's)
    coalesce: bool = False                    # merge concurrent small writes into one request
    coalesce_max_kb: int = DEFAULT_COALESCE_MAX_KB  # largest merged request

    @property
    def base_url(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)


@dataclass(frozen=True)
class HTTPListener:
    name: str
    bind_addr: str           # as written, e.g. ":9096"
    host: str                # "" means every interface
    port: int
    outputs: Tuple[HTTPOutput, ...]
    ssl_combined_pem: Optional[str] = None
    default_retention_policy: Optional[str] = None
    max_body_size: int = DEFAULT_MAX_BODY_SIZE   # bytes, compressed and decoded
    read_timeout: float = 30.0                   # seconds idle, and for a whole request
    default_ping_response: int = 204             # status of GET /ping
    health_timeout_ms: int = 10000               # GET /health waits this long for backends
    rate_limit: float = 0.0                      # write requests/s; 0: unlimited
    burst_limit: int = 1                         # write requests above the rate (token bucket)
    admin_enabled: bool = False                  # serve POST /admin and /admin/flush
    admin_token: Optional[str] = field(default=None, repr=False)  # Bearer token for /admin*


@dataclass(frozen=True)
class UDPOutput:
    name: str
    location: str
    host: str
    port: int
    mtu: int = DEFAULT_MTU


@dataclass(frozen=True)
class UDPListener:
    name: str
    bind_addr: str
    host: str
    port: int
    outputs: Tuple[UDPOutput, ...]
    read_buffer: int = 0
    precision: str = "n"


@dataclass(frozen=True)
class Filter:
    """A ``[[filter]]`` table: which points its outputs take.

    A point goes to an output only if its measurement matches (anywhere, like
    Go's ``MatchString``: anchor with ^ and $) every measurement expression of
    every filter naming the output, and each of its tag keys matches every tag
    expression of those filters.
    """

    name: str
    outputs: Tuple[str, ...]
    tag_expression: Optional[re.Pattern] = None
    measurement_expression: Optional[re.Pattern] = None


@dataclass(frozen=True)
class Config:
    path: str
    http: Tuple[HTTPListener, ...] = ()
    udp: Tuple[UDPListener, ...] = ()
    filter: Tuple[Filter, ...] = ()
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT  # seconds, see sample.toml


# ---------------------------------------------------------------------------
# Loading

def load(path):
    """Read, parse and validate the TOML file at ``path``; return a :class:`Config`.

    ``path`` is quoted in error messages exactly as given.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError("%s: cannot read: %s" % (name, e.strerror or e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            "%s: not UTF-8 text (byte 0x%02x at offset %d)" % (name, data[e.start], e.start)
        ) from None
    return loads(text, name)


def loads(text, path="<string>"):
    """Parse and validate TOML ``text``; ``path`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError("%s: invalid TOML: %s" % (path, e)) from None
    values = _read_table(_At(path), doc, _TOP_KEYS)
    if not values.get("http") and not values.get("udp"):
        raise ConfigError("%s: no [[http]] or [[udp]] listener is configured" % path)
    if values.get("filter"):
        values["http"] = _apply_filters(_At(path), values["filter"], values.get("http", ()))
    return Config(path=path, **values)


# ---------------------------------------------------------------------------
# Where we are in the file, for error messages

@dataclass(frozen=True)
class _At:
    """A file name and a key path such as ``http[0].output[1].timeout``."""

    file: str
    path: str = ""

    def key(self, name):
        if not _BARE_KEY.fullmatch(name):
            name = json.dumps(name, ensure_ascii=False)
        return _At(self.file, "%s.%s" % (self.path, name) if self.path else name)

    def index(self, i):
        return _At(self.file, "%s[%d]" % (self.path, i))

    def error(self, msg):
        if self.path:
            return ConfigError("%s: %s: %s" % (self.file, self.path, msg))
        return ConfigError("%s: %s" % (self.file, msg))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MAX_SHOWN = 80


def _show(value):
    """A value as the user wrote it in TOML, cut short if long."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if len(value) > _MAX_SHOWN:
            value = value[:_MAX_SHOWN] + "..."
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return str(value)


def _wrong_type(at, value, expected):
    if isinstance(value, (dict, list)):
        return at.error("must be %s, not %s" % (expected, _show(value)))
    return at.error("%s must be %s" % (_show(value), expected))


# ---------------------------------------------------------------------------
# Tables

def _read_table(at, table, keys, required=()):
    """Validate ``table`` against ``keys`` (TOML key -> validator).

    Returns ``{field_name: value}`` for the keys present, the field name being
    the TOML key with "-" turned into "_". Unknown keys are errors, with a
    suggestion, so that a typo never silently disables a setting.
    """
    for name in table:
        if name not in keys:
            raise at.key(name).error("unknown key (%s)" % _suggest(name, keys))
    for name in required:
        if name not in table:
            raise at.key(name).error("required key is missing")
    return {
        name.replace("-", "_"): validate(at.key(name), table[name])
        for name, validate in keys.items()
        if name in table
    }


def _suggest(name, known):
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return "did you mean %s?" % json.dumps(close[0])
    return "known keys: %s" % ", ".join(sorted(known))


def _array_of_tables(at, value, example):
    if not isinstance(value, list):
        raise _wrong_type(at, value, "an array of tables (%s)" % example)
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _wrong_type(at.index(i), item, "a table")
    return value


def _check_unique_names(items):
    """``items`` is a list of (at, name, kind); two with one name is an error."""
    seen = {}
    for at, name, kind in items:
        if name in seen:
            raise at.key("name").error(
                "%s is used by %s %s too" % (_show(name), kind, seen[name].path)
            )
        seen[name] = at


# ---------------------------------------------------------------------------
# Scalar validators: each takes (at, value) and returns the value to store

def _string(at, value):
    if not isinstance(value, str):
        raise _wrong_type(at, value, "a string")
    return value


def _name(at, value):
    if not _string(at, value):
        raise at.error("must not be empty")
    return value


def _optional_string(at, value):
    return _string(at, value) or None


def _bool(at, value):
    if not isinstance(value, bool):
        raise _wrong_type(at, value, "true or false")
    return value


def _int(at, value, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, int):  # TOML true is no integer
        raise _wrong_type(at, value, "an integer")
    if maximum is None and value < minimum:
        raise at.error("%d must be at least %d" % (value, minimum))
    if maximum is not None and not minimum <= value <= maximum:
        raise at.error("%d must be between %d and %d" % (value, minimum, maximum))
    return value


def _integer(minimum, maximum=None):
    """A validator for an integer in [minimum, maximum]."""
    return lambda at, value: _int(at, value, minimum, maximum)


_DURATION_UNITS_NS = {
    "ns": 1,
    "us": 1000,
    "\u00b5s": 1000,  # µs, MICRO SIGN, as Go accepts
    "\u03bcs": 1000,  # μs, GREEK SMALL LETTER MU, as Go accepts
    "ms": 1000 ** 2,
    "s": 1000 ** 3,
    "m": 60 * 1000 ** 3,
    "h": 3600 * 1000 ** 3,
}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_DURATION = re.compile(r"\+?(?:%s)+" % _DURATION_PART.pattern)


def parse_duration(text):
    """Go's ``time.ParseDuration`` for non-negative durations, in float seconds.

    Raises ValueError for anything else ("10x", "", "-1s", "10").
    """
    if text == "0":
        return 0.0
    if not _DURATION.fullmatch(text):
        raise ValueError(text)
    total_ns = Decimal(0)
    for number, unit in _DURATION_PART.findall(text.lstrip("+")):
        if number in ("", "."):
            raise ValueError(text)
        total_ns += Decimal(number) * _DURATION_UNITS_NS[unit]
    return float(total_ns / 10 ** 9)


def _duration(at, value):
    _string(at, value)
    try:
        return parse_duration(value)
    except ValueError:
        raise at.error('%s is not a duration (e.g. "10s", "500ms")' % _show(value)) from None


def _positive_duration(at, value):
    seconds = _duration(at, value)
    if seconds <= 0:
        raise at.error("%s must be longer than 0" % _show(value))
    return seconds


_SIZE_UNITS = {
    "b": 1,
    "k": 1024, "kb": 1024, "kib": 1024,
    "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2,
    "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3,
}
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?([A-Za-z]+)")


def _byte_size(at, value):
    """Bytes: a positive integer, or a string such as "25MB" (1 MB = 1024 KB)."""
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        unit = match and _SIZE_UNITS.get(match.group(2).lower())
        if not unit:
            raise at.error('%s is not a size (e.g. 26214400, "25MB", "512KB", "1GiB")'
                           % _show(value))
        size = int(Decimal(match.group(1)) * unit)
        if size < 1:
            raise at.error("%s must be at least 1 byte" % _show(value))
        return size
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(at, value, 'an integer or a string such as "25MB"')
    return _int(at, value, 1)


def _precision(at, value):
    if _string(at, value) not in PRECISIONS:
        raise at.error("%s is not a precision (one of %s)" % (_show(value), ", ".join(PRECISIONS)))
    return value


def _readable_file(at, value):
    """A path that can be opened for reading now (checked once, at load)."""
    if not _string(at, value):
        raise at.error("must not be empty")
    try:
        with open(value, "rb"):
            pass
    except OSError as e:
        raise at.error("%s cannot be read: %s" % (_show(value), e.strerror or e)) from None
    return value


def _rate(at, value):
    """A non-negative number (integer or float) of requests per second."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type(at, value, "a number")
    if not math.isfinite(value) or value < 0:
        raise at.error("%s must be a number of requests per second, 0 or more" % _show(value))
    return float(value)


def _secret(at, value):
    """A credential: a non-empty string, never quoted back in an error."""
    if not isinstance(value, str):
        raise at.error("must be a string")
    if not value:
        raise at.error("must not be empty")
    return value


def _regex(at, value):
    """A regular expression (Python's ``re`` syntax, close to Go's), compiled."""
    _string(at, value)
    try:
        return re.compile(value)
    except re.error as e:
        raise at.error("%s is not a valid regular expression: %s" % (_show(value), e)) from None


def _names(at, value):
    """A non-empty array of names (strings)."""
    if not isinstance(value, list):
        raise _wrong_type(at, value, 'an array of output names (e.g. ["a", "b"])')
    if not value:
        raise at.error("must not be empty")
    for i, name in enumerate(value):
        _name(at.index(i), name)
    return tuple(value)


def _ca_file(at, value):
    """A PEM file of CA certificates, readable and parseable now."""
    _readable_file(at, value)
    try:
        ssl.create_default_context(cafile=value)
    except (ssl.SSLError, ValueError) as e:
        raise at.error("%s is not a PEM file of CA certificates: %s"
                       % (_show(value), getattr(e, "reason", None) or e)) from None
    return value


# ---------------------------------------------------------------------------
# Addresses, in Go's host:port syntax

_HOSTNAME = re.compile(r"[A-Za-z0-9._-]+")


def _split_host_port(text):
    """Split Go-style "host:port", "[v6]:port", ":port" into (host, port text).

    The port text is None when there is no ":port". Raises ValueError with the
    reason, phrased to follow the quoted address.
    """
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError('has no closing "]"')
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError('has %s after "]"' % _show(rest))
        if not _is_ipv6(host):
            raise ValueError("has %s in brackets, which is not an IPv6 address" % _show(host))
        return host, rest[1:] if rest else None
    if "/" in text:
        raise ValueError('is not a "host:port" address')
    if text.count(":") > 1:
        host, _, port = text.rpartition(":")
        if not _is_ipv6(host):  # "::1" or "fe80::1": no port was given
            host, port = text, "port"
        raise ValueError('has an IPv6 address without brackets (write "[%s]:%s")' % (host, port))
    host, colon, port = text.partition(":")
    if host and not _HOSTNAME.fullmatch(host):
        raise ValueError("has an invalid host %s" % _show(host))
    return host, port if colon else None


def _is_ipv6(host):
    try:
        ipaddress.IPv6Address(host.split("%", 1)[0])  # without a zone, "fe80::1%eth0"
    except ValueError:
        return False
    return True


def _port(port, minimum):
    """The port number, or a ValueError reason."""
    if not port:
        raise ValueError("is missing a port")
    if not port.isascii() or not port.isdigit():
        raise ValueError("port %s is not a number" % _show(port))
    if not minimum <= int(port) <= 65535:
        raise ValueError("port out of range (%d-65535)" % minimum)
    return int(port)


def _address(at, value, listen):
    """(host, port) of a bind-addr (``listen``: any host, port 0 allowed) or a
    UDP output location (a host and a port from 1 are required)."""
    _string(at, value)
    try:
        host, port = _split_host_port(value)
        if not host and not listen:
            raise ValueError("has no host")
        port = _port(port, 0 if listen else 1)
    except ValueError as reason:
        raise at.error("%s %s" % (_show(value), reason)) from None
    return host, port


def _bind_addr(at, value):
    return _address(at, value, listen=True)


def _udp_location(at, value):
    return _address(at, value, listen=False)


def _check_unique_binds(listeners):
    """Two listeners of one protocol may not bind one port on one host (a
    wildcard host overlaps every host). Port 0 is ephemeral and never clashes.
    ``listeners`` is a list of (at, listener)."""
    wildcards = ("", "0.0.0.0", "::")
    for i, (at, listener) in enumerate(listeners):
        for other_at, other in listeners[:i]:
            if listener.port and listener.port == other.port and (
                listener.host == other.host
                or listener.host in wildcards
                or other.host in wildcards
            ):
                raise at.key("bind-addr").error(
                    "%s is also bound by listener %s (%s)"
                    % (_show(listener.bind_addr), other_at.path, _show(other.bind_addr))
                )


# ---------------------------------------------------------------------------
# HTTP outputs: location and endpoints

_ENDPOINT_KEYS = {name: _string for name in ("write", "ping", "query", "write_prom", "write_v2")}


def _endpoints(at, value):
    """The inline ``endpoints`` table: any subset of write, ping, query, write_prom, write_v2."""
    if not isinstance(value, dict):
        raise _wrong_type(at, value, "a table (e.g. {write=\"/write\", ping=\"/ping\"})")
    paths = _read_table(at, value, _ENDPOINT_KEYS)
    for name, path in paths.items():
        if not path.startswith("/") or "?" in path or "#" in path or _has_space(path):
            raise at.key(name).error('%s is not a path starting with "/"' % _show(path))
    return paths


def _has_space(text):
    return any(c.isspace() for c in text)


def _http_location(at, location, endpoints):
    """(scheme, host, port, Endpoints) from an output's location and endpoints.

    Without ``endpoints``, a location whose path ends in "/write" is the full
    write URL of the original influxdb-relay (or, ending in "/api/v2/write",
    of an InfluxDB 2.x backend); any other location is a base URL whose path
    prefixes every default endpoint.
    """
    shown = _show(location)
    if not location.lower().startswith(("http://", "https://")):
        raise at.error("%s is not an http or https URL" % shown)
    try:
        parts = urlsplit(location)
    except ValueError:
        raise at.error("%s is not a valid URL" % shown) from None
    if "?" in location or "#" in location:
        raise at.error("%s must not have a query string or fragment" % shown)
    if _has_space(location):
        raise at.error("%s must not contain spaces" % shown)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo = netloc.rpartition("@")[0]
        masked = location.replace(userinfo + "@", userinfo.partition(":")[0] + ":***@", 1)
        raise at.error("%s: credentials in the URL are not supported" % _show(masked))
    try:
        host, port = _split_host_port(netloc)
        if not host:
            raise ValueError("has no host")
        port = _port(port, 1) if port is not None else _DEFAULT_PORTS[parts.scheme]
    except ValueError as reason:
        raise at.error("%s %s" % (shown, reason)) from None

    path = parts.path
    if endpoints is None and path.endswith("/api/v2/write"):
        prefix = path[: -len("/api/v2/write")]  # the full v2 write URL
    elif endpoints is None and path.endswith("/write"):
        prefix = path[: -len("/write")]  # the original format: the full write URL
    else:
        prefix = path.rstrip("/")
    paths = asdict(Endpoints())
    paths.update(endpoints or {})
    resolved = Endpoints(**{name: prefix + p for name, p in paths.items()})
    return parts.scheme, host, port, resolved


_DEFAULT_PORTS = {"http": 80, "https": 443}


# ---------------------------------------------------------------------------
# Sections. Each table maps a TOML key to its validator; the key, with "-"
# turned into "_", is the dataclass field. A new plain setting is one line
# here plus its field (with its default) in the dataclass.

def _buffer_sync(at, value):
    """ "write" (fsync before answering), "os" (never fsync), or an fsync interval."""
    _string(at, value)
    if value in ("write", "os"):
        return value
    try:
        if parse_duration(value) > 0:
            return value
    except ValueError:
        pass
    raise at.error('%s is not "write", "os" or an interval such as "1s"' % _show(value))


def _api(at, value):
    if _string(at, value) not in APIS:
        raise at.error('%s is not an API (one of "v1", "v2")' % _show(value))
    return value


def _http_output(at, table):
    values = _read_table(at, table, _HTTP_OUTPUT_KEYS, required=("name", "location"))
    scheme, host, port, endpoints = _http_location(
        at.key("location"), values["location"], values.pop("endpoints", None)
    )
    if values.get("buffer_path") and not values.get("buffer_size_mb"):
        raise at.key("buffer-path").error(
            "a disk buffer needs buffer-size-mb (its size limit) greater than 0"
        )
    if values.get("api", "v1") == "v1":
        for key in ("org", "bucket"):
            if key in values:
                raise at.key(key).error('is only used with api = "v2"')
    sync = values.get("buffer_sync")
    if sync and sync not in ("write", "os"):
        values["buffer_sync_interval"] = parse_duration(sync)
    for old, new in (("http_user", "username"), ("http_pass", "password")):
        # influxdb-relay's names for the same thing.
        if old in values:
            if new in values:
                raise at.key(old.replace("_", "-")).error(
                    "is influxdb-relay's name for %s: set one of them" % new)
            values[new] = values.pop(old)
    _check_credentials(at, values)
    if values.get("ca_file") and scheme != "https":
        raise at.key("ca-file").error("is only used with an https location, not %s"
                                      % _show(values["location"]))
    return HTTPOutput(scheme=scheme, host=host, port=port, endpoints=endpoints, **values)


def _check_credentials(at, values):
    """username and password go together; token excludes them."""
    if values.get("token") and ("username" in values or "password" in values):
        raise at.key("token").error("use either token or username and password, not both")
    if "username" in values and "password" not in values:
        raise at.key("password").error("is required with username")
    if "password" in values and "username" not in values:
        raise at.key("username").error("is required with password")


def _udp_output(at, table):
    values = _read_table(at, table, _UDP_OUTPUT_KEYS, required=("name", "location"))
    host, port = _udp_location(at.key("location"), values["location"])
    return UDPOutput(host=host, port=port, **values)


def _outputs(build, example):
    """A validator for a listener's non-empty ``output`` array."""

    def validate(at, value):
        _array_of_tables(at, value, example)
        if not value:
            raise at.error("must not be empty")
        items = [(at.index(i), build(at.index(i), table)) for i, table in enumerate(value)]
        _check_unique_names([(item_at, out.name, "output") for item_at, out in items])
        return tuple(out for _, out in items)

    return validate


def _http_listener(at, table):
    values = _read_table(at, table, _HTTP_LISTENER_KEYS, required=("bind-addr", "output"))
    host, port = _bind_addr(at.key("bind-addr"), values["bind_addr"])
    values.setdefault("name", values["bind_addr"])
    values["outputs"] = values.pop("output")
    rate = values.get("rate_limit", 0.0)
    if "burst_limit" in values and not rate:
        raise at.key("burst-limit").error("needs rate-limit (greater than 0)")
    values.setdefault("burst_limit", max(1, math.ceil(rate)))
    if values.get("admin_token") and not values.get("admin_enabled"):
        raise at.key("admin-token").error("is set but admin-enabled is not true")
    return HTTPListener(host=host, port=port, **values)


def _udp_listener(at, table):
    values = _read_table(at, table, _UDP_LISTENER_KEYS, required=("bind-addr", "output"))
    host, port = _bind_addr(at.key("bind-addr"), values["bind_addr"])
    values.setdefault("name", values["bind_addr"])
    values["outputs"] = values.pop("output")
    return UDPListener(host=host, port=port, **values)


def _filter(at, table):
    values = _read_table(at, table, _FILTER_KEYS, required=("outputs",))
    if "tag_expression" not in values and "measurement_expression" not in values:
        raise at.error("a filter needs tag-expression or measurement-expression")
    values.setdefault("name", at.path)
    return Filter(**values)


def _filters(at, value):
    _array_of_tables(at, value, "[[filter]]")
    items = [(at.index(i), _filter(at.index(i), table)) for i, table in enumerate(value)]
    _check_unique_names([(item_at, f.name, "filter") for item_at, f in items])
    return tuple(f for _, f in items)


def _apply_filters(at, filters, listeners):
    """Attach each filter to the HTTP outputs it names (in every listener);
    naming an output that no [[http]] listener has is an error."""
    known = {o.name for listener in listeners for o in listener.outputs}
    for i, f in enumerate(filters):
        for j, name in enumerate(f.outputs):
            if name not in known:
                raise at.key("filter").index(i).key("outputs").index(j).error(
                    "%s is not the name of an HTTP output (%s)" % (_show(name), _hint(name, known))
                )
    return tuple(
        replace(listener, outputs=tuple(
            replace(o, filters=tuple(f for f in filters if o.name in f.outputs))
            for o in listener.outputs
        ))
        for listener in listeners
    )


def _hint(name, known):
    if not known:
        return "there are none"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return "did you mean %s?" % json.dumps(close[0])
    return "known outputs: %s" % ", ".join(sorted(known))


def _listeners(build, example):
    """A validator for a top-level array of listeners of one protocol."""

    def validate(at, value):
        _array_of_tables(at, value, example)
        items = [(at.index(i), build(at.index(i), table)) for i, table in enumerate(value)]
        _check_unique_binds(items)
        _check_unique_names([(item_at, lst.name, "listener") for item_at, lst in items])
        return tuple(lst for _, lst in items)

    return validate


_HTTP_OUTPUT_KEYS = {
    "name": _name,
    "location": _string,  # split into scheme, host, port and endpoints above
    "endpoints": _endpoints,
    "timeout": _positive_duration,
    "skip-tls-verification": _bool,
    "pool-size": _integer(1),
    "buffer-size-mb": _integer(0),
    "max-batch-kb": _integer(1),
    "max-delay-interval": _positive_duration,
    "buffer-path": _string,
    "buffer-max-age": _duration,
    "buffer-sync": _buffer_sync,
    "username": _secret,
    "password": _secret,
    "http-user": _secret,
    "http-pass": _secret,
    "token": _secret,
    "ca-file": _ca_file,
    "api": _api,
    "org": _optional_string,
    "bucket": _optional_string,
    "coalesce": _bool,
    "coalesce-max-kb": _integer(1),
}

_HTTP_LISTENER_KEYS = {
    "name": _name,
    "bind-addr": _string,  # split into host and port above
    "ssl-combined-pem": _readable_file,
    "default-retention-policy": _optional_string,
    "max-body-size": _byte_size,
    "read-timeout": _positive_duration,
    "default-ping-response": _integer(200, 599),
    "health-timeout-ms": _integer(1),
    "rate-limit": _rate,
    "burst-limit": _integer(1),
    "admin-enabled": _bool,
    "admin-token": _secret,
    "output": _outputs(_http_output, "[[http.output]]"),
}

_FILTER_KEYS = {
    "name": _name,
    "tag-expression": _regex,
    "measurement-expression": _regex,
    "outputs": _names,
}

_UDP_OUTPUT_KEYS = {
    "name": _name,
    "location": _string,  # split into host and port above
    "mtu": _integer(64, 65507),
}

_UDP_LISTENER_KEYS = {
    "name": _name,
    "bind-addr": _string,  # split into host and port above
    "read-buffer": _integer(0),
    "precision": _precision,
    "output": _outputs(_udp_output, "[[udp.output]]"),
}

_TOP_KEYS = {
    "http": _listeners(_http_listener, "[[http]]"),
    "udp": _listeners(_udp_listener, "[[udp]]"),
    "filter": _filters,
    "shutdown-timeout": _duration,
}
