"""The operator files in contrib/: the Grafana dashboard and the Prometheus rules.

Every metric name their PromQL expressions use must be one a real relay serves:
a relay is started with fake backends, made to write, fail, reject, buffer and
take UDP, so that every family has samples, and its /metrics is scraped. The
names are read out of the expressions generically (whatever a new panel or
rule uses is checked too). promtool, from Debian's prometheus package, checks
the rules file and the syntax of every dashboard expression.
"""

import json
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import eventually, http_config, udp_config

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
DASHBOARD = CONTRIB / "grafana-dashboard.json"
RULES = CONTRIB / "prometheus-rules.yml"

# PromQL words that look like names but are not metrics.
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2"}
# Grafana's variables, as Grafana would substitute them before querying.
GRAFANA_RANGES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def metric_names(expr):
    """The metric names a PromQL expression selects (functions, labels, keywords,
    strings, durations and Grafana variables left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                                    # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                   # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)                                  # $vars
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if e[m.end():].lstrip().startswith("("):  # a function call
            continue
        if m.group().lower() not in KEYWORDS:
            names.add(m.group())
    return names


def test_metric_names_are_read_out_of_promql():
    assert metric_names(
        'histogram_quantile(0.99, sum by (output, le) (rate(a_bucket{x=~"$y", z="w"}[$__rate_interval])))'
        ' / on (instance) group_left b_total offset 5m > bool 0.5 or vector(0)'
    ) == {"a_bucket", "b_total"}
    assert metric_names("(c / (d > 0)) > 0.8 and ignoring(le) e{a=\"}\"}") == {"c", "d", "e"}


def dashboard_queries():
    """(where, PromQL) of every panel target and template variable of the dashboard."""
    dash = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append(("panel %r %s" % (p.get("title"), t.get("refId")), t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash["templating"]["list"]:
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.match(r"^\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*$", q)
        out.append(("variable %r" % v["name"], m.group(1) if m else q))
    return out


def rule_queries():
    rules = yaml.safe_load(RULES.read_text())
    return [("rule %r" % (r.get("alert") or r.get("record")), r["expr"])
            for g in rules["groups"] for r in g["rules"]]


def as_prometheus_would_run(expr):
    """A dashboard expression with Grafana's variables substituted."""
    for name, value in GRAFANA_RANGES.items():
        expr = expr.replace("$" + name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


@pytest.fixture
def scraped_names(relay, backends, udp_sinks):
    """Sample names of a real relay's /metrics after writes that fill every family."""
    good = backends()
    down = backends()
    down.stop()  # refused: its writes are buffered
    sink = udp_sinks()
    text = http_config(
        '{ name = "good", location = "%s/write", timeout = "1s" }' % good.url,
        '{ name = "down", location = "%s/write", timeout = "1s", buffer-size-mb = 1 }' % down.url,
    ) + "\n" + udp_config(sink)
    r = relay(text)
    assert r.write(b"cpu v=1 1").status == 204                 # good ok, down buffered
    good.script = [("status", 400, b'{"error":"bad field"}')]
    assert r.write(b"cpu v=2 2").status == 400                 # rejected
    good.script = [("status", 500, b'{"error":"engine down"}')]
    assert r.write(b"cpu v=3 3").status == 500                 # failed everywhere
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"cpu v=4 4", r.udp_address)
        s.sendto(b"not line protocol", r.udp_address)
    assert eventually(lambda: sink.datagrams, timeout=5)
    resp = r.get("/metrics")
    assert resp.status == 200
    names = {s.name for f in text_string_to_metric_families(resp.data.decode()) for s in f.samples}
    assert "influx_relay_output_buffer_bytes" in names
    return names


def test_every_metric_the_dashboard_and_rules_use_is_served(scraped_names):
    queries = dashboard_queries() + rule_queries()
    used = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, "%s: no metric found in %r" % (where, expr)
        for name in names:
            used.setdefault(name, []).append(where)
    missing = {name: where for name, where in used.items() if name not in scraped_names}
    assert not missing, "not in a real scrape of /metrics: %s" % json.dumps(missing, indent=1)
    # What the dashboard promises to show (issue 16) is there.
    for family in ("influx_relay_output_writes_total", "influx_relay_http_points_received_total",
                   "influx_relay_http_requests_total", "influx_relay_output_buffer_bytes",
                   "influx_relay_output_buffer_oldest_age_seconds",
                   "influx_relay_output_dropped_writes_total",
                   "influx_relay_output_retries_total",
                   "influx_relay_output_write_duration_seconds_bucket",
                   "influx_relay_backend_up"):
        assert family in used, "the dashboard and rules do not use %s" % family


def test_the_dashboard_is_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    ids, rows = [], 0
    for p in dash["panels"]:
        ids.append(p["id"])
        assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        if p["type"] == "row":
            rows += 1
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    assert rows >= 2 and len(ids) - rows >= 10
    names = [v["name"] for v in dash["templating"]["list"]]
    assert names[0] == "datasource"
    # Every $variable a query uses is defined.
    for where, expr in dashboard_queries():
        for var in re.findall(r"\$\{?(\w+)\}?", expr):
            assert var in names or var in GRAFANA_RANGES, "%s: $%s is not defined" % (where, var)


def promtool():
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("INFLUX_RELAY_REQUIRE_SYSTEM_TESTS") == "1":
            pytest.fail("promtool not found (apt-get install prometheus; scripts/test.sh does)")
        pytest.skip("promtool not found: apt-get install prometheus (scripts/test.sh does)")
    return path


def test_promtool_accepts_the_rules():
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: %d rules found" % len(rule_queries()) in r.stdout


def test_every_dashboard_expression_is_valid_promql(tmp_path):
    # Each expression, variables substituted, as a recording rule: promtool parses them all.
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": "dashboard:query_%d" % i, "expr": as_prometheus_would_run(expr)}
        for i, (_, expr) in enumerate(queries)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    r = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, "%s\n%s\n%s" % (r.stdout, r.stderr, "\n".join(
        "query_%d = %s: %s" % (i, where, expr) for i, (where, expr) in enumerate(queries)))
    assert "SUCCESS: %d rules found" % len(queries) in r.stdout
