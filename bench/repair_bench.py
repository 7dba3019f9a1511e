#!/usr/bin/env python3
"""Repair copy speed between two local influxd, next to direct writes of the same points.

  repair_bench.py --a PORT_A --b PORT_B --shared DIR [--points 200000] [--batch 5000]
                  [--repeat 3] [--rate 0] [--out results.jsonl]

Run by bench/repair_bench.sh with the relay's interpreter and PYTHONPATH (the code measured).
Per run, in new databases: DIR/send_points.py writes POINTS points (lp_gen.py shapes, unique
timestamps) in POSTs of BATCH lines over one connection straight to influxd A (the source of
the repair) and, the same points, straight to influxd B (the write the repair competes with);
then influx_relay.repair.copy_range copies the whole range from A to B (outputs made from a
config as the relay makes them, no rate limit unless --rate), timed, with this process's CPU
time and peak RSS; B's count(*) must then equal POINTS. One JSON line per run on stdout.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
import urllib.parse
import urllib.request

from influx_relay import config, repair
from influx_relay.output import Output

BASE_TS = 1700000000000000000  # lp_gen.py: line i at BASE_TS + i s


def query(port, q, db=None):
    params = {"q": q}
    if db:
        params["db"] = db
    req = urllib.request.Request("http://127.0.0.1:%d/query" % port,
                                 data=urllib.parse.urlencode(params).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def count(port, db):
    """Points in db: per measurement, the largest count of its fields."""
    total = 0
    for result in query(port, "SELECT count(*) FROM /.*/", db)["results"]:
        for s in result.get("series") or ():
            total += max(v for c, v in zip(s["columns"], s["values"][0])
                         if c.startswith("count_") and v is not None)
    return total


def send(shared, port, db, points, batch):
    out = subprocess.run([sys.executable, "%s/send_points.py" % shared, "http://127.0.0.1:%d" % port,
                          "--points", str(points), "--batch", str(batch), "--concurrency", "1",
                          "--db", db], check=True, capture_output=True, text=True, timeout=600)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["points_2xx"] != points:
        sys.exit("send_points.py to %d: %s" % (port, result))
    return result


def outputs(port_a, port_b):
    text = '[[http]]\nname = "bench"\nbind-addr = "127.0.0.1:1"\n'
    for name, port in (("a", port_a), ("b", port_b)):
        text += ('\n[[http.output]]\nname = "%s"\nlocation = "http://127.0.0.1:%d/"\n'
                 'timeout = "30s"\n' % (name, port))
    cfg = config.loads(text)
    return [Output.from_config(o, buffered=False) for o in cfg.http[0].outputs]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", type=int, required=True)
    ap.add_argument("--b", type=int, required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--points", type=int, default=200000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=float, default=0)
    a = ap.parse_args()
    source, target = outputs(a.a, a.b)
    end = BASE_TS + (a.points - 1) * 10 ** 9
    for run in range(1, a.repeat + 1):
        src_db, direct_db = "repair_src_%d" % run, "repair_direct_%d" % run
        for port in (a.a, a.b):
            query(port, 'CREATE DATABASE "%s"' % src_db)
        query(a.b, 'CREATE DATABASE "%s"' % direct_db)
        direct_a = send(a.shared, a.a, src_db, a.points, a.batch)
        direct_b = send(a.shared, a.b, direct_db, a.points, a.batch)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        result = repair.copy_range(source, target, src_db, "", BASE_TS, end, batch_points=a.batch,
                                   limiter=repair.limiter(a.rate), expected_points=a.points)
        elapsed = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        on_b = count(a.b, src_db)
        print(json.dumps({
            "run": run, "points": a.points, "batch": a.batch,
            "direct_a_pts_s": direct_a["points_per_s"], "direct_b_pts_s": direct_b["points_per_s"],
            "repair_s": round(elapsed, 3), "repair_pts_s": round(result.points / elapsed),
            "repair_cpu_s": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 3),
            "rss_peak_mb": round(cpu1.ru_maxrss / 1024, 1), "done": result.done,
            "reason": result.reason, "batches": result.batches, "slices": result.slices,
            "on_b": on_b, "complete": result.done and on_b == a.points,
        }), flush=True)
        for port in (a.a, a.b):
            query(port, 'DROP DATABASE "%s"' % src_db)
        query(a.b, 'DROP DATABASE "%s"' % direct_db)
    source.close()
    target.close()


if __name__ == "__main__":
    main()
