"""Soak: a steady write load for minutes through the real relay while a backend flaps.

    bash bench/soak.sh                       # 10 minutes, memory buffers
    bash bench/soak.sh --minutes 30 --buffer disk

Starts two influxd 1.x and one relay (127.0.0.1, free ports, a fresh
/tmp/influx-relay-soak.XXXXXX), writes through the relay from client threads
without timestamps (every point distinct, known by its value, plus one point
each thread overwrites with every request: see tests/system/workload.py), and
meanwhile stops or kills influxd b and restarts it on the same ports at seeded
random intervals. Every ``--every`` seconds it prints one line: load so far,
b's state and backlog, and the relay's RSS, open fds and greenlets. At the end,
with both servers up and the backlog delivered, it checks what each database
holds against what clients were told, and prints the figures. Exit status 1
if an acknowledged point is missing anywhere (lost > 0) or a check fails.

Not a test: it asserts nothing about speed, and runs as long as it is told
(bounded: each phase has a deadline).
"""

import argparse
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.system import helpers  # noqa: E402
from tests.system.helpers import Influxd, Relay, free_port, wait_until  # noqa: E402
from tests.system.workload import Writer, check_delivery, drained, greenlets, open_fds, rss_bytes, status  # noqa: E402


def _quiet(command=helpers.relay_command):
    """The relay without -v: a line per request would be the soak's biggest cost."""
    return lambda *args: command(*[a for a in args if a != "-v"])


helpers.relay_command = _quiet()


def relay_config(port, servers, buffer, work):
    text = 'shutdown-timeout = "10s"\n[[http]]\nname = "soak"\nbind-addr = "127.0.0.1:%d"\n' % port
    for name, server in zip("ab", servers):
        text += ('\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "5s"\n'
                 'buffer-size-mb = 512\nmax-delay-interval = "1s"\n' % (name, server.url))
        if buffer == "disk":
            text += 'buffer-path = "%s"\n' % (work / "buffers" / name)
    return text


class Flapper(threading.Thread):
    """Takes a server down and up at random intervals until stopped; counts what it did."""

    def __init__(self, server, rng, down, up):
        super().__init__(daemon=True)
        self.server, self.rng, self.down, self.up = server, rng, down, up
        self.state = "up"
        self.events = {"stopped": 0, "killed": 0}
        self.downtime = 0.0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.wait(self.rng.uniform(*self.up)):
            how = "killed" if self.rng.random() < 0.5 else "stopped"
            (self.server.kill if how == "killed" else self.server.stop)()
            self.events[how] += 1
            self.state = "down"
            went = time.monotonic()
            self._halt.wait(self.rng.uniform(*self.down))
            self.server.restart()
            self.downtime += time.monotonic() - went
            self.state = "up"

    def stop(self):
        self._halt.set()
        self.join(60)


def mb(n):
    return n / 1024.0 / 1024.0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="load duration (10)")
    p.add_argument("--every", type=float, default=30.0, help="seconds between report lines (30)")
    p.add_argument("--buffer", choices=("memory", "disk"), default="memory")
    p.add_argument("--threads", type=int, default=4, help="client threads (4)")
    p.add_argument("--points", type=int, default=10, help="points per request (10)")
    p.add_argument("--interval", type=float, default=0.02,
                   help="pause after each acknowledged request, per thread (0.02 s)")
    p.add_argument("--down", default="2,20", help="b's downtime range, seconds (2,20)")
    p.add_argument("--up", default="5,40", help="b's uptime range, seconds (5,40)")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    down = tuple(float(x) for x in args.down.split(","))
    up = tuple(float(x) for x in args.up.split(","))

    work = Path(os.environ.get("BENCH_WORK") or tempfile.mkdtemp(prefix="influx-relay-soak."))
    # gevent's monitor thread reports a greenlet that holds the hub for 1 s (in the relay log).
    os.environ.update(GEVENT_MONITOR_THREAD_ENABLE="true", GEVENT_MAX_BLOCKING_TIME="1",
                      PYTHONWARNINGS="ignore:Unable to monitor memory usage")
    print("# soak: %g min, %s buffers, %d threads x %d points/request, b down %s s / up %s s, "
          "seed %d; work dir %s" % (args.minutes, args.buffer, args.threads, args.points,
                                    args.down, args.up, args.seed, work), flush=True)
    a = Influxd(work / "influxd-a")
    b = Influxd(work / "influxd-b")
    relay = flapper = writer = None
    ok = False
    try:
        a.start()
        b.start()
        db = "soak_" + uuid.uuid4().hex[:6]
        for server in (a, b):
            server.create_database(db)
        port = free_port()
        relay = Relay(work / "relay", relay_config(port, (a, b), args.buffer, work), port)
        relay.start()
        pid = relay.proc.pid
        start_rss, start_fds, start_greenlets = rss_bytes(pid), open_fds(pid), greenlets(relay.url)
        writer = Writer(relay.url, db, threads=args.threads, points=args.points,
                        interval=args.interval).start()
        flapper = Flapper(b, random.Random(args.seed), down, up)
        flapper.start()
        print("%7s %9s %10s %8s %6s %9s %8s %7s %5s %9s" % (
            "t_s", "requests", "points_ok", "not_ok", "b", "b_backlog", "rss_MB", "max_MB",
            "fds", "greenlets"), flush=True)
        began = time.monotonic()
        deadline = began + args.minutes * 60
        max_rss = start_rss
        samples = []
        while True:
            now = time.monotonic()
            if now >= deadline:
                break
            time.sleep(min(args.every, deadline - now))
            rss = rss_bytes(pid)
            max_rss = max(max_rss, rss)
            sample = (open_fds(pid), greenlets(relay.url))
            samples.append(sample)
            print("%7.0f %9d %10d %8d %6s %9d %8.1f %7.1f %5d %9d" % (
                time.monotonic() - began, writer.requests, len(writer.acked),
                len(writer.unacked), flapper.state, status(relay.url)["b"]["buffered_writes"],
                mb(rss), mb(max_rss), sample[0], sample[1]), flush=True)
        flapper.stop()
        if b.proc.poll() is not None:
            b.restart()
        time.sleep(5)  # a tail of writes with both servers up
        writer.stop()
        elapsed = time.monotonic() - began
        wait_until(lambda: drained(relay.url), 600, interval=0.5, what="b's backlog delivered")
        time.sleep(2)
        end = (rss_bytes(pid), open_fds(pid), greenlets(relay.url))
        print("# load: %s" % writer.summary())
        print("# %.0f points/s acknowledged on average over %.0f s; b stopped %d, killed %d "
              "times, down %.0f s in all" % (
                  len(writer.acked) / elapsed, elapsed, flapper.events["stopped"],
                  flapper.events["killed"], flapper.downtime))
        print("# relay: RSS %.1f MB at start, %.1f MB peak, %.1f MB at the end; fds %d -> %d; "
              "greenlets %d -> %d" % (mb(start_rss), mb(max_rss), mb(end[0]), start_fds, end[1],
                                      start_greenlets, end[2]))
        checked = time.monotonic()
        try:
            figures = check_delivery(writer, (a, b), db)
        except AssertionError as e:
            print("# delivery check FAILED: %s" % e)
            raise SystemExit(1)
        print("# delivery: %d points acknowledged, present on a: %d, on b: %d; lost: 0 "
              "(%d unacknowledged, of which stored: a %d, b %d); overwritten point: last "
              "acknowledged value on both; checked in %.0f s" % (
                  figures["acknowledged"], figures["acknowledged"], figures["acknowledged"],
                  figures["unacknowledged"], figures["unacknowledged_stored"][0],
                  figures["unacknowledged_stored"][1], time.monotonic() - checked))
        problems = [line for line in relay.stderr().splitlines()
                    if "Traceback" in line or " ERROR " in line or "Blocked Stack" in line]
        print("# relay log: %d error/traceback line(s)%s" % (
            len(problems), (": " + problems[0][:300]) if problems else ""))
        ok = True
    finally:
        if flapper is not None and flapper.is_alive():
            flapper.stop()
        if writer is not None:
            writer.stop()
        if relay is not None and relay.proc is not None:
            code = relay.stop(30)
            print("# relay stopped with exit status %s" % code)
        a.stop()
        b.stop()
        if not ok:
            print("# soak did not complete; logs in %s" % work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
