"""HTTP/1.1 framing, both ways, to RFC 9112's grammar: the relay's one codec.

The listeners' server (:mod:`.httpserver`) reads requests with it and the
backend client (:mod:`.httpclient`) reads responses with it: request and
status lines, header fields, Content-Length, chunked bodies. Nothing here does
I/O: callers hand it lines and bytes.

It is strict where leniency lets two parsers disagree about where a message
ends (the request-smuggling class of bugs, when a front proxy reads a request
one way and the relay another):

- a header name is a token, a header value holds no control character but
  HTAB (a bare CR, a LF or a NUL in a value is refused, never passed on);
- Content-Length is ASCII digits only (not "+5", "5 ", "٥" or "1_0"), and two
  of them must agree;
- a chunk size is hexadecimal digits only, optionally followed by chunk
  extensions (``;name=value``), and each chunk ends with its CRLF;
- Transfer-Encoding is "chunked" or the message is refused, and never comes
  with Content-Length (nor in HTTP/1.0);
- an HTTP/1.1 request names exactly one Host.

Lines end with CRLF; a lone LF is taken as a line end too (RFC 9112 §2.2 lets
a recipient do so), but a CR anywhere else is an error.
"""

import re
from http import HTTPStatus
from typing import Dict, List, NamedTuple, Optional, Tuple

MAX_REQUEST_LINE = 8192
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
#: A chunk larger than this is refused: no body the relay takes is near it.
MAX_CHUNK = 1 << 40
#: Largest response head (status line and headers) read from a backend.
MAX_RESPONSE_HEAD = 64 * 1024

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# A header is field-name ":" OWS field-value OWS, the value without any control
# byte but HTAB (see parse_field). In a response, any byte but CR and LF: InfluxDB's
# own X-Influxdb-Error header quotes the line it could not parse, NUL bytes and all
# (Go's net/http turns only CR and LF in a value into spaces), and that answer
# must reach the client.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e\x80-\xff]+) HTTP/([0-9])\.([0-9])")
_OTHER_VERSION = re.compile(_TOKEN + rb" [\x21-\x7e\x80-\xff]+ ((?i:http)/[\x21-\x7e]*)")
_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_DIGITS = re.compile(r"[0-9]{1,18}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?")
_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")
_NAME = re.compile(_TOKEN.decode())


class ProtocolError(ValueError):
    """A message that breaks the grammar: refused with ``status`` (400 unless said)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def _shown(data, limit=100):
    return data[:limit].decode("latin-1")


def line_of(raw):
    """A head line without its line end: ``raw`` ends with LF (and maybe a CR before it)."""
    line = raw[:-2] if raw[-2:] == b"\r\n" else raw[:-1]
    if b"\r" in line:
        raise ProtocolError("a bare CR in %r" % _shown(line))
    return line


#: The bytes of a token, and of a request header's value (no control byte but HTAB).
_TCHARS = bytes(b for b in range(256) if re.fullmatch(_TOKEN, bytes([b])))
_VCHARS = bytes([9] + list(range(0x20, 0x7F)) + list(range(0x80, 0x100)))


def parse_field(line, strict=True):
    """``(name in lower case, value)`` of a header (or trailer) line, as text.
    ``strict``: the value holds no control byte but HTAB (a request's); else
    any byte but CR and LF (a response's: see _RESPONSE_FIELD)."""
    name, sep, value = line.partition(b":")
    # translate(None, allowed) leaves what is not allowed: nothing, if all is.
    if not sep or not name or name.translate(None, _TCHARS) or (
            strict and value.translate(None, _VCHARS)):
        raise ProtocolError("malformed header line %r" % _shown(line))
    return name.decode("ascii").lower(), value.strip(b" \t").decode("latin-1")


class RequestHead(NamedTuple):
    """A request head, checked: ``headers`` maps lower-case names to values
    (repeated headers joined with ", "); ``length`` is the Content-Length (0
    when absent); ``chunked`` whether the body is chunked; ``keep_alive``
    whether the connection may serve another request after this one."""

    method: str
    target: str
    version: str
    headers: Dict[str, str]
    length: int
    chunked: bool
    keep_alive: bool


def parse_request_head(lines: List[bytes]) -> Optional[RequestHead]:
    """Check and read a request's lines (request line first, no line ends)."""
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        if not lines[0].strip():
            return None  # a stray line end between requests
        m = _OTHER_VERSION.fullmatch(lines[0])
        if m is not None:
            raise ProtocolError("unsupported HTTP version %r" % _shown(m.group(1), 20))
        raise ProtocolError("malformed request line %r" % _shown(lines[0], 200))
    method, target, major, minor = m.groups()
    if major != b"1":
        raise ProtocolError("unsupported HTTP version %r" % ("HTTP/%s.%s" % (
            major.decode(), minor.decode())), 505)
    version = "HTTP/1.0" if minor == b"0" else "HTTP/1.1"
    if len(lines) > MAX_HEADERS + 1:
        raise ProtocolError("too many headers (limit %d)" % MAX_HEADERS)
    headers, lengths, hosts = _fields(lines)
    return _framing(method.decode("ascii"), target.decode("latin-1"), version, headers,
                    lengths, hosts)


def _fields(lines, strict=True):
    headers = {}
    lengths = []
    hosts = 0
    for line in lines[1:]:
        name, value = parse_field(line, strict)
        if "_" in name:
            continue  # as nginx does: "Content_Length" must not pass for anything
        if name == "content-length":
            lengths.append(value)
        elif name == "host":
            hosts += 1
        if name in headers:
            headers[name] += ", " + value
        else:
            headers[name] = value
    return headers, lengths, hosts


def _framing(method, target, version, headers, lengths, hosts):
    te = headers.get("transfer-encoding")
    chunked = te is not None
    if chunked:
        if te.lower() != "chunked":
            raise ProtocolError("unsupported Transfer-Encoding %r" % te[:40])
        if lengths:
            raise ProtocolError("a request with both Content-Length and Transfer-Encoding")
        if version == "HTTP/1.0":
            raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
    length = content_length(lengths) if lengths else 0
    if version == "HTTP/1.1" and hosts != 1:
        raise ProtocolError("missing Host header" if not hosts else "more than one Host header")
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    return RequestHead(method, target, version, headers, length, chunked, keep_alive)


def content_length(values: List[str]) -> int:
    """The length that every Content-Length value gives (ASCII digits only)."""
    for value in values:
        if _DIGITS.fullmatch(value) is None:
            raise ProtocolError("invalid Content-Length %r" % value[:40])
    if any(v != values[0] for v in values):
        raise ProtocolError("conflicting Content-Length headers")
    return int(values[0])


class ResponseHead(NamedTuple):
    """A response head: ``status``, ``headers`` (lower-case names), and its
    framing: ``length`` (None when not given), ``chunked``, ``keep_alive``."""

    status: int
    headers: Dict[str, str]
    length: Optional[int]
    chunked: bool
    keep_alive: bool


def parse_response_head(lines: List[bytes]) -> ResponseHead:
    """Check and read a response head (its lines, as :func:`split_head` gives them)."""
    m = _STATUS_LINE.fullmatch(lines[0])
    if m is None:
        raise ProtocolError("not an HTTP/1.x status line: %r" % _shown(lines[0], 60))
    minor, code = m.groups()
    headers, lengths, _ = _fields(lines, strict=False)
    te = headers.get("transfer-encoding")
    chunked = te is not None
    if chunked:
        if te.lower() != "chunked":
            raise ProtocolError("unsupported Transfer-Encoding %r" % te[:40])
        if lengths:
            raise ProtocolError("a response with both Content-Length and Transfer-Encoding")
    length = content_length(lengths) if lengths else None
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if minor != b"0" else "keep-alive" in connection
    return ResponseHead(int(code), headers, length, chunked, keep_alive)


def split_head(data: bytes, start: int = 0) -> Optional[Tuple[List[bytes], int]]:
    """``(the head's lines, without line ends; where what follows starts)`` of
    the head beginning at ``start``, or None if its end has not come yet. A head
    of CRLF lines only (the common case) is split without a loop of ours."""
    i = data.find(b"\r\n\r\n", start)
    if i >= 0:
        head = data[start:i]
        crlf = head.count(b"\r\n")
        if head.count(b"\n") == crlf == head.count(b"\r"):
            return head.split(b"\r\n"), i + 4
    end = head_end(data, start)
    if end is None:
        return None
    return [line_of(raw + b"\n") for raw in data[start:end[0]].split(b"\n")], end[1]


def head_end(data: bytes, start: int = 0) -> Optional[Tuple[int, int]]:
    """``(end of the head, start of what follows)`` in ``data``, or None if the
    blank line that ends it has not come yet (CRLF CRLF, or LF LF)."""
    i = data.find(b"\n", start)
    while i >= 0:
        j = i + 1
        if data[j:j + 2] == b"\r\n":
            return i, j + 2
        if data[j:j + 1] == b"\n":
            return i, j + 1
        i = data.find(b"\n", j)
    return None


class ChunkedDecoder(object):
    """A chunked body, decoded as its bytes come: :meth:`feed` them in, get the
    data out. ``done`` once the last chunk, the trailers and the blank line
    that ends them have been read; ``trailers`` holds the trailer fields
    (checked as a response's fields are with ``response``)."""

    __slots__ = ("done", "trailers", "_left", "_state", "_line", "_strict")

    def __init__(self, response=False):
        self._strict = not response
        self.done = False
        self.trailers = {}
        self._left = 0
        self._state = "size"  # size, data, crlf, trailer
        self._line = b""

    def feed(self, data: bytes) -> Tuple[List[bytes], int]:
        """``(pieces of body data, bytes of data used)``. What is left of
        ``data`` once ``done`` is the next message's."""
        pieces = []
        pos = 0
        n = len(data)
        while pos < n and not self.done:
            state = self._state
            if state == "data":
                take = min(self._left, n - pos)
                pieces.append(data[pos:pos + take])
                pos += take
                self._left -= take
                if not self._left:
                    self._state = "crlf"
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._line += data[pos:]
                limit = 2 if state == "crlf" else MAX_HEADER_LINE
                if len(self._line) > limit:
                    raise ProtocolError("invalid chunked body: %s" % (
                        "no CRLF after a chunk" if state == "crlf" else "line too long"))
                return pieces, n
            raw = self._line + data[pos:nl + 1]
            self._line = b""
            pos = nl + 1
            if len(raw) > MAX_HEADER_LINE + 2:
                raise ProtocolError("invalid chunked body: line too long")
            try:
                line = line_of(raw)
            except ProtocolError as e:
                raise ProtocolError("invalid chunked body: %s" % e)
            if state == "crlf":
                if line:
                    raise ProtocolError("invalid chunked body: no CRLF after a chunk")
                self._state = "size"
            elif state == "size":
                m = _CHUNK_SIZE.fullmatch(line)
                if m is None:
                    raise ProtocolError("invalid chunked body: bad chunk size %r" % _shown(line, 20))
                size = int(m.group(1), 16)
                if size > MAX_CHUNK:
                    raise ProtocolError("invalid chunked body: chunk size too large")
                if size:
                    self._left = size
                    self._state = "data"
                else:
                    self._state = "trailer"
            elif not line:  # the blank line after the trailers
                self.done = True
            else:
                if len(self.trailers) >= MAX_HEADERS:
                    raise ProtocolError("invalid chunked body: too many trailers")
                try:
                    name, value = parse_field(line, self._strict)
                except ProtocolError:
                    raise ProtocolError("invalid chunked body: malformed trailer %r" % _shown(line))
                self.trailers[name] = value
        return pieces, pos


def status_line(code):
    """``"204 No Content"``: the code and its reason phrase."""
    try:
        return "%d %s" % (code, HTTPStatus(code).phrase)
    except ValueError:
        return "%d Unknown" % code


_checked: dict = {}  # (name, value) pairs found fine: most repeat on every request


def check_field(name: str, value: str) -> None:
    """Refuse (ValueError) a header that would not go out as one header: a
    name that is no token, a value with a CR, LF or other control byte."""
    if (name, value) in _checked:
        return
    if _NAME.fullmatch(name) is None:
        raise ValueError("invalid header name %r" % name[:40])
    if _VALUE.fullmatch(value) is None:
        raise ValueError("header %s: value holds a control character" % name)
    if len(_checked) >= 4096:
        _checked.clear()
    _checked[(name, value)] = True


#: What a request target may hold as it is; anything else is percent-encoded.
_UNSAFE = re.compile(r"[^\x21-\x7e]")


def _percent(match):
    # The server read the target as latin-1: these are the client's bytes.
    char = match.group()
    raw = char.encode("latin-1") if char <= "\xff" else char.encode("utf-8")
    return "".join("%%%02X" % b for b in raw)


def safe_target(target):
    """``target`` with spaces, control bytes and non-ASCII percent-encoded."""
    if _UNSAFE.search(target):
        return _UNSAFE.sub(_percent, target)
    return target
