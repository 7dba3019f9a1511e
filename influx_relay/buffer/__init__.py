"""Retry buffers: what an output's backend has not acknowledged yet, in order.

A buffer holds :class:`Entry` objects, oldest first. An entry is one write
(its endpoint, query string, credentials and body) for one backend. Its state
says whether it may be sent:

* ``PENDING``: a direct request with this write is still in flight to the
  backend; the entry waits in line so that later writes cannot overtake it,
  and becomes ``DONE`` or ``READY`` when that request ends;
* ``READY``: to be sent by the output's retry loop;
* ``DONE``: acknowledged, to be forgotten when it reaches the head.

Two implementations of :class:`RetryBuffer`: :class:`~.memory.MemoryBuffer`
(the seed's) and :class:`~.disk.DiskBuffer` (survives restarts). The output
(:mod:`..output`) uses only what the protocol declares.
"""

import time
from typing import Iterator, List, Optional, Protocol, Tuple

from gevent.event import Event

from ..errors import RelayError

PENDING = "pending"
READY = "ready"
DONE = "done"


class BufferFull(RelayError):
    """An entry that would take the buffer over its size limit."""


class Entry(object):
    """One write waiting for one backend."""

    __slots__ = ("key", "body", "size", "created", "state", "changed", "ref")

    def __init__(self, key, body, state=READY, created=None):
        self.key = key  # (endpoint, query, headers as a tuple of pairs)
        self.body = body
        self.size = len(body)
        self.created = time.time() if created is None else created
        self.state = state
        self.changed = None  # an Event, made only when someone waits on a PENDING entry
        self.ref = None  # where a disk buffer keeps it

    def settle(self, ok):
        """The direct request this entry stood for has ended."""
        self.state = DONE if ok else READY
        if self.changed is not None:
            self.changed.set()

    def wait(self, timeout=None):
        """Wait until a PENDING entry settles."""
        if self.state == PENDING:
            if self.changed is None:
                self.changed = Event()
            self.changed.wait(timeout)

    def __repr__(self):
        return "<Entry %s %d bytes>" % (self.state, self.size)


class RetryBuffer(Protocol):
    """What an output's retry loop needs of a buffer (Telegraf's models/buffer.go
    is the model). ``size`` and ``limit`` are bytes; ``len()`` counts entries."""

    #: Whether what :meth:`append` took survives a restart of the relay.
    durable: bool
    limit: int
    size: int

    def __len__(self) -> int: ...

    def __bool__(self) -> bool: ...

    def append(self, entries: List["Entry"]) -> None:
        """Add entries at the tail, all or none; :class:`BufferFull` if they do not fit."""

    def sync(self) -> None:
        """Make what was appended as durable as the buffer's policy says."""

    def head(self) -> Optional["Entry"]:
        """The oldest entry still to deliver (acknowledged ones are dropped), or None."""

    def batch(self, max_bytes: int) -> List["Entry"]:
        """The longest run of READY entries from the head with one key, within ``max_bytes``."""

    def body(self, entry: "Entry") -> bytes:
        """An entry's body (read back from disk if need be)."""

    def remove(self, entries: List["Entry"]) -> None:
        """Forget the first ``len(entries)`` entries: a batch delivered or dropped."""

    def oldest(self) -> Optional[float]:
        """When the head entry was made (seconds since the epoch), or None."""

    def clear(self) -> Tuple[int, int]:
        """Drop everything; ``(entries, bytes)`` dropped."""

    def entries(self) -> Iterator["Entry"]:
        """Every entry still held, oldest first."""

    def close(self) -> None: ...


def run_from(first, following, max_bytes):
    """The longest run of entries from ``first`` on that share its state and
    key, within ``max_bytes``; ``first`` is always in it, however large."""
    out = [first]
    size = first.size
    for entry in following:
        if entry.state != first.state or entry.key != first.key or size + entry.size > max_bytes:
            break
        out.append(entry)
        size += entry.size
    return out


def make_buffer(output, on_damaged=None) -> Optional[RetryBuffer]:
    """The buffer an HTTP output's config asks for, or None. ``on_damaged``: see
    :class:`~.disk.DiskBuffer` (a memory buffer has no records to damage)."""
    if output.buffer_path:
        from .disk import DiskBuffer

        return DiskBuffer(output, on_damaged=on_damaged)
    if output.buffer_size_mb > 0:
        from .memory import MemoryBuffer

        return MemoryBuffer(output.buffer_size_mb * 1024 * 1024)
    return None
