#!/usr/bin/env python3
"""A backend that hangs, and a writer that watches the relay's memory: for bench/hung_backend.sh.

    hung_backend.py serve PORT --stats FILE [--max-seconds S]
        Listens on 127.0.0.1:PORT, accepts every connection and reads (and throws away)
        everything sent on it, but never answers: a backend that hangs after accepting.
        Rewrites FILE (JSON: connections accepted, open now, most open at once, bytes and
        request lines received) every 0.2 s and on exit; exits on SIGTERM or after S seconds.

    hung_backend.py write URL --pid PID [--pid PID...] [--total-mb 300] [--body-kb 1024]
                    [--concurrency 8] [--rate 0] [--timeout 60] [--max-seconds 120] [--settle 5]
                    [--shared DIR]
        POSTs ceil(total-mb * 1024 / body-kb) bodies of line protocol of body-kb each (the
        Telegraf-like lines of DIR/lp_gen.py, 1 in 7 without a timestamp) to
        URL/write?db=bench over --concurrency keep-alive connections (http://127.0.0.1 only),
        at most --rate writes per second (0: as fast as the relay answers),
        while a sampler reads VmRSS and the number of open fds of the PIDs (and their child
        processes) from /proc every 0.05 s, during the writes and for --settle seconds after.
        Stops starting writes after --max-seconds. Prints one JSON object: writes acknowledged
        (2xx) and failed (by status, or the exception), client latencies, idle/peak/end RSS and
        fds, and VmHWM (the kernel's own peak, which no sampling interval can miss).

Standard library only, so any python3 runs it.
"""
import argparse
import http.client
import json
import math
import os
import selectors
import signal
import socket
import sys
import threading
import time
import urllib.parse

# -- the hung backend -----------------------------------------------------------------------

def serve(args):
    sel = selectors.DefaultSelector()
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", args.port))
    lsock.listen(4096)
    lsock.setblocking(False)
    sel.register(lsock, selectors.EVENT_READ)
    stats = dict(accepted=0, open=0, max_open=0, bytes=0, requests=0, closed_by_peer=0)
    tails = {}  # socket -> the last bytes seen, to count "POST " split across reads
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    def dump():
        tmp = args.stats + ".tmp"
        with open(tmp, "w") as f:
            json.dump(stats, f)
        os.replace(tmp, args.stats)

    deadline = time.monotonic() + args.max_seconds
    next_dump = 0.0
    while not stop and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            if sock is lsock:
                for _ in range(256):
                    try:
                        conn, _ = lsock.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    conn.setblocking(False)
                    sel.register(conn, selectors.EVENT_READ)
                    tails[conn] = b""
                    stats["accepted"] += 1
                    stats["open"] += 1
                    stats["max_open"] = max(stats["max_open"], stats["open"])
                continue
            try:
                data = sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                sock.close()
                del tails[sock]
                stats["open"] -= 1
                stats["closed_by_peer"] += 1
                continue
            stats["bytes"] += len(data)
            seen = tails[sock] + data
            stats["requests"] += seen.count(b"POST ") - tails[sock].count(b"POST ")
            tails[sock] = seen[-4:]
        now = time.monotonic()
        if now >= next_dump:
            dump()
            next_dump = now + 0.2
    dump()


# -- the writer and the sampler -------------------------------------------------------------

def body_of(size, shared):
    """Whole lines of about `size` bytes: the harness's Telegraf-like lines (lp_gen.py in
    `shared`, as the other benchmarks send) when it is there, else lines of one shape."""
    try:
        sys.path.insert(0, shared or ".")
        from lp_gen import gen_line
    except ImportError:
        def gen_line(i):
            return "cpu,host=server%02d usage_user=%d.5,usage_idle=%di %d\n" % (
                i % 50, i % 100, i, 1_700_000_000_000_000_000 + i * 10**9)
    lines, n, i = [], 0, 0
    while n < size:
        line = gen_line(i)
        lines.append(line)
        n += len(line)
        i += 1
    return "".join(lines).encode(), i


def proc_tree(pids):
    """The pids and their descendants that still exist."""
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        if p in out or not os.path.isdir("/proc/%d" % p):
            continue
        out.append(p)
        for task in os.listdir("/proc/%d/task" % p) if os.path.isdir("/proc/%d/task" % p) else ():
            try:
                with open("/proc/%d/task/%s/children" % (p, task)) as f:
                    todo.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    return out


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fd_count(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return 0


class Sampler(threading.Thread):
    def __init__(self, pids, interval):
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.stop = threading.Event()
        self.peak_rss_kb = self.peak_fds = 0
        self.peak_rss_at = self.peak_fds_at = 0.0
        self.samples = 0
        self.t0 = time.monotonic()
        self.last = (0, 0)

    def sample(self):
        tree = proc_tree(self.pids)
        rss = sum(status_kb(p, "VmRSS") for p in tree)
        fds = sum(fd_count(p) for p in tree)
        return rss, fds

    def run(self):
        while not self.stop.is_set():
            rss, fds = self.last = self.sample()
            now = time.monotonic() - self.t0
            self.samples += 1
            if rss > self.peak_rss_kb:
                self.peak_rss_kb, self.peak_rss_at = rss, now
            if fds > self.peak_fds:
                self.peak_fds, self.peak_fds_at = fds, now
            self.stop.wait(self.interval)


def write(args):
    url = urllib.parse.urlsplit(args.url)
    if url.scheme != "http" or url.hostname != "127.0.0.1":
        sys.exit("refusing: the relay must be http://127.0.0.1[:port] (got %s)" % args.url)
    body, lines = body_of(args.body_kb * 1024, args.shared)
    total = math.ceil(args.total_mb * 1024 / args.body_kb)
    tree = proc_tree(args.pid)
    sampler = Sampler(args.pid, args.interval)
    idle_rss, idle_fds = sampler.sample()
    hwm_before = sum(status_kb(p, "VmHWM") for p in tree)
    sampler.start()

    lock = threading.Lock()
    state = dict(next=0, ok=0, failed={}, latencies=[])
    t_start = time.monotonic()
    deadline = t_start + args.max_seconds

    def worker():
        conn = None
        while True:
            with lock:
                if state["next"] >= total or time.monotonic() >= deadline:
                    break
                k = state["next"]
                state["next"] += 1
            if args.rate > 0:  # write k starts no earlier than k / rate s after the first
                wait = t_start + k / args.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            t = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)
                conn.request("POST", "/write?db=bench", body, {"Content-Type": "text/plain"})
                resp = conn.getresponse()
                resp.read()
                result = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # a failed write is a result, not the end of the run
                result = type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            took = time.monotonic() - t
            with lock:
                state["latencies"].append(took)
                if isinstance(result, int) and 200 <= result < 300:
                    state["ok"] += 1
                else:
                    state["failed"][str(result)] = state["failed"].get(str(result), 0) + 1
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(args.max_seconds + args.timeout + 5)
    t_writes = time.monotonic() - t_start
    # after the writes: how long until memory and fds come back (bounded by --settle)
    sampler.stop.wait(args.settle)
    sampler.stop.set()
    sampler.join(5)
    end_rss, end_fds = sampler.sample()
    hwm = sum(status_kb(p, "VmHWM") for p in proc_tree(args.pid))
    lat = sorted(state["latencies"])

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1) if lat else None

    done = state["ok"] + sum(state["failed"].values())
    print(json.dumps(dict(
        writes=done, planned=total, ok=state["ok"], failed=state["failed"],
        body_bytes=len(body), body_lines=lines, mb_sent=round(done * len(body) / 2**20, 1),
        writes_s=round(t_writes, 2), mb_per_s=round(done * len(body) / 2**20 / t_writes, 1) if t_writes else None,
        lat_p50_ms=pct(0.50), lat_p99_ms=pct(0.99), lat_max_ms=round(lat[-1] * 1000, 1) if lat else None,
        rss_idle_mb=round(idle_rss / 1024, 1), fds_idle=idle_fds,
        rss_peak_mb=round(sampler.peak_rss_kb / 1024, 1), rss_peak_at_s=round(sampler.peak_rss_at, 2),
        fds_peak=sampler.peak_fds, fds_peak_at_s=round(sampler.peak_fds_at, 2),
        rss_end_mb=round(end_rss / 1024, 1), fds_end=end_fds,
        hwm_mb=round(max(hwm, hwm_before) / 1024, 1), samples=sampler.samples,
        settle_s=args.settle, relay_alive=bool(proc_tree(args.pid)))))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("port", type=int)
    s.add_argument("--stats", required=True)
    s.add_argument("--max-seconds", type=float, default=900)
    w = sub.add_parser("write")
    w.add_argument("url")
    w.add_argument("--pid", type=int, action="append", required=True)
    w.add_argument("--total-mb", type=float, default=300)
    w.add_argument("--body-kb", type=int, default=1024)
    w.add_argument("--concurrency", type=int, default=8)
    w.add_argument("--timeout", type=float, default=60, help="client timeout per write, s")
    w.add_argument("--max-seconds", type=float, default=120, help="no new write after this, s")
    w.add_argument("--rate", type=float, default=0, help="writes per second at most (0: no limit)")
    w.add_argument("--settle", type=float, default=5, help="keep sampling this long after, s")
    w.add_argument("--interval", type=float, default=0.05, help="sampling interval, s")
    w.add_argument("--shared", help="the shared harness's directory, for its lp_gen.py")
    args = ap.parse_args()
    serve(args) if args.cmd == "serve" else write(args)


if __name__ == "__main__":
    main()
