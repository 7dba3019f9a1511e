#!/usr/bin/env python3
"""The table of bench/compare.sh, from the results.tsv that run_http_bench.sh appended to.

    compare_table.py RESULTS_TSV ROUNDS_TSV TARGET... -- CASE...

Each row of RESULTS_TSV is one wrk run, labelled "target|round|kind" by compare.sh (kind
"fresh": the relay was restarted just before, for a clean peak RSS; the case is then shown
with a "*"). Writes every run, with the relay CPU per point added, to ROUNDS_TSV, and prints
per case the median over rounds of each target's req/s, p99 and CPU per point, the ratios
ours / faster Go relay and ours / ceiling, the peak RSS of fresh cases, and the error counts;
then each round's req/s, so that the spread can be seen. A target "oursN" is our relay with
workers = N: a column of its own, plus "oursN / ours" (req/s) when both were measured; ours / Go
is always that of "ours" (1 worker). Standard library only.
"""
import csv
import statistics
import sys

SHORT = {"ceiling": "ceil", "ours": "ours", "veepee": "veepee", "influxdata": "idata"}
# oursN (our relay with workers = N) is shown as "oursN", "oN" in the errors column
LETTER = {"ceiling": "c", "ours": "o", "veepee": "v", "influxdata": "i"}


def letter(target):
    if target.startswith("ours") and target[4:].isdigit():
        return "o" + target[4:]
    return LETTER.get(target, target[0])
GO = ("veepee", "influxdata")


def num(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def load(path):
    runs = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            parts = row["label"].split("|")
            if len(parts) != 3:
                continue  # not written by compare.sh
            target, rnd, kind = parts
            case = "%sx%s%s" % (row["lines"], row["conns"], "*" if kind == "fresh" else "")
            req, pts, cpu = num(row["req_s"]), num(row["points_s"]), num(row["target_cpu_pct"])
            us = cpu / 100 / pts * 1e6 if cpu is not None and pts else None
            runs.append(dict(target=target, round=int(rnd), case=case, req_s=req, points_s=pts,
                             p50_ms=num(row["p50_ms"]), p99_ms=num(row["p99_ms"]),
                             errors=int(row["errors"] or 0), cpu_pct=cpu, us_per_point=us,
                             rss_mb=num(row["target_peak_rss_mb"]) if kind == "fresh" else None,
                             busy_pct=num(row["machine_busy_pct"])))
    return runs


def median(runs, target, case, key):
    values = [r[key] for r in runs if r["target"] == target and r["case"] == case
              and r[key] is not None]
    return statistics.median(values) if values else None


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main():
    results, rounds_out = sys.argv[1], sys.argv[2]
    sep = sys.argv.index("--")
    targets, cases = sys.argv[3:sep], sys.argv[sep + 1:]
    runs = load(results)
    keys = ["target", "round", "case", "req_s", "points_s", "p50_ms", "p99_ms", "errors",
            "cpu_pct", "us_per_point", "rss_mb", "busy_pct"]
    with open(rounds_out, "w", newline="") as f:
        w = csv.writer(f, delimiter="\t")
        w.writerow(keys)
        for r in sorted(runs, key=lambda r: (r["case"], r["target"], r["round"])):
            w.writerow(["" if r[k] is None else r[k] for k in keys])

    relays = [t for t in targets if t != "ceiling"]
    n_rounds = len({r["round"] for r in runs})
    cols = [SHORT.get(t, t) for t in targets]
    rcols = [SHORT.get(t, t) for t in relays]
    # column groups: a title over the names of its columns, each column wide enough for the title
    scaled = [t for t in relays if t != "ours" and t.startswith("ours") and "ours" in targets]
    titles = ["req/s (median of %d)" % n_rounds, "ours /", "p99 ms", "relay CPU us/point",
              "peak RSS MB"]
    names = [cols, ["Go", "ceil"], cols, cols, rcols]
    minw = [9, 7, 8, 8, 8]
    if scaled:  # oursN / ours, after "ours / Go, ceil"
        if len(scaled) == 1:  # "ours2 /" over "ours"
            titles.insert(2, "%s /" % scaled[0])
            names.insert(2, ["ours"])
        else:                 # "/ ours" over "ours2 ours4"
            titles.insert(2, "/ ours")
            names.insert(2, [SHORT.get(t, t) for t in scaled])
        minw.insert(2, 7)
    widths = [max(w, -(-(len(t) + 1) // max(1, len(n)))) for t, n, w in zip(titles, names, minw)]

    def line(first, groups, last):
        return "%-10s|%s| %s" % (first, "|".join(
            "".join("%*s" % (w, c) for c in cells) for cells, w in zip(groups, widths)), last)

    print("%-10s|%s| %s" % ("", "|".join(
        ("%-*s" % (w * len(n), " " + t)) for t, n, w in zip(titles, names, widths)), "errors"))
    print(line("case", names, "/".join(letter(t) for t in targets)))
    for case in cases:
        req = {t: median(runs, t, case, "req_s") for t in targets}
        go = [(req[t], t) for t in GO if t in req and req[t]]
        ours, ceil = req.get("ours"), req.get("ceiling")
        if go and ours:
            best, name = max(go)
            vs_go = "%.2f%s" % (ours / best, name[0])
        else:
            vs_go = "-"
        vs_ceil = "%.2f" % (ours / ceil) if ours and ceil else "-"
        errors = "/".join(str(sum(r["errors"] for r in runs if r["target"] == t and r["case"] == case))
                          if any(r["target"] == t and r["case"] == case for r in runs) else "-"
                          for t in targets)
        groups = [[fmt(req[t], ".0f") for t in targets], [vs_go, vs_ceil]]
        if scaled:
            groups.append(["%.2f" % (req[t] / ours) if req[t] and ours else "-" for t in scaled])
        print(line(case, groups + [
            [fmt(median(runs, t, case, "p99_ms"), ".2f") for t in targets],
            [fmt(median(runs, t, case, "us_per_point"), ".2f") for t in targets],
            [fmt(median(runs, t, case, "rss_mb"), ".1f") for t in relays]], errors))
    print("# per round req/s (rounds in order; the order of targets rotates from round to round):")
    for case in cases:
        parts = []
        for t in targets:
            values = [r["req_s"] for r in sorted(runs, key=lambda r: r["round"])
                      if r["target"] == t and r["case"] == case]
            parts.append("%s %s" % (SHORT.get(t, t), " ".join(fmt(v, ".0f") for v in values) or "-"))
        print("#   %-9s %s" % (case, " | ".join(parts)))


if __name__ == "__main__":
    main()
