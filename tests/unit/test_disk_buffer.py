"""The disk retry buffer: order, restarts, corruption, limits, SIGKILL."""

import gc
import logging
import os
import random
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import gevent
import gevent.event
import pytest

from influx_relay.buffer import PENDING, READY, BufferFull, Entry, disk
from influx_relay.buffer.disk import DiskBuffer
from influx_relay.config import Endpoints, HTTPOutputConfig
from influx_relay.errors import RelayError

ROOT = Path(__file__).resolve().parents[2]
KEY = ("/write", "db=metrics&precision=ns", (("Authorization", "Basic c2VjcmV0"),))
OTHER = ("/write", "db=other", ())


def output(tmp_path, **kw):
    values = dict(
        name="influx-a", location="http://127.0.0.1:8086", scheme="http", host="127.0.0.1",
        port=8086, endpoints=Endpoints(), buffer_path=str(tmp_path / "buf"),
        buffer_size_mb=64, buffer_sync="os",
    )
    values.update(kw)
    return HTTPOutputConfig(**values)


def line(i, size=0):
    return b"cpu,n=%d value=%d" % (i, i) + b"x" * size


def number(body):
    return int(body.split(b"=")[1].split(b" ")[0])


def drain(buf, max_bytes=512 * 1024):
    """Deliver everything as the retry loop would; [(key, body, created), ...]."""
    out = []
    while buf.head() is not None:
        batch = buf.batch(max_bytes)
        out.extend((e.key, buf.body(e), e.created) for e in batch)
        buf.remove(batch)
    return out


def bodies(buf, max_bytes=512 * 1024):
    return [body for _, body, _ in drain(buf, max_bytes)]


def segments(path):
    return sorted(p.name for p in path.iterdir() if p.name.endswith(".seg"))


# -- the interface of MemoryBuffer ---------------------------------------------


def test_order_kept_across_segments_and_delivered_segments_deleted(tmp_path):
    buf = DiskBuffer(output(tmp_path), segment_size=4096)
    for i in range(500):
        buf.append([Entry(KEY if i % 50 < 40 else OTHER, line(i, i % 300))])
    assert len(buf) == 500 and buf
    assert len(segments(tmp_path / "buf")) > 10

    batch = buf.batch(512 * 1024)
    assert [number(buf.body(e)) for e in batch] == list(range(40))  # one key per batch
    buf.remove(batch)
    assert len(buf) == 460

    got = bodies(buf, max_bytes=2000)
    assert [number(b) for b in got] == list(range(40, 500))
    assert got[10] == line(50, 50)
    assert not buf and len(buf) == 0 and buf.size == 0 and buf.head() is None
    assert len(segments(tmp_path / "buf")) == 1  # the one being written
    buf.close()


def test_batch_limits_and_head_always_included(tmp_path):
    buf = DiskBuffer(output(tmp_path))
    buf.append([Entry(KEY, line(0, 5000)), Entry(KEY, line(1)), Entry(KEY, line(2))])
    assert [number(buf.body(e)) for e in buf.batch(100)] == [0]
    buf.remove(buf.batch(100))
    assert [number(buf.body(e)) for e in buf.batch(10 ** 6)] == [1, 2]
    buf.close()


def test_restart_replays_undelivered_records_with_keys_and_times(tmp_path):
    cfg = output(tmp_path)
    buf = DiskBuffer(cfg, segment_size=2048)
    for i in range(100):
        buf.append([Entry(OTHER if i % 3 else KEY, line(i, 40), created=1000.0 + i)])
    for _ in range(5):
        buf.remove(buf.batch(512 * 1024))
    left = len(buf)
    first = number(buf.body(buf.head()))
    buf.close()

    buf = DiskBuffer(cfg, segment_size=2048)
    assert len(buf) == left
    assert buf.oldest() == 1000.0 + first
    replayed = drain(buf)
    assert [number(b) for _, b, _ in replayed] == list(range(first, 100))
    for key, body, created in replayed:
        i = number(body)
        assert key == (OTHER if i % 3 else KEY)
        assert created == 1000.0 + i
        assert body == line(i, 40)
    # What this run appends comes after the replayed backlog.
    buf.append([Entry(KEY, line(100))])
    assert bodies(buf) == [line(100)]
    buf.close()

    buf = DiskBuffer(cfg)
    assert len(buf) == 0 and buf.head() is None
    buf.close()


def test_appends_during_replay_come_after_the_backlog(tmp_path):
    cfg = output(tmp_path)
    buf = DiskBuffer(cfg, segment_size=1000)
    buf.append([Entry(KEY, line(i)) for i in range(50)])
    buf.close()
    buf = DiskBuffer(cfg, segment_size=1000)
    got = []
    i = 50
    while buf.head() is not None:
        batch = buf.batch(200)
        got.extend(number(buf.body(e)) for e in batch)
        buf.remove(batch)
        if i < 80:
            buf.append([Entry(KEY, line(i))])
            i += 1
    assert got == list(range(80))
    buf.close()


def test_pending_entry_holds_the_head_until_it_settles(tmp_path):
    buf = DiskBuffer(output(tmp_path))
    a, p, b = Entry(KEY, line(0)), Entry(KEY, line(1), PENDING), Entry(KEY, line(2))
    buf.append([a])
    buf.append([p])
    buf.append([b])
    assert [number(buf.body(e)) for e in buf.batch(10 ** 6)] == [0]  # stops at PENDING
    buf.remove([a])
    assert buf.head() is p and p.state == PENDING
    p.settle(True)  # its direct request succeeded: skipped
    assert buf.head() is b
    assert bodies(buf) == [line(2)]

    p2, c = Entry(KEY, line(3), PENDING), Entry(KEY, line(4))
    buf.append([p2, c])
    p2.settle(False)  # failed: delivered by the retry loop, in its place
    assert [number(buf.body(e)) for e in buf.batch(10 ** 6)] == [3, 4]
    buf.close()


def test_pending_entries_beyond_the_window_keep_their_state(tmp_path, monkeypatch):
    monkeypatch.setattr(disk, "WINDOW_LIVE", 2)
    buf = DiskBuffer(output(tmp_path))
    entries = [Entry(KEY, line(i), PENDING if i in (3, 5) else READY) for i in range(7)]
    for e in entries:
        buf.append([e])
    assert len(buf._window) == 2 and len(buf._pinned) == 2
    entries[3].settle(True)
    got = []
    while buf.head() is not None:
        head = buf.head()
        if head.state == PENDING:
            assert head is entries[5]
            head.settle(False)
            continue
        batch = buf.batch(10 ** 6)
        got.extend(number(buf.body(e)) for e in batch)
        buf.remove(batch)
    assert got == [0, 1, 2, 4, 5, 6]
    assert not buf._pinned
    buf.close()


def test_pending_and_done_entries_come_back_ready_after_a_restart(tmp_path):
    cfg = output(tmp_path)
    buf = DiskBuffer(cfg)
    p, d = Entry(KEY, line(0), PENDING), Entry(KEY, line(1), PENDING)
    buf.append([p, d, Entry(KEY, line(2))])
    d.settle(True)
    buf.close()  # killed before p settled: both may be delivered again, which is fine
    buf = DiskBuffer(cfg)
    head = buf.head()
    assert head.state == READY
    assert bodies(buf) == [line(0), line(1), line(2)]
    buf.close()


def test_buffer_full_drops_the_whole_append(tmp_path):
    buf = DiskBuffer(output(tmp_path, buffer_size_mb=1))
    assert buf.limit == 1024 * 1024
    n = 0
    with pytest.raises(BufferFull):
        while True:
            buf.append([Entry(KEY, line(n, 10000))])
            n += 1
    assert buf.size <= buf.limit and len(buf) == n
    on_disk = sum(p.stat().st_size for p in (tmp_path / "buf").glob("*.seg"))
    assert on_disk == buf.size  # nothing of the refused record was written
    with pytest.raises(BufferFull):
        buf.append([Entry(KEY, line(n)), Entry(KEY, line(n + 1, 20000))])
    assert len(buf) == n
    buf.remove(buf.batch(1))  # delivery makes room again
    buf.append([Entry(KEY, line(n, 10000))])
    assert [number(b) for b in bodies(buf)] == list(range(1, n + 1))
    buf.close()


def test_clear_drops_everything(tmp_path):
    cfg = output(tmp_path)
    buf = DiskBuffer(cfg, segment_size=1000)
    buf.append([Entry(KEY, line(i, 100)) for i in range(40)])
    size = buf.size
    buf.batch(10 ** 6)
    assert buf.clear() == (40, size)
    assert not buf and len(buf) == 0 and buf.size == 0 and buf.head() is None
    assert buf.oldest() is None
    assert len(segments(tmp_path / "buf")) == 1
    buf.append([Entry(KEY, line(99))])
    buf.close()
    buf = DiskBuffer(cfg)
    assert bodies(buf) == [line(99)]
    buf.close()


def test_oldest_is_the_head_records_time(tmp_path):
    buf = DiskBuffer(output(tmp_path))
    assert buf.oldest() is None
    buf.append([Entry(KEY, line(0), created=5.0), Entry(KEY, line(1), created=7.0)])
    assert buf.oldest() == 5.0
    buf.remove([buf.head()])
    assert buf.oldest() == 7.0
    buf.close()


# -- the directory -----------------------------------------------------------------


def test_files_are_private(tmp_path):
    buf = DiskBuffer(output(tmp_path, buffer_path=str(tmp_path / "a" / "b" / "buf")))
    buf.append([Entry(KEY, line(0))])
    path = tmp_path / "a" / "b" / "buf"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    buf.close()
    for p in path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def test_unusable_directory_is_an_error_naming_output_and_path(tmp_path):
    (tmp_path / "file").write_text("")
    cfg = output(tmp_path, buffer_path=str(tmp_path / "file" / "buf"))
    with pytest.raises(RelayError) as e:
        DiskBuffer(cfg)
    assert "influx-a" in str(e.value) and str(tmp_path / "file" / "buf") in str(e.value)


def test_a_second_relay_cannot_open_the_same_buffer(tmp_path):
    cfg = output(tmp_path)
    buf = DiskBuffer(cfg)
    with pytest.raises(RelayError) as e:
        DiskBuffer(cfg)
    assert "influx-a" in str(e.value) and cfg.buffer_path in str(e.value)
    buf.close()
    DiskBuffer(cfg).close()


# -- damage --------------------------------------------------------------------------


def _write_numbered(cfg, n, segment_size):
    """n records, each knowing its place: [(segment file, offset, length), ...]."""
    buf = DiskBuffer(cfg, segment_size=segment_size)
    refs = []
    for i in range(n):
        e = Entry(KEY, line(i, 60))
        buf.append([e])
        seg, off, total = e.ref
        refs.append((Path(cfg.buffer_path) / ("%016d.seg" % seg), off, total))
    buf.close()
    return refs


def _poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_corrupt_and_truncated_records_are_skipped_and_logged(tmp_path, caplog):
    cfg = output(tmp_path)
    refs = _write_numbered(cfg, 120, segment_size=3000)  # 17 records a segment
    files = sorted({r[0] for r in refs})
    assert len(files) >= 4
    in_first = [i for i, r in enumerate(refs) if r[0] == files[0]]
    in_second = [i for i, r in enumerate(refs) if r[0] == files[1]]
    in_last = [i for i, r in enumerate(refs) if r[0] == files[-1]]
    bad_body, bad_magic, bad_length = in_first[2], in_first[6], in_second[3]
    torn, torn_mid = in_last[-1], in_second[-3]

    _poke(refs[bad_body][0], refs[bad_body][1] + refs[bad_body][2] - 5, b"\xff")
    _poke(refs[bad_magic][0], refs[bad_magic][1], b"JUNK")
    _poke(refs[bad_length][0], refs[bad_length][1] + 12, b"\x00\x00\x01\x00")
    # A torn tail in the last segment, and one in the middle of the backlog
    # (power loss while writing the previous run's last segment).
    os.truncate(refs[torn][0], refs[torn][1] + refs[torn][2] - 7)
    os.truncate(refs[torn_mid][0], refs[torn_mid][1] + 10)
    lost = {bad_body, bad_magic, bad_length, torn} | set(in_second[-3:])

    caplog.set_level(logging.ERROR, logger="influx_relay.buffer.disk")
    buf = DiskBuffer(cfg, segment_size=3000)
    assert len(buf) == 120 - len(lost)
    got = [number(b) for b in bodies(buf, max_bytes=300)]
    assert got == [i for i in range(120) if i not in lost]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 5  # each damaged place once, not again while replaying
    for path, offset, reason in [
        (files[0], refs[bad_body][1], "checksum mismatch"),
        (files[0], refs[bad_magic][1], "bad magic"),
        (files[1], refs[bad_length][1], "bad length"),
        (files[1], refs[torn_mid][1], "truncated record header"),
        (files[-1], refs[torn][1], "bad length (truncated record?)"),
    ]:
        assert any(
            "influx-a" in m and str(path) in m and "offset %d;" % offset in m and reason in m
            for m in errors
        ), (path, offset, reason, errors)
    buf.append([Entry(KEY, line(100))])
    assert bodies(buf) == [line(100)]
    buf.close()


def test_a_segment_of_garbage_is_survived(tmp_path):
    cfg = output(tmp_path)
    refs = _write_numbered(cfg, 30, segment_size=1000)
    files = sorted({r[0] for r in refs})
    files[1].write_bytes(os.urandom(5000))
    buf = DiskBuffer(cfg)
    got = [number(b) for b in bodies(buf)]
    assert got == [i for i, r in enumerate(refs) if r[0] != files[1]]
    buf.close()


def test_unreadable_cursor_replays_everything(tmp_path, caplog):
    cfg = output(tmp_path)
    buf = DiskBuffer(cfg)
    buf.append([Entry(KEY, line(i)) for i in range(5)])
    buf.remove(buf.batch(10 ** 6)[:3])
    buf.close()
    (tmp_path / "buf" / "cursor").write_bytes(b"\0" * 10)
    buf = DiskBuffer(cfg)
    assert [number(b) for b in bodies(buf)] == [0, 1, 2, 3, 4]  # duplicates, nothing lost
    assert "cursor" in caplog.text
    buf.close()


# -- memory ---------------------------------------------------------------------------


def _entries_alive():
    return sum(1 for o in gc.get_objects() if type(o) is Entry)


def test_memory_stays_bounded_with_a_large_backlog(tmp_path):
    cfg = output(tmp_path, buffer_size_mb=100)
    n = 200000
    max_bytes = 64 * 1024
    buf = DiskBuffer(cfg)
    for start in range(0, n, 1000):
        buf.append([Entry(KEY, line(i, 80)) for i in range(start, start + 1000)])
        assert len(buf._window) <= disk.WINDOW_LIVE
    buf.close()
    del buf
    gc.collect()
    baseline = _entries_alive()

    buf = DiskBuffer(cfg)
    assert len(buf) == n
    per_batch = max_bytes // len(line(0, 80)) + 2
    expected = 0
    most = 0
    while buf.head() is not None:
        batch = buf.batch(max_bytes)
        for e in batch:
            assert number(buf.body(e)) == expected
            expected += 1
        most = max(most, len(buf._window) + len(buf._pinned))
        if expected % 50000 < len(batch):
            assert _entries_alive() - baseline <= per_batch
        buf.remove(batch)
        del batch, e
    assert expected == n
    assert most <= per_batch
    buf.close()


# -- fsync -------------------------------------------------------------------------------


def _live_greenlets():
    return sum(1 for o in gc.get_objects() if isinstance(o, gevent.Greenlet) and not o.dead)


class _CountedEvent(gevent.event.Event):
    """The flusher's stop event, counting the intervals it waited."""

    def __init__(self):
        super().__init__()
        self.waits = 0

    def wait(self, timeout=None):
        self.waits += 1
        return super().wait(timeout)


def _until(predicate, timeout=5.0):
    with gevent.Timeout(timeout, AssertionError("condition not met in %gs" % timeout)):
        while not predicate():
            gevent.sleep(0.005)


def test_interval_sync_fsyncs_and_leaves_no_greenlet_behind(tmp_path, monkeypatch):
    """Counted in the flusher's own intervals, not in sleeps around them, so a
    busy machine cannot make it pass or fail by chance."""
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    before = _live_greenlets()
    buf = DiskBuffer(output(tmp_path, buffer_sync="interval", buffer_sync_interval=0.01))
    stop = buf._stop = _CountedEvent()
    buf.append([Entry(KEY, line(0))])
    buf.sync()  # not this policy's job
    assert not calls
    assert _live_greenlets() == before + 1
    _until(lambda: calls)  # the segment and its directory entry, at the next interval
    _until(lambda: buf._synced == buf._written and not buf._dir_dirty)
    calls.clear()
    waited = stop.waits
    _until(lambda: stop.waits >= waited + 3)  # three more intervals went by...
    assert not calls  # ...with nothing new written: nothing to sync
    buf.close()
    gevent.sleep(0)
    assert _live_greenlets() == before


def test_write_sync_groups_concurrent_callers(tmp_path, monkeypatch):
    calls = []
    real_fsync = os.fsync

    def slow_fsync(fd):
        calls.append(fd)
        time.sleep(0.01)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    buf = DiskBuffer(output(tmp_path, buffer_sync="write"))

    def write(i):
        buf.append([Entry(KEY, line(i))])
        mine = buf._written
        buf.sync()
        assert buf._synced >= mine  # its own append is synced

    jobs = [gevent.spawn(write, i) for i in range(30)]
    gevent.joinall(jobs, raise_error=True)
    assert buf._synced == buf._written
    assert len(calls) < 30  # shared fsyncs
    assert [number(b) for b in bodies(buf)] == list(range(30))
    buf.close()


def test_os_sync_never_fsyncs(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fsync", calls.append)
    buf = DiskBuffer(output(tmp_path, buffer_sync="os"), segment_size=100)
    for i in range(10):
        buf.append([Entry(KEY, line(i))])
        buf.sync()
    buf.close()
    assert calls == []


# -- SIGKILL ---------------------------------------------------------------------------------

CHILD = r"""
import os, random, sys
from influx_relay.buffer import Entry
from influx_relay.buffer.disk import DiskBuffer
from influx_relay.config import Endpoints, HTTPOutputConfig

path, policy, n, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = HTTPOutputConfig(name="influx-a", location="http://h:1", scheme="http", host="h", port=1,
                 endpoints=Endpoints(), buffer_path=path, buffer_size_mb=256,
                 buffer_sync=policy, buffer_sync_interval=0.005)
buf = DiskBuffer(cfg, segment_size=64 * 1024)
rnd = random.Random(seed)
key = ("/write", "db=x", (("Authorization", "Basic c2VjcmV0"),))
start = int(sys.argv[5])
for i in range(start, start + n):
    buf.append([Entry(key, b"cpu,n=%d value=%d" % (i, i) + b"x" * rnd.randrange(0, 6000))])
    buf.sync()
    os.write(1, b"appended %d\n" % i)  # one write: a whole line or nothing
    if i % 7 == 6:
        batch = buf.batch(rnd.randrange(1, 30000))
        last = int(bytes(buf.body(batch[-1])).split(b"=")[1].split(b" ")[0])
        os.write(1, b"removing %d\n" % last)
        buf.remove(batch)
"""


def _run_and_kill(path, policy, seed, start, rnd):
    n = 3000
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), policy, str(n), str(seed), str(start)],
        cwd=str(ROOT), stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    kill_at = start + rnd.randrange(10, 1500)
    appended, removed = start - 1, None
    try:
        for raw in proc.stdout:
            what, i = raw.split()
            if what == b"appended":
                appended = int(i)
                if appended >= kill_at:
                    time.sleep(rnd.random() * 0.005)
                    break
            else:
                removed = int(i)
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # what it said before it died counts too
        proc.wait()
        proc.stdout.close()
    for raw in rest.split(b"\n")[:-1]:
        what, i = raw.split()
        if what == b"appended":
            appended = int(i)
        else:
            removed = int(i)
    assert proc.returncode == -signal.SIGKILL
    return appended, removed


@pytest.mark.parametrize("policy", ["os", "write", "interval"])
def test_sigkill_loses_nothing_that_was_appended(tmp_path, policy):
    seed = random.randrange(10 ** 9)  # in the assertion messages, to replay a failure
    rnd = random.Random(seed)
    path = tmp_path / "buf"
    cfg = output(tmp_path, buffer_size_mb=256)
    start = first_kept = 0
    for round_ in range(4):
        # Each child starts with what the previous ones left: a backlog to
        # replay (and remove from) before what it appends.
        appended, removed = _run_and_kill(path, policy, rnd.randrange(10 ** 6), start, rnd)
        if removed is not None:
            first_kept = removed + 1
        buf = DiskBuffer(cfg)
        got = [] if buf.head() is None else [number(buf.body(e)) for e in buf.batch(10 ** 12)]
        assert len(got) == len(buf)
        buf.close()
        # Everything the children appended and had not started to remove, in
        # order; removed records may come back (duplicates are fine).
        if not got:
            assert appended < first_kept, (seed, round_)
        else:
            assert got == list(range(got[0], got[-1] + 1)), (seed, round_)
            assert got[0] <= first_kept, (seed, round_)
            assert got[-1] >= appended, (seed, round_)
        start = max(got + [appended]) + 1
