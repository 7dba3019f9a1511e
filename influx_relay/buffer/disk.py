"""The disk retry buffer: a write-ahead log with a cursor, one directory per output.

It keeps the promise that a write a client got 2xx for reaches every backend
even if the relay is killed at any moment: :meth:`DiskBuffer.append` has the
record in the file (``os.pwrite``: in the page cache, so it survives SIGKILL)
before it returns, and :meth:`DiskBuffer.sync` makes it survive power loss too,
per the output's ``buffer-sync`` policy:

* ``"write"``: ``sync()`` fsyncs before returning (in gevent's threadpool, so
  the hub keeps running; concurrent callers share one fsync);
* an interval: a greenlet fsyncs every ``buffer_sync_interval`` seconds when
  something was written;
* ``"os"``: never; the kernel writes back when it likes.

Files in the directory (``buffer-path``, mode 0700; files 0600, since records
carry Authorization headers)::

    lock                  flock()ed while a relay uses the buffer
    cursor                where delivery stands (below)
    0000000000000001.seg  segments of records, appended in order; a new one
    0000000000000002.seg  at every start and when one reaches its maximum size

A record (little-endian), every one checkable on its own::

    magic    4 bytes  b"\\x89IRB"
    crc      uint32   CRC-32 of everything after this field
    key_len  uint32
    body_len uint32
    created  float64  seconds since the epoch
    key      key_len bytes: JSON [endpoint, query, [[header, value], ...]]
    body     body_len bytes

The cursor file (24 bytes, replaced atomically: write ``cursor.tmp``, rename)::

    magic b"\\x89IRC", segment id uint64, offset uint64, crc uint32 of the two

It names the first record not yet delivered. Segments wholly before it are
deleted. It is written when delivery moves the head (at most every
``CURSOR_EVERY`` seconds, and whenever a segment is finished or the buffer
drains) and fsynced only at close (unless the policy is "os"): an old or
unreadable cursor only means that records are delivered twice, which is
harmless (a replayed point overwrites itself).

``size`` and ``limit`` count bytes on disk: whole records, headers and keys
included, so ``buffer-size-mb`` bounds the disk space used.

On open, every record from the cursor on is counted and checked once (a bad
one is logged), then streamed back lazily, oldest first, before anything
appended later. A record that fails its check (bad magic, bad length, CRC
mismatch: a torn write or a bad disk) is logged and skipped; reading resumes
at the next good record of the segment if there is one (found by its magic
and CRC), or at the next segment.

Memory stays bounded however large the backlog: the buffer keeps a window of
entries from the head (what the retry loop has looked at, at most one batch,
plus up to ``WINDOW_LIVE`` entries appended while it was caught up, whose
bodies are dropped once written), the PENDING or DONE entries it has not read
back yet, and one read-ahead chunk.
"""

import bisect
import errno
import fcntl
import json
import logging
import os
import re
import struct
import time
import zlib
from collections import deque

import gevent
from gevent.event import Event

from ..errors import RelayError
from . import DONE, READY, BufferFull, Entry, run_from

log = logging.getLogger(__name__)

MAGIC = b"\x89IRB"
HEADER = struct.Struct("<4sIIId")  # magic, crc, key_len, body_len, created
CURSOR_MAGIC = b"\x89IRC"
CURSOR = struct.Struct("<4sQQI")  # magic, segment, offset, crc

MAX_KEY = 64 * 1024  # a longer key length field is corruption
MAX_SEGMENT = 64 * 1024 * 1024
CHUNK = 1024 * 1024  # read-ahead
WINDOW_LIVE = 1024  # entries appended while caught up that stay in memory
CURSOR_EVERY = 0.2  # seconds between two cursor writes while delivering

_SEGMENT_NAME = re.compile(r"^(\d{16})\.seg$")


class _Corrupt(Exception):
    """A record that fails its check (the reason is the message)."""


class DiskBuffer(object):
    """A :class:`~influx_relay.buffer.RetryBuffer` on disk (see the module's docstring)."""

    durable = True

    def __init__(self, output, segment_size=None, on_damaged=None):
        """``on_damaged(before, after, nbytes)``, if given, hears of each damaged
        record skipped: the ``created`` times of the good records around it
        (None where there is none) and how many bytes were lost."""
        self.name = output.name
        self.on_damaged = on_damaged
        self._last_created = None  # of the last good record read
        self.path = output.buffer_path
        self.limit = output.buffer_size_mb * 1024 * 1024
        self.segment_size = segment_size or max(1, min(MAX_SEGMENT, self.limit // 4))
        self.policy = output.buffer_sync  # "write", "os" or "interval", parsed by config
        self.interval = output.buffer_sync_interval

        self.size = 0  # bytes of the records not yet delivered, on disk
        self._count = 0  # records not yet delivered
        self._window = deque()  # entries from the head, in order
        self._pinned = {}  # (segment, offset): a non-READY entry not in the window yet
        self._seg_ids = []  # sorted, from the cursor's segment to the write segment
        self._seg_end = {}  # segment id: bytes in it
        self._rfds = {}  # segment id: fd open for reading
        self._chunk = self._chunk_seg = None  # read-ahead: a memoryview, its segment
        self._chunk_off = 0
        self._keys = {}  # key bytes: key tuple, so replayed entries share keys
        self._last_key = self._last_key_bytes = None
        self._reported = set()  # (segment, offset) of bad records already logged

        # fsync bookkeeping: appends counted, fds to fsync, fds to close after it.
        self._written = self._synced = 0
        self._dirty = set()
        self._syncing = None  # an Event while an fsync runs
        self._syncing_fds = ()
        self._retired = set()
        self._dir_dirty = False
        self._stop = Event()
        self._flusher = None
        self._closed = False
        self._lock_fd = self._dir_fd = self._wfd = None
        self._wseg, self._wend = None, 0  # the segment appended to, its length
        self._rseg, self._roff = 0, 0  # where the next record to read into the window is
        self._cseg, self._coff = 0, 0  # the cursor: the head record
        self._cursor_saved = 0.0

        try:
            self._open()
        except OSError as e:
            self._close_fds()
            raise RelayError("output %s: cannot use buffer-path %s: %s" % (self.name, self.path, e))
        except RelayError:
            self._close_fds()
            raise
        if self.policy == "interval":
            self._flusher = gevent.spawn(self._flush_every, self.interval)

    # -- opening -------------------------------------------------------------

    def _open(self):
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        self._lock_fd = os.open(self._file("lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RelayError(
                "output %s: buffer-path %s is in use by another relay process"
                % (self.name, self.path)
            )
        self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

        ids = sorted(int(m.group(1)) for m in map(_SEGMENT_NAME.match, os.listdir(self.path)) if m)
        cseg, coff = self._load_cursor(ids)
        for seg in ids:
            if seg < cseg:  # delivered; the cursor moved on before they were deleted
                self._unlink(seg)
            else:
                self._seg_ids.append(seg)
                self._seg_end[seg] = os.stat(self._segment(seg)).st_size
        if self._seg_ids and self._seg_ids[0] > cseg:
            cseg, coff = self._seg_ids[0], 0
        self._rseg, self._roff = cseg, coff
        self._scan()

        # New records go to a new segment, never after a possibly torn tail.
        wseg = max(self._seg_ids + [cseg]) + 1
        self._new_segment(wseg)
        if self._count == 0:
            # Nothing to replay: start afresh (what is left is garbage, already logged).
            self._rseg, self._roff = wseg, 0
        self._cseg, self._coff = self._rseg, self._roff
        self._save_cursor()
        self._forget_before(self._cseg)
        if self._count:
            log.warning("output %s: %d buffered write(s) (%d bytes) to replay from %s",
                        self.name, self._count, self.size, self.path)

    def _load_cursor(self, ids):
        """(segment, offset) of the first record not delivered, per the cursor file."""
        first = (ids[0], 0) if ids else (0, 0)
        try:
            with open(self._file("cursor"), "rb") as f:
                data = f.read(CURSOR.size + 1)
        except FileNotFoundError:
            return first
        if len(data) == CURSOR.size:
            magic, seg, off, crc = CURSOR.unpack(data)
            if magic == CURSOR_MAGIC and crc == zlib.crc32(data[4:20]):
                return seg, off
        log.warning("output %s: %s is unreadable; replaying every buffered record "
                    "(some may be delivered twice)", self.name, self._file("cursor"))
        return first

    def _scan(self):
        """Count and check the records from the read position to the end."""
        seg, off = self._rseg, self._roff
        if seg not in self._seg_end:
            return
        while seg is not None:
            end = self._seg_end[seg]
            while off < end:
                off = self._scan_chunk(seg, off, end)
                if off >= end:
                    break
                try:
                    total, _, _, _ = self._parse(seg, off, end)
                except _Corrupt as e:
                    off = self._skip(seg, off, end, str(e))
                    continue
                self._count += 1
                self.size += total
                off += total
            seg, off = self._next_segment(seg), 0
        self._chunk = self._chunk_seg = None

    def _scan_chunk(self, seg, off, end):
        """Count the good records that lie wholly in one read-ahead chunk from ``off``.

        The fast path of :meth:`_scan` (what :meth:`_parse` does, inlined);
        returns where it stopped, for :meth:`_parse` to take over.
        """
        self._read(seg, off, HEADER.size)
        chunk, i = self._chunk, off - self._chunk_off
        stop = min(len(chunk), end - self._chunk_off)
        unpack, crc32, size = HEADER.unpack_from, zlib.crc32, HEADER.size
        count = nbytes = 0
        created = None
        while i + size <= stop:
            magic, crc, klen, blen, created = unpack(chunk, i)
            total = size + klen + blen
            if magic != MAGIC or klen > MAX_KEY or i + total > stop:
                break
            if crc32(chunk[i + 8:i + total]) != crc:
                break
            count += 1
            nbytes += total
            i += total
            self._last_created = created
        self._count += count
        self.size += nbytes
        return self._chunk_off + i

    # -- the interface of MemoryBuffer ---------------------------------------

    def __len__(self):
        return self._count

    def __bool__(self):
        return self._count > 0

    def append(self, entries):
        """Add entries at the tail, all or none; :class:`BufferFull` if they don't fit.

        When this returns, the records are in the file (safe from SIGKILL);
        :meth:`sync` makes them safe from power loss. Never yields.
        """
        if self._closed:
            raise BufferFull("buffer closed")
        if not entries:
            return
        records = [self._record(e) for e in entries]
        size = sum(len(r) for r in records)
        if self.size + size > self.limit:
            raise BufferFull(
                "buffer full (%d of %d bytes used, %d more asked)" % (self.size, self.limit, size)
            )
        seg, off = self._wseg, self._wend
        try:
            if off > 0 and off + size > self.segment_size:
                self._new_segment(seg + 1)
                seg, off = self._wseg, 0
            caught_up = self._rseg == seg and self._roff == off
            _pwrite_all(self._wfd, b"".join(records), off)
        except OSError as e:
            self._undo_write(off)
            raise BufferFull("cannot write %s: %s" % (self._segment(seg), e.strerror or e))
        self._wend = self._seg_end[seg] = off + size
        self._written += 1
        if self.policy != "os":
            self._dirty.add(self._wfd)
        self._count += len(entries)
        self.size += size
        for entry, record in zip(entries, records):
            entry.ref = (seg, off, len(record))
            entry.body = None  # body() reads it back
            if caught_up and len(self._window) < WINDOW_LIVE:
                self._window.append(entry)
                self._roff = off + len(record)
            else:
                caught_up = False
                if entry.state != READY:
                    self._pinned[(seg, off)] = entry
            off += len(record)

    def sync(self):
        """Make what :meth:`append` wrote survive power loss, if the policy is "write"."""
        if self.policy == "write":
            self._fsync()

    def head(self):
        """The oldest entry still to deliver (DONE ones are dropped), or None."""
        window = self._window
        while True:
            while window and window[0].state == DONE:
                self._pop_head()
            if window:
                return window[0]
            if self._load() is None:
                # Read to the end: whatever the counts say, nothing is left.
                self._count = self.size = 0
                self._move_cursor()
                return None

    def batch(self, max_bytes):
        """The longest run of READY entries from the head with one key, within ``max_bytes``."""
        return run_from(self.head(), self._after_head(), max_bytes)

    def _after_head(self):
        """The entries after the head: the window's, then more read from disk."""
        for i, entry in enumerate(self._window):
            if i:
                yield entry
        while True:
            entry = self._load()
            if entry is None:
                return
            yield entry

    def body(self, entry):
        if entry.body is not None:
            return entry.body
        seg, off, total = entry.ref
        if seg not in self._seg_end:
            raise RelayError("output %s: %s was deleted" % (self.name, self._segment(seg)))
        return bytes(self._read(seg, off + total - entry.size, entry.size))

    def remove(self, entries):
        """Forget the first ``len(entries)`` entries (a batch that was delivered or dropped)."""
        window = self._window
        moved = False
        for entry in entries:
            # A flush may have emptied the buffer while the batch was out.
            if window and window[0] is entry:
                self._pop_head(move_cursor=False)
                moved = True
        if moved:
            self._move_cursor()

    def oldest(self):
        head = self.head()
        return head.created if head is not None else None

    def entries(self):
        """Every entry still held, oldest first: the window's, then the rest read
        back from the files a record at a time (memory stays bounded)."""
        for entry in list(self._window):
            yield entry
        seg, off = self._rseg, self._roff
        while seg is not None and seg in self._seg_end:
            end = self._seg_end[seg]
            while off < end:
                try:
                    total, created, key, body = self._parse(seg, off, end)
                except _Corrupt as e:
                    off = self._skip(seg, off, end, str(e))
                    continue
                entry = self._pinned.get((seg, off))
                if entry is None:
                    entry = Entry(self._key(key), bytes(body), READY, created)
                yield entry
                off += total
            seg, off = self._next_segment(seg), 0

    def clear(self):
        """Drop everything; return (entries, bytes) dropped."""
        n, size = self._count, self.size
        old = list(self._seg_ids)
        self._window.clear()
        self._pinned.clear()
        self._count = self.size = 0
        self._new_segment(self._wseg + 1)
        self._rseg, self._roff = self._wseg, 0
        self._move_cursor(force=True)
        for seg in old:
            self._drop_segment(seg)
        return n, size

    def close(self):
        """Persist the cursor, fsync (unless the policy is "os"), release the directory."""
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            self._stop.set()
            self._flusher.join()
            self._flusher = None
        if self.policy != "os":
            self._fsync()
        self._save_cursor(fsync=self.policy != "os")
        self._close_fds()

    # -- reading -------------------------------------------------------------

    def _load(self):
        """Read the next record into the window; its entry, or None at the end."""
        while True:
            seg, off = self._rseg, self._roff
            end = self._seg_end[seg]
            if off >= end:
                nxt = self._next_segment(seg)
                if nxt is None:
                    return None
                self._rseg, self._roff = nxt, 0
                continue
            try:
                total, created, key, body = self._parse(seg, off, end)
            except _Corrupt as e:
                self._roff = self._skip(seg, off, end, str(e))
                continue
            self._roff = off + total
            entry = self._pinned.pop((seg, off), None)
            if entry is None:
                entry = Entry(self._key(key), bytes(body), READY, created)
            entry.ref = (seg, off, total)
            self._window.append(entry)
            return entry

    def _parse(self, seg, off, end):
        """(total length, created, key bytes, body) of the record at ``off``.

        Raises :class:`_Corrupt` if it fails its check.
        """
        view = self._read(seg, off, HEADER.size)
        if len(view) < HEADER.size:
            raise _Corrupt("truncated record header")
        magic, crc, klen, blen, created = HEADER.unpack(view)
        if magic != MAGIC:
            raise _Corrupt("bad magic")
        total = HEADER.size + klen + blen
        if klen > MAX_KEY or off + total > end:
            raise _Corrupt("bad length (truncated record?)")
        view = self._read(seg, off, total)
        if len(view) < total:
            raise _Corrupt("truncated record")
        if zlib.crc32(view[8:]) != crc:
            raise _Corrupt("checksum mismatch")
        self._last_created = created
        return total, created, view[HEADER.size:HEADER.size + klen], view[HEADER.size + klen:]

    def _skip(self, seg, off, end, reason):
        """Log a bad record at ``off``; the offset of the next good one, or ``end``."""
        before = self._last_created
        pos = off + 1
        resume = end
        after = None
        while pos < end:
            view = self._read(seg, pos, min(CHUNK, end - pos))
            if not view:
                break
            i = bytes(view).find(MAGIC)
            if i < 0:
                pos += max(1, len(view) - len(MAGIC) + 1)
                continue
            try:
                after = self._parse(seg, pos + i, end)[1]
            except _Corrupt:
                pos += i + 1
                continue
            resume = pos + i
            break
        if (seg, off) not in self._reported:
            self._reported.add((seg, off))
            log.error("output %s: buffer file %s: %s at offset %d; skipped %d bytes (%s)",
                      self.name, self._segment(seg), reason, off, resume - off,
                      "resuming at offset %d" % resume if resume < end else "the rest of the file")
            if self.on_damaged is not None:
                self.on_damaged(before, after, resume - off)
        return resume

    def _read(self, seg, off, n):
        """Up to ``n`` bytes at ``off`` in a segment, through the read-ahead chunk."""
        chunk = self._chunk
        if chunk is not None and self._chunk_seg == seg:
            start = off - self._chunk_off
            if 0 <= start and start + n <= len(chunk):
                return chunk[start:start + n]
        fd = self._rfds.get(seg)
        if fd is None:
            fd = self._rfds[seg] = os.open(self._segment(seg), os.O_RDONLY)
        # Never past what this buffer knows is written, so the chunk stays true.
        want = min(max(n, CHUNK), self._seg_end[seg] - off)
        self._chunk = memoryview(os.pread(fd, max(want, 0), off))
        self._chunk_seg, self._chunk_off = seg, off
        return self._chunk[:n]

    def _key(self, data):
        data = bytes(data)
        key = self._keys.get(data)
        if key is None:
            try:
                endpoint, query, headers = json.loads(data.decode("utf-8"))
                key = (endpoint, query, tuple((k, v) for k, v in headers))
            except ValueError:  # cannot be: the CRC matched what we wrote
                raise RelayError("output %s: unreadable buffered key" % self.name)
            if len(self._keys) >= 256:
                self._keys.clear()
            self._keys[data] = key
        return key

    # -- writing ---------------------------------------------------------------

    def _record(self, entry):
        key = entry.key
        if key == self._last_key:
            kb = self._last_key_bytes
        else:
            endpoint, query, headers = key
            kb = json.dumps([endpoint, query, [list(h) for h in headers]]).encode("utf-8")
            self._last_key, self._last_key_bytes = key, kb
        body = entry.body
        rest = HEADER.pack(MAGIC, 0, len(kb), len(body), entry.created)[8:]
        crc = zlib.crc32(body, zlib.crc32(kb, zlib.crc32(rest)))
        return b"".join((MAGIC, struct.pack("<I", crc), rest, kb, body))

    def _new_segment(self, seg):
        """Start writing segment ``seg``."""
        fd = os.open(self._segment(seg), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        old = self._wfd
        reader_at_end = (
            not self._seg_ids
            or (self._rseg == self._seg_ids[-1] and self._roff >= self._seg_end[self._rseg])
        )
        self._wfd, self._wseg, self._wend = fd, seg, 0
        self._seg_ids.append(seg)
        self._seg_end[seg] = 0
        if self.policy != "os":
            self._dir_dirty = True
        if old is not None:
            self._retire(old)
            if reader_at_end:
                # The reader was caught up with the old segment: it is with the new one.
                self._rseg, self._roff = seg, 0
                if not self._window:
                    self._move_cursor()

    def _undo_write(self, off):
        """Cut a partly written record off the end of the write segment."""
        self._chunk = self._chunk_seg = None
        try:
            os.ftruncate(self._wfd, off)
        except OSError as e:
            log.error("output %s: cannot truncate %s after a failed write: %s",
                      self.name, self._segment(self._wseg), e)

    # -- delivery and the cursor -------------------------------------------------

    def _pop_head(self, move_cursor=True):
        entry = self._window.popleft()
        self._count -= 1
        self.size -= entry.ref[2]
        if move_cursor:
            self._move_cursor()

    def _move_cursor(self, force=False):
        """The cursor follows the head; save it now and then, drop finished segments."""
        if self._window:
            seg, off, _ = self._window[0].ref
        else:
            seg, off = self._rseg, self._roff
        if (seg, off) == (self._cseg, self._coff) and not force:
            return
        new_segment = seg != self._cseg
        self._cseg, self._coff = seg, off
        now = time.monotonic()
        if force or new_segment or not self._count or now - self._cursor_saved >= CURSOR_EVERY:
            self._save_cursor()
        if new_segment:
            self._forget_before(seg)

    def _save_cursor(self, fsync=False):
        data = CURSOR.pack(CURSOR_MAGIC, self._cseg, self._coff, 0)[:20]
        data += struct.pack("<I", zlib.crc32(data[4:]))
        tmp = self._file("cursor.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _pwrite_all(fd, data, 0)
                if fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._file("cursor"))
            if fsync:
                os.fsync(self._dir_fd)
        except OSError as e:
            # Only costs duplicates after a restart.
            log.error("output %s: cannot save %s: %s", self.name, self._file("cursor"), e)
        self._cursor_saved = time.monotonic()

    def _forget_before(self, seg):
        """Delete the segments before ``seg`` (delivered)."""
        while self._seg_ids and self._seg_ids[0] < seg:
            self._drop_segment(self._seg_ids[0])

    def _drop_segment(self, seg):
        i = bisect.bisect_left(self._seg_ids, seg)
        if i < len(self._seg_ids) and self._seg_ids[i] == seg:
            del self._seg_ids[i]
        self._seg_end.pop(seg, None)
        fd = self._rfds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        if self._chunk_seg == seg:
            self._chunk = self._chunk_seg = None
        self._unlink(seg)

    def _unlink(self, seg):
        try:
            os.unlink(self._segment(seg))
        except OSError as e:
            if e.errno != errno.ENOENT:
                log.error("output %s: cannot delete %s: %s", self.name, self._segment(seg), e)

    def _next_segment(self, seg):
        i = bisect.bisect_right(self._seg_ids, seg)
        return self._seg_ids[i] if i < len(self._seg_ids) else None

    # -- fsync -------------------------------------------------------------------

    def _fsync(self):
        """fsync what was appended so far; callers that come meanwhile share the next one."""
        target = self._written
        while self._synced < target or (self._dir_dirty and self._syncing is None):
            if self._syncing is not None:
                self._syncing.wait()
                continue
            done = self._syncing = Event()
            upto = self._written
            fds, self._dirty = self._dirty, set()
            self._syncing_fds = fds
            dir_dirty, self._dir_dirty = self._dir_dirty, False
            pool = gevent.get_hub().threadpool
            try:
                for fd in fds:
                    pool.apply(os.fsync, (fd,))
                if dir_dirty:
                    pool.apply(os.fsync, (self._dir_fd,))
            except OSError as e:
                log.error("output %s: fsync in %s failed: %s (buffered writes may not "
                          "survive a power loss)", self.name, self.path, e)
            finally:
                self._synced = max(self._synced, upto)
                self._syncing = None
                self._syncing_fds = ()
                for fd in fds & self._retired:
                    self._retired.discard(fd)
                    os.close(fd)
                done.set()

    def _flush_every(self, interval):
        while not self._stop.wait(interval):
            if self._synced < self._written or self._dir_dirty:
                self._fsync()

    def _retire(self, fd):
        """Close a segment's write fd once no fsync needs it."""
        if fd in self._dirty or fd in self._syncing_fds:
            self._retired.add(fd)
        else:
            os.close(fd)

    # -- files -------------------------------------------------------------------

    def _file(self, name):
        return os.path.join(self.path, name)

    def _segment(self, seg):
        return os.path.join(self.path, "%016d.seg" % seg)

    def _close_fds(self):
        fds = set(self._rfds.values()) | self._retired | self._dirty
        for fd in (self._wfd, self._dir_fd):
            if fd is not None:
                fds.add(fd)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._rfds.clear()
        self._retired.clear()
        self._dirty.clear()
        self._wfd = self._dir_fd = None
        self._chunk = self._chunk_seg = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None


def _pwrite_all(fd, data, offset):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
