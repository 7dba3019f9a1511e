"""Configuration: TOML in, frozen dataclasses out.

``load(path)`` parses and validates the whole file once; nothing else in the
relay reads the TOML dict. Every error is a :class:`ConfigError` whose text is
one line naming the file, the key path and the bad value.

Each setting is declared once, as a field of the dataclass of its table
(:func:`setting`): its key, its check (type and range), its default as written
in TOML, and its doc. The tables of keys, the dataclass defaults and the
unknown-key suggestions all derive from these; ``sample.toml`` shows every
setting with its doc and its default, and a test holds it to them.

Both file shapes in use today load: the original influxdb-relay one (``output =
[{...}]`` with ``location`` the full ``/write`` URL) and the veepee-oss one
(``[[http.output]]`` with ``location`` a base URL and optional ``endpoints``).

Every number has a range checked here, at load, with what the code and the OS
can take as its upper bound, so that a config ``check`` accepts never fails
``run`` on a value: see the ``MAX_*`` constants.
"""

# mypy: disable-error-code="misc"
# (every field is made by setting(), which always gives it a default: mypy cannot
# see that, and takes those without a visible one for required fields after optional ones)
import dataclasses
import difflib
import ipaddress
import json
import math
import os
import re
import ssl
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Callable, Optional, Tuple
from urllib.parse import urlsplit

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from .errors import ConfigError

PRECISIONS = ("n", "ns", "u", "us", "ms", "s", "m", "h")
APIS = ("v1", "v2")

#: The longest duration, in seconds: whole hours under Go's time.Duration
#: maximum (2^63-1 ns, 2562047h47m16s), which is also where CPython's socket,
#: lock and sleep timeouts overflow.
MAX_DURATION_TEXT = "2562047h"
MAX_DURATION = 2562047 * 3600.0
#: The largest size in bytes (4 EiB): a size and another still fit a signed
#: 64-bit integer, which file offsets, zlib's lengths and Py_ssize_t are.
MAX_BYTES = 2 ** 62
#: SO_RCVBUF is a C int.
MAX_C_INT = 2 ** 31 - 1
#: Connections to one backend from one local address: one per local port.
MAX_POOL_SIZE = 65535
#: The rate limiter counts tokens in a float, exact up to 2^53.
MAX_TOKENS = 2 ** 53


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
# Settings

#: No default: the key is required, or its value derives from other keys (the
#: doc says how), and the dataclass field has no default either.
NO_DEFAULT = dataclasses.MISSING


@dataclass(frozen=True)
class Setting:
    """One key of a TOML table: everything about it, declared in one place.

    ``check(at, value)`` validates a value from the file (type and range) and
    returns what the dataclass field holds. ``default`` is written as in TOML,
    the way ``sample.toml`` shows it; None means that an absent key is None,
    NO_DEFAULT that the key is required or derived. ``table`` is, for an
    array of tables, the dataclass of each table. ``alias_of``: this key is a
    second name (influxdb-relay's) for that one.
    """

    key: str
    field: str
    check: Callable
    default: object
    doc: str
    required: bool = False
    table: Optional[type] = None
    alias_of: Optional[str] = None


def setting(check, default=NO_DEFAULT, doc="", key=None, required=False, table=None,
            aliases=(), repr=True):
    """A dataclass field that is a setting; its key is the field name with "_"
    turned into "-" unless ``key`` is given. The field's default is
    ``check(default)``, so a default is held to the same rules as a value
    from a file."""
    if default is NO_DEFAULT or default is None:
        value = default
    else:
        value = check(_At("default"), default)
    meta = {"setting": dict(check=check, default=default, doc=doc, key=key,
                            required=required, table=table, aliases=aliases)}
    return dataclasses.field(default=value, repr=repr, metadata=meta)


def settings(cls):
    """``{key: Setting}`` of a config dataclass, in declaration order, its
    keys' aliases after them."""
    found = _SETTINGS.get(cls)
    if found is None:
        found, aliases = {}, []
        for f in dataclasses.fields(cls):
            meta = f.metadata.get("setting")
            if meta is None:
                continue  # derived from settings, not read from the file
            key = meta["key"] or f.name.replace("_", "-")
            found[key] = Setting(key, f.name, meta["check"], meta["default"], meta["doc"],
                                 meta["required"], meta["table"])
            aliases += [Setting(alias, f.name, meta["check"], None,
                                "influxdb-relay's name for %s." % key, alias_of=key)
                        for alias in meta["aliases"]]
        found.update((s.key, s) for s in aliases)
        _SETTINGS[cls] = found
    return found


_SETTINGS: dict = {}


def _read_table(at, table, cls):
    """Validate ``table`` against the settings of ``cls``.

    Returns ``{field_name: value}`` for the keys present. Unknown keys are
    errors, with a suggestion, so that a typo never silently disables a
    setting; so are a missing required key and a key set under both its names.
    """
    known = settings(cls)
    for name in table:
        if name not in known:
            raise at.key(name).error("unknown key (%s)" % _suggest(name, known))
    values = {}
    for key, s in known.items():
        if key in table:
            if s.field in values:
                raise at.key(key).error("is influxdb-relay's name for %s: set one of them"
                                        % s.alias_of)
            values[s.field] = s.check(at.key(key), table[key])
        elif s.required:
            raise at.key(key).error("required key is missing")
    return values


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
# Scalar checks: each takes (at, value) and returns the value to store

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


def _int(at, value, minimum, maximum):
    if isinstance(value, bool) or not isinstance(value, int):  # TOML true is no integer
        raise _wrong_type(at, value, "an integer")
    if not minimum <= value <= maximum:
        raise at.error("%d must be between %d and %d" % (value, minimum, maximum))
    return value


def _integer(minimum, maximum):
    """A check for an integer in [minimum, maximum]."""
    return lambda at, value: _int(at, value, minimum, maximum)


def _precision(at, value):
    if _string(at, value) not in PRECISIONS:
        raise at.error("%s is not a precision (one of %s)" % (_show(value), ", ".join(PRECISIONS)))
    return value


def _choice(*choices):
    """A validator for one of ``choices`` (strings)."""
    def check(at, value):
        if _string(at, value) not in choices:
            raise at.error("%s is not one of %s" % (_show(value), ", ".join(
                json.dumps(c) for c in choices)))
        return value
    return check


MAX_WORKERS = 256


def _workers(at, value):
    """A number of processes, 1 to MAX_WORKERS, or "auto": one per CPU."""
    if value == "auto":
        return max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    if isinstance(value, str):
        raise at.error('%s is not a number of processes or "auto"' % _show(value))
    return _int(at, value, 1, MAX_WORKERS)


def _output_names(at, value):
    """An array of output names, maybe empty (checked against the listener's outputs)."""
    if not isinstance(value, list):
        raise _wrong_type(at, value, 'an array of output names (e.g. ["b", "a"])')
    for i, name in enumerate(value):
        _name(at.index(i), name)
    return tuple(value)


def _api(at, value):
    if _string(at, value) not in APIS:
        raise at.error('%s is not an API (one of "v1", "v2")' % _show(value))
    return value


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
    """Seconds, from 0 to MAX_DURATION."""
    _string(at, value)
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise at.error('%s is not a duration (e.g. "10s", "500ms")' % _show(value)) from None
    if seconds > MAX_DURATION:
        raise at.error('%s must be at most "%s" (292 years)' % (_show(value), MAX_DURATION_TEXT))
    return seconds


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
            raise at.error('%s is not a size (e.g. 25000000, "25MB", "512KB", "1GiB")'
                           % _show(value))
        size = int(Decimal(match.group(1)) * unit)
        if not 1 <= size <= MAX_BYTES:
            raise at.error("%s must be between 1 byte and %d bytes (4 EiB)"
                           % (_show(value), MAX_BYTES))
        return size
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(at, value, 'an integer or a string such as "25MB"')
    return _int(at, value, 1, MAX_BYTES)


def _rate(at, value):
    """A number (integer or float) of requests per second, 0 to MAX_TOKENS."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type(at, value, "a number")
    if not (math.isfinite(value) and 0 <= value <= MAX_TOKENS):
        raise at.error("%s must be a number of requests per second between 0 and %d"
                       % (_show(value), MAX_TOKENS))
    return float(value)


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


def _ssl_reason(e):
    """An SSLError's message without the "(_ssl.c:1234)" of where it was raised."""
    text = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], str) else str(e)
    return re.sub(r" \(_ssl\.c:\d+\)$", "", text)


def _tls_pem(at, value):
    """A PEM file with a certificate (chain) and its private key, loaded now
    as the listener will load it."""
    _readable_file(at, value)
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(value)
    except (ssl.SSLError, OSError, ValueError) as e:
        raise at.error("%s is not a certificate and its private key in PEM: %s"
                       % (_show(value), _ssl_reason(e) if isinstance(e, ssl.SSLError) else e)
                       ) from None
    return value


def _ca_file(at, value):
    """A PEM file of CA certificates, readable and parseable now."""
    _readable_file(at, value)
    try:
        ssl.create_default_context(cafile=value)
    except (ssl.SSLError, ValueError) as e:
        raise at.error("%s is not a PEM file of CA certificates: %s"
                       % (_show(value), getattr(e, "reason", None) or e)) from None
    return value


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


def _buffer_sync(at, value):
    """ "write" or "os" as they are; an interval as the policy "interval" (its
    seconds go to buffer_sync_interval)."""
    _string(at, value)
    if value in ("write", "os"):
        return value
    try:
        seconds = parse_duration(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise at.error('%s is not "write", "os" or an interval such as "1s"' % _show(value))
    _duration(at, value)  # its range
    return "interval"


def _buffer_path(at, value):
    """A directory the disk buffer can use (see :func:`_directory`)."""
    return _directory(at, value, ("lock", "cursor"))


def _state_dir(at, value):
    """A directory the gap ledger can use (see :func:`_directory`)."""
    return _directory(at, value, ("ledger.json", "ledger.journal"))


def _directory(at, value, files):
    """A directory the relay can use: if it exists, a directory whose ``files``
    we may read and write; if not, one that can be made (its nearest existing
    parent is a directory we may write). Checked with stat and access only,
    nothing made or locked: ``check`` runs while the relay holds the directory
    (before a reload), maybe as another user."""
    if not _string(at, value):
        raise at.error("must not be empty")
    path = os.path.abspath(value)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise at.error("%s exists and is not a directory" % _show(value))
        for name, mode in [(path, os.R_OK | os.W_OK | os.X_OK)] + [
                (os.path.join(path, f), os.R_OK | os.W_OK) for f in files]:
            if os.path.exists(name) and not os.access(name, mode):
                raise at.error("%s cannot be used: no permission to read and write %s"
                               % (_show(value), name))
        return value
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise at.error("%s cannot be made: %s is not a directory" % (_show(value), parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise at.error("%s cannot be made: no permission to write %s" % (_show(value), parent))
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
# Arrays of tables

def _tables(build, example, kind, non_empty=False):
    """A check for an array of tables, each made by ``build(at, table)``:
    ``kind`` ("output", "listener", "filter") names them in errors, and two with
    one name, or two listeners on one address, are errors."""

    def check(at, value):
        _array_of_tables(at, value, example)
        if non_empty and not value:
            raise at.error("must not be empty")
        items = [(at.index(i), build(at.index(i), table)) for i, table in enumerate(value)]
        if kind == "listener":
            _check_unique_binds(items)
        _check_unique_names([(item_at, item.name, kind) for item_at, item in items])
        return tuple(item for _, item in items)

    return check


# ---------------------------------------------------------------------------
# The tables, each with its settings, innermost first

def _endpoint_path(at, value):
    path = _string(at, value)
    if not path.startswith("/") or "?" in path or "#" in path or _has_space(path):
        raise at.error('%s is not a path starting with "/"' % _show(path))
    return path


def _has_space(text):
    return any(c.isspace() for c in text)


@dataclass(frozen=True)
class Endpoints:
    """Paths on a backend, each starting with "/" (documented with the
    output's ``endpoints``)."""

    write: str = setting(_endpoint_path, "/write", key="write")
    ping: str = setting(_endpoint_path, "/ping", key="ping")
    query: str = setting(_endpoint_path, "/query", key="query")
    write_prom: str = setting(_endpoint_path, "/api/v1/prom/write", key="write_prom")
    write_v2: str = setting(_endpoint_path, "/api/v2/write", key="write_v2")
    query_v2: str = setting(_endpoint_path, "/api/v2/query", key="query_v2")
    read_prom: str = setting(_endpoint_path, "/api/v1/prom/read", key="read_prom")


def _endpoints(at, value):
    """The inline ``endpoints`` table: any subset of its keys."""
    if not isinstance(value, dict):
        raise _wrong_type(at, value, "a table (e.g. {write=\"/write\", ping=\"/ping\"})")
    return Endpoints(**_read_table(at, value, Endpoints))


def defaults(cls):
    """The TOML table of the settings of ``cls`` that have a default."""
    return {s.key: s.default for s in settings(cls).values()
            if s.default is not NO_DEFAULT and s.default is not None}


_BUFFER_SYNC_DEFAULT = "1s"


@dataclass(frozen=True)
class HTTPOutputConfig:
    """An ``[[http.output]]`` table: one backend of an HTTP listener."""

    name: str = setting(_name, required=True, doc=(
        "Name used in logs and metrics (required, unique within this listener)."))
    location: str = setting(_string, required=True, doc=(
        "Base URL of the backend, http or https (required; port defaults to 80/443)."))
    scheme: str              # "http" or "https", from the location
    host: str                # without brackets, e.g. "::1"
    port: int                # explicit, or 80/443 from the scheme
    endpoints: Endpoints = setting(_endpoints, defaults(Endpoints), doc=(
        "Paths on the backend, any subset; missing ones take these defaults: write "
        "(InfluxDB 1.x writes), ping (GET /health pings it), query (POST /admin, and "
        "/query with query-enabled), write_prom (Prometheus remote writes), write_v2 "
        "(InfluxDB 2.x writes), query_v2 (/api/v2/query) and read_prom (Prometheus "
        "remote reads), both with query-enabled."))
    timeout: float = setting(_positive_duration, "10s", doc=(
        "A write that does not complete in this time fails."))
    skip_tls_verification: bool = setting(_bool, False, doc=(
        "Accept any certificate on an https location. Insecure: for testing only. "
        "Applies to every request to this output (writes, /health, /admin)."))
    pool_size: int = setting(_integer(1, MAX_POOL_SIZE), 64, doc=(
        "Keep-alive connections kept open to this backend (1 to 65535)."))
    buffer_size_mb: int = setting(_integer(0, MAX_BYTES // 1024 ** 2), 0, doc=(
        "Memory for writes the backend failed, retried later, in MB (0: no retry buffer)."))
    max_batch_kb: int = setting(_integer(1, MAX_BYTES // 1024), 512, doc=(
        "Largest batch of buffered writes sent at once, in KB."))
    max_delay_interval: float = setting(_positive_duration, "10s", doc=(
        "Longest wait between two retries of buffered writes (the first waits 500ms, "
        "each failure doubles the wait up to this)."))
    buffer_path: Optional[str] = setting(_buffer_path, None, doc=(
        "Keep the retry buffer on disk, in this directory (one per output, which "
        "no other output may share): it then survives restarts and crashes and is "
        "bounded by buffer-size-mb, which must be set. The files hold the clients' "
        "credentials: the directory is made 0700. (default: the buffer is in memory)."))
    buffer_max_age: float = setting(_duration, "0", doc=(
        'Drop buffered writes older than this, counted and logged ("0": keep them '
        "until delivered or the buffer is full)."))
    buffer_sync: str = setting(_buffer_sync, _BUFFER_SYNC_DEFAULT, doc=(
        'When a disk buffer calls fsync: "write" (before the client is answered: '
        'survives power loss, slowest), an interval such as "1s" (a crash of the '
        "machine loses at most that much; a crash or kill of the relay alone loses "
        'nothing), or "os" (never: the kernel decides).'))
    # The fsync interval of buffer-sync, when buffer_sync is "interval".
    buffer_sync_interval: float = parse_duration(_BUFFER_SYNC_DEFAULT)
    username: Optional[str] = setting(_secret, None, aliases=("http-user",), doc=(
        "Credentials of the relay on this backend: they replace the client's (its u "
        "and p parameters and Authorization header) on every request to this output. "
        "Either username and password (sent as HTTP Basic auth), or token."))
    password: Optional[str] = setting(_secret, None, aliases=("http-pass",), repr=False,
                                      doc="The password of username.")
    token: Optional[str] = setting(_secret, None, repr=False, doc=(
        'An API token, sent as "Authorization: Token <token>", instead of username '
        "and password. A v2 output without one sends the client's own credentials: "
        "a 2.x client's token as it sent it, and for a 1.x client its password, "
        "from p= or Basic auth, as the token."))
    ca_file: Optional[str] = setting(_ca_file, None, doc=(
        "CA certificates (PEM) trusted for an https location, e.g. a private CA "
        "(default: the system's CA store)."))
    filters: Tuple["FilterConfig", ...] = ()  # the [[filter]] tables naming this output
    api: str = setting(_api, "v1", doc=(
        'The write API the backend speaks: "v1" (InfluxDB 1.x: /write, db and rp) or '
        '"v2" (InfluxDB 2.x and 3.x: /api/v2/write, org and bucket). See the v2 '
        "example below for the keys only a \"v2\" output has."))
    org: Optional[str] = setting(_optional_string, None, doc=(
        "Organization sent with every write (default: a 2.x client's own org; 1.x "
        "writes then carry none, which InfluxDB OSS 2.x refuses: set it for OSS 2.x)."))
    bucket: Optional[str] = setting(_optional_string, None, doc=(
        "Write every point to this bucket (default: as mapped above)."))
    coalesce: bool = setting(_bool, True, doc=(
        "Merge concurrent small writes (under 64 KB, line protocol) that share a "
        "database, retention policy, precision and credentials into one request to "
        "this backend, while a request of theirs is in flight. Each client still gets "
        "its own answer: if the backend refuses a merged request (a 4xx), each write "
        "is sent again alone, so one client's bad data never fails another's write. "
        "Real InfluxDB pays per request: against two influxd 1.6, 16 clients stored "
        "1.2x (10-line writes) to 1.6x (100-line writes) the points per second with "
        "it, and a backend slower than the other fell behind far less; against "
        "near-free backends it changes nothing (README, Performance). Set false to "
        "send each write as its own request."))
    max_in_flight_mb: int = setting(_integer(1, MAX_BYTES // 1024 ** 2), 64, doc=(
        "Bytes of writes (in MB) in flight to this backend at once, and with them "
        "4 x pool-size requests: past either, a write is not sent to it but counts as "
        "failed for it (buffered if it has a buffer, else missed), so a backend that "
        "accepts connections and never answers cannot take the relay's memory."))
    coalesce_max_kb: int = setting(_integer(1, MAX_BYTES // 1024), 1024, doc=(
        "Largest merged request, in KB."))

    @property
    def base_url(self):
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "%s://%s:%d" % (self.scheme, host, self.port)


def _http_location(at, location, endpoints):
    """(scheme, host, port, Endpoints) from an output's location and its
    ``endpoints`` (None when the key is absent).

    Without ``endpoints``, a location whose path ends in "/write" is the full
    write URL of the original influxdb-relay (or, ending in "/api/v2/write",
    of an InfluxDB 2.x backend); any other location is a base URL whose path
    prefixes every endpoint.
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
    paths = dataclasses.asdict(endpoints or Endpoints())
    resolved = Endpoints(**{name: prefix + p for name, p in paths.items()})
    return parts.scheme, host, port, resolved


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _http_output(at, table):
    values = _read_table(at, table, HTTPOutputConfig)
    values["scheme"], values["host"], values["port"], values["endpoints"] = _http_location(
        at.key("location"), values["location"], values.get("endpoints"))
    if values.get("buffer_path") and not values.get("buffer_size_mb"):
        raise at.key("buffer-path").error(
            "a disk buffer needs buffer-size-mb (its size limit) greater than 0"
        )
    if values.get("api", "v1") == "v1":
        for key in ("org", "bucket"):
            if key in values:
                raise at.key(key).error('is only used with api = "v2"')
    if values.get("buffer_sync") == "interval":
        values["buffer_sync_interval"] = parse_duration(table["buffer-sync"])
    _check_credentials(at, values)
    if values.get("ca_file") and values["scheme"] != "https":
        raise at.key("ca-file").error("is only used with an https location, not %s"
                                      % _show(values["location"]))
    return HTTPOutputConfig(**values)


def _check_credentials(at, values):
    """username and password go together; token excludes them."""
    if values.get("token") and ("username" in values or "password" in values):
        raise at.key("token").error("use either token or username and password, not both")
    if "username" in values and "password" not in values:
        raise at.key("password").error("is required with username")
    if "password" in values and "username" not in values:
        raise at.key("username").error("is required with password")


@dataclass(frozen=True)
class HTTPListenerConfig:
    """An ``[[http]]`` table: one HTTP listener and its outputs."""

    name: str = setting(_name, doc="Name used in logs and metrics (default: the bind-addr).")
    bind_addr: str = setting(_string, required=True, doc=(
        "TCP address to listen on (required)."))
    host: str                # from bind-addr; "" means every interface
    port: int
    outputs: Tuple[HTTPOutputConfig, ...] = setting(
        _tables(_http_output, "[[http.output]]", "output", non_empty=True), key="output", required=True,
        table=HTTPOutputConfig, doc=(
            'Backends (at least one). "location" is the backend\'s base URL; its path, if '
            "any, is put before each endpoint."))
    ssl_combined_pem: Optional[str] = setting(_tls_pem, None, doc=(
        "Certificate and private key in one PEM file: serve HTTPS (default: plain HTTP)."))
    default_retention_policy: Optional[str] = setting(_optional_string, None, doc=(
        "Retention policy added to writes that name none (default: none)."))
    max_body_size: int = setting(_byte_size, 25000000, doc=(
        'Largest request body accepted, in bytes or "512KB", "25MB", "1GiB" '
        "(1 MB = 1024 KB), compressed and decoded. The default, 25000000 bytes, is "
        "InfluxDB's own ([http] max-body-size)."))
    read_timeout: float = setting(_positive_duration, "30s", doc=(
        "How long a connection may stay idle waiting for a request, and how long a "
        "request (its line, headers and body) may take to arrive once it begins; "
        "a client that trickles bytes slower than that gets 408 and is closed."))
    default_ping_response: int = setting(_integer(200, 599), 204, doc=(
        "HTTP status of GET /ping (200 to 599); ?verbose=true always answers 200."))
    health_timeout_ms: int = setting(_integer(1, int(MAX_DURATION * 1000)), 10000, doc=(
        "GET /health pings every output's ping endpoint and waits this long, in ms."))
    rate_limit: float = setting(_rate, 0, doc=(
        "Write requests per second accepted (/write, /api/v1/prom/write), a token "
        "bucket per listener; over it the client gets 429 with Retry-After (0: no limit)."))
    burst_limit: Optional[int] = setting(_integer(1, MAX_TOKENS), None, doc=(
        "Requests accepted at once above the rate (needs rate-limit; default: the "
        "rate rounded up, at least 1)."))
    admin_enabled: bool = setting(_bool, False, doc=(
        "Serve POST /admin (a query such as CREATE DATABASE sent to every output's "
        "query endpoint) and POST /admin/flush (empties retry buffers). Off: both "
        "answer 404."))
    admin_token: Optional[str] = setting(_secret, None, repr=False, doc=(
        "With admin-enabled: /admin and /admin/flush require the header "
        '"Authorization: Bearer <admin-token>" (default: no token required).'))
    repair: str = setting(_choice("off", "auto"), "off", doc=(
        'With "auto", the relay copies back by itself what an output missed (the gap '
        "ledger), from a peer output that has it, once that output is up and its backlog "
        'is delivered. "off": only when asked (POST /admin/repair, influx-relay repair).'))
    repair_rate_limit: float = setting(_rate, 20000, doc=(
        "Points per second a repair copies at most (both automatic and asked for), so "
        "that queries on the peer it reads from are not starved (0: no limit)."))
    health_cache_ms: int = setting(_integer(0, int(MAX_DURATION * 1000)), 1000, doc=(
        "GET /health/<output> reuses a ping answer this recent, in ms, so that a load "
        "balancer checking every second does not double the ping traffic."))
    query_enabled: bool = setting(_bool, False, doc=(
        "Serve GET|POST /query (and /api/v2/query, /api/v1/prom/read): each query goes "
        "to one ready output (up, no backlog, no gap), so a dashboard never reads a "
        "replica that lags. Statements that change data or schema are refused (use "
        "/admin)."))
    query_order: Tuple[str, ...] = setting(_output_names, [], doc=(
        "The outputs queries try first, in order (default: the order of the outputs); "
        "outputs not named come after, in their order."))
    query_fallback: str = setting(_choice("least-lagging", "refuse"), "least-lagging", doc=(
        'When no output is ready: "least-lagging" asks the up output with the smallest '
        'backlog and gap, and says so in X-Relay-Stale; "refuse" answers 503.'))


def _http_listener(at, table):
    values = _read_table(at, table, HTTPListenerConfig)
    values["host"], values["port"] = _address(at.key("bind-addr"), values["bind_addr"],
                                              listen=True)
    values.setdefault("name", values["bind_addr"])
    rate = values.get("rate_limit", 0.0)
    if "burst_limit" in values and not rate:
        raise at.key("burst-limit").error("needs rate-limit (greater than 0)")
    values.setdefault("burst_limit", max(1, math.ceil(rate)))
    if values.get("admin_token") and not values.get("admin_enabled"):
        raise at.key("admin-token").error("is set but admin-enabled is not true")
    names = [o.name for o in values["outputs"]]
    for i, name in enumerate(values.get("query_order", ())):
        if name not in names:
            raise at.key("query-order").index(i).error(
                "%s is not an output of this listener (%s)" % (_show(name), _hint(name, names)))
    return HTTPListenerConfig(**values)


@dataclass(frozen=True)
class UDPOutputConfig:
    """A ``[[udp.output]]`` table: one backend of a UDP listener."""

    name: str = setting(_name, required=True, doc=(
        "Name used in logs and metrics (required, unique within this listener)."))
    location: str = setting(_string, required=True, doc=(
        "host:port of the backend's UDP listener (required). A host name is "
        "resolved at start; while it does not resolve, what this output is sent is "
        "dropped (counted in influx_relay_udp_dropped) and it is resolved again, at "
        "most every 10s."))
    host: str                # from location
    port: int
    mtu: int = setting(_integer(64, 65507), 1024, doc="Largest packet sent, in bytes (64 to 65507).")


def _udp_output(at, table):
    values = _read_table(at, table, UDPOutputConfig)
    values["host"], values["port"] = _address(at.key("location"), values["location"],
                                              listen=False)
    return UDPOutputConfig(**values)


@dataclass(frozen=True)
class UDPListenerConfig:
    """A ``[[udp]]`` table: one UDP listener and its outputs."""

    name: str = setting(_name, doc="Name used in logs and metrics (default: the bind-addr).")
    bind_addr: str = setting(_string, required=True, doc="UDP address to listen on (required).")
    host: str                # from bind-addr
    port: int
    outputs: Tuple[UDPOutputConfig, ...] = setting(
        _tables(_udp_output, "[[udp.output]]", "output", non_empty=True), key="output", required=True,
        table=UDPOutputConfig, doc=(
            'Backends (at least one; an inline "output = [...]" array works too).'))
    read_buffer: int = setting(_integer(0, MAX_C_INT), 0, doc=(
        "Socket receive buffer (SO_RCVBUF) in bytes, up to 2147483647 (0: the OS "
        "default, net.core.rmem_default, about 208 KB on Linux: a few milliseconds of "
        "datagrams at 30k/s, so a busy machine drops some). 4194304 (4 MB) forwarded "
        "30k datagrams/s without loss in bench/udp_bench.sh; the OS caps it at "
        "net.core.rmem_max, which the relay warns about."))
    precision: str = setting(_precision, "n", doc=(
        "Precision of the timestamps in received points: n, ns, u, us, ms, s, m or h."))


def _udp_listener(at, table):
    values = _read_table(at, table, UDPListenerConfig)
    values["host"], values["port"] = _address(at.key("bind-addr"), values["bind_addr"],
                                              listen=True)
    values.setdefault("name", values["bind_addr"])
    return UDPListenerConfig(**values)


@dataclass(frozen=True)
class FilterConfig:
    """A ``[[filter]]`` table: which points its outputs take.

    A point goes to an output only if its measurement matches (anywhere, like
    Go's ``MatchString``: anchor with ^ and $) every measurement expression of
    every filter naming the output, and each of its tag keys matches every tag
    expression of those filters.
    """

    name: str = setting(_name, doc='Name used in logs (default: its position, e.g. "filter[0]").')
    outputs: Tuple[str, ...] = setting(_names, required=True, doc=(
        "Names of the HTTP outputs it applies to, in any listener (required)."))
    tag_expression: Optional[re.Pattern] = setting(_regex, None, doc=(
        "Regular expression every tag key of a point must match."))
    measurement_expression: Optional[re.Pattern] = setting(_regex, None, doc=(
        "Regular expression the measurement of a point must match."))


def _filter(at, table):
    values = _read_table(at, table, FilterConfig)
    if "tag_expression" not in values and "measurement_expression" not in values:
        raise at.error("a filter needs tag-expression or measurement-expression")
    values.setdefault("name", at.path)
    return FilterConfig(**values)


@dataclass(frozen=True)
class Config:
    """The whole file."""

    path: str
    http: Tuple[HTTPListenerConfig, ...] = setting(
        _tables(_http_listener, "[[http]]", "listener"), [], table=HTTPListenerConfig, doc=(
            "HTTP listeners: writes are sent to every output. Clients write with the "
            "InfluxDB 1.x API (POST /write?db=..) or the 2.x one (POST /api/v2/write?org=.."
            '&bucket=..); each output speaks either (see "api" below), and the relay '
            "translates between them."))
    udp: Tuple[UDPListenerConfig, ...] = setting(
        _tables(_udp_listener, "[[udp]]", "listener"), [], table=UDPListenerConfig, doc=(
            "UDP listeners: each packet of line protocol is sent to every output."))
    filter: Tuple[FilterConfig, ...] = setting(
        _tables(_filter, "[[filter]]", "filter"), [], table=FilterConfig, doc=(
            "Filters: which points an HTTP output takes. A point goes to an output only if "
            "its measurement matches every measurement-expression, and each of its tag "
            "keys matches every tag-expression, of the filters naming that output. "
            "Expressions are regular expressions matched anywhere in the name (anchor "
            "them with ^ and $). Filtering is per point: each output gets the lines it "
            "takes, and an output that takes none of a request's lines is not sent it. "
            "Prometheus remote writes (/api/v1/prom/write) are not filtered. (default: "
            "no filter, every output takes every point)"))
    shutdown_timeout: float = setting(_duration, "10s", doc=(
        "How long a stopping relay (SIGTERM, SIGINT) waits for requests in flight, "
        "then again for memory retry buffers to drain; what is still buffered in "
        "memory after that is lost, and logged with its point count."))
    workers: int = setting(_workers, 1, doc=(
        'Relay processes sharing the listening ports (SO_REUSEPORT), or "auto": one per '
        "CPU. Each client connection is served by one of them, so the order of its "
        "writes is kept; each keeps its own retry buffers (a worker-N directory in each "
        "buffer-path) and gap ledger (in state-dir), and /status, /health and /metrics "
        "answer for all of them. Needs fixed ports (no port 0). A change takes a "
        "restart."))
    state_dir: Optional[str] = setting(_state_dir, None, doc=(
        "A directory for what the relay remembers across restarts: the gap ledger "
        "(which points each output missed, to be repaired from a peer). Default: none, "
        "and the ledger is kept in memory only, lost at a restart. The packages set "
        "/var/lib/influxdb-relay."))


# ---------------------------------------------------------------------------
# Checks across tables

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


def _check_buffer_paths(at, listeners):
    """A disk buffer's directory belongs to one output: two outputs (in any
    listeners) with one buffer-path, however written, is an error naming both."""
    seen = {}
    for i, listener in enumerate(listeners):
        for j, o in enumerate(listener.outputs):
            if not o.buffer_path:
                continue
            here = at.key("http").index(i).key("output").index(j)
            real = os.path.realpath(o.buffer_path)
            if real in seen:
                other_at, other = seen[real]
                raise here.key("buffer-path").error(
                    "%s is also the buffer-path of output %s (%s): each output needs a "
                    "directory of its own" % (_show(o.buffer_path), _show(other.name),
                                              other_at.path))
            seen[real] = here, o


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
    at = _At(path)
    values = _read_table(at, doc, Config)
    if not values.get("http") and not values.get("udp"):
        raise ConfigError("%s: no [[http]] or [[udp]] listener is configured" % path)
    if values.get("filter"):
        values["http"] = _apply_filters(at, values["filter"], values.get("http", ()))
    _check_buffer_paths(at, values.get("http", ()))
    if values.get("workers", 1) > 1:
        for kind in ("http", "udp"):
            for i, listener in enumerate(values.get(kind, ())):
                if not listener.port:
                    raise at.key(kind).index(i).key("bind-addr").error(
                        "%s: workers share a listening port, so it cannot be 0"
                        % _show(listener.bind_addr))
    return Config(path=path, **values)
