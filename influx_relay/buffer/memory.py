"""The in-memory retry buffer: a deque bounded by the bytes it holds."""

from collections import deque

from . import DONE, BufferFull, run_from


class MemoryBuffer(object):
    """A :class:`~influx_relay.buffer.RetryBuffer` in memory, lost at exit."""

    durable = False

    def __init__(self, limit):
        self.limit = limit
        self._entries = deque()
        self.size = 0

    def __len__(self):
        return len(self._entries)

    def __bool__(self):
        return bool(self._entries)

    def append(self, entries):
        """Add entries at the tail, all or none; :class:`BufferFull` if they don't fit."""
        size = sum(e.size for e in entries)
        if self.size + size > self.limit:
            raise BufferFull(
                "buffer full (%d of %d bytes used, %d more asked)" % (self.size, self.limit, size)
            )
        self._entries.extend(entries)
        self.size += size

    def sync(self):
        """Nothing to make durable."""

    def head(self):
        """The oldest entry still to deliver (DONE ones are dropped), or None."""
        entries = self._entries
        while entries and entries[0].state == DONE:
            self.size -= entries.popleft().size
        return entries[0] if entries else None

    def batch(self, max_bytes):
        """The longest run of READY entries from the head with one key, within ``max_bytes``."""
        return run_from(self.head(), self._after_head(), max_bytes)

    def _after_head(self):
        it = iter(self._entries)
        next(it)
        return it

    def body(self, entry):
        return entry.body

    def remove(self, entries):
        """Forget the first ``len(entries)`` entries (a batch that was delivered or dropped)."""
        for entry in entries:
            # A flush may have emptied the buffer while the batch was out.
            if self._entries and self._entries[0] is entry:
                self.size -= self._entries.popleft().size

    def entries(self):
        return iter(list(self._entries))

    def oldest(self):
        head = self.head()
        return head.created if head is not None else None

    def clear(self):
        """Drop everything; return (entries, bytes) dropped."""
        n, size = len(self._entries), self.size
        self._entries.clear()
        self.size = 0
        return n, size

    def close(self):
        pass
