"""Configuration: TOML in, frozen dataclasses out.

``load(path)`` parses and validates the whole file once; nothing else in the
relay reads the TOML dict. Every error is a :class:`ConfigError` whose text is
one line naming the file, the key path and the bad value.

INTERFACE ONLY (to be implemented): the dataclasses below are the contract the
rest of the relay codes against.
"""

from dataclasses import dataclass, field
from typing import Optional, Tuple

from .errors import ConfigError  # noqa: F401

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BODY_SIZE = 25 * 1024 * 1024
DEFAULT_POOL_SIZE = 64
DEFAULT_MTU = 1024
DEFAULT_MAX_BATCH_KB = 512
DEFAULT_MAX_DELAY_INTERVAL = 10.0
PRECISIONS = ("n", "ns", "u", "us", "ms", "s", "m", "h")


@dataclass(frozen=True)
class Endpoints:
    """Paths on a backend, each starting with "/"."""

    write: str = "/write"
    ping: str = "/ping"
    query: str = "/query"
    write_prom: str = "/api/v1/prom/write"


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
    read_timeout: float = 30.0                   # seconds a client may stall


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
class Config:
    path: str
    http: Tuple[HTTPListener, ...] = ()
    udp: Tuple[UDPListener, ...] = ()


def load(path):
    raise NotImplementedError


def loads(text, path="<string>"):
    raise NotImplementedError
