"""Real clients of InfluxDB's write APIs, writing through the real relay into two real
influxd: Debian's ``influx`` CLI (``-import``), Debian's Prometheus (remote write,
with the shipped alerting rules and dashboard queries evaluated on what it scraped),
the 1.x ``influxdb`` Python package (HTTP and UDP), and collectd's
``write_influxdb_udp`` plugin (UDP). Each is checked by what both databases hold.

scripts/test.sh installs the programs (scripts/setup-env.sh, SETUP_TEST_PACKAGES).
"""

import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from .conftest import http_relay_config
from .helpers import HOST, Influxd, free_port, request, stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]


def program(path, package):
    if os.access(path, os.X_OK):
        return path
    if os.environ.get("INFLUX_RELAY_REQUIRE_SYSTEM_TESTS") == "1":
        pytest.fail("%s not found (apt-get install %s; scripts/test.sh does)" % (path, package))
    pytest.skip("%s not found: apt-get install %s (scripts/test.sh does)" % (path, package))


def same_rows(servers, db, measurement, at_least):
    """Wait until every server holds the same rows of measurement, at least that many."""
    def check():
        rows = [s.rows(db, measurement) for s in servers]
        return rows[0] if len(rows[0]) >= at_least and all(r == rows[0] for r in rows) else None
    return wait_until(check, 20, what="the same %s rows (>= %d) on every server"
                      % (measurement, at_least))


def test_influx_cli_import_writes_through_the_relay(tmp_path, influxd_pair, db, relay_for):
    influx = program("/usr/bin/influx", "influxdb-client")
    relay = relay_for(influxd_pair)
    lines = ["cpu,host=a,region=eu usage=1.5 1600000000000000000",
             "cpu,host=b,region=eu usage=2.5 1600000000000000000",
             'events,host=a text="quoted, with spaces" 1600000001000000000']
    dump = tmp_path / "import.txt"
    # The file a user has: `influx_inspect export` writes both sections. The DDL runs
    # as queries, which the relay does not serve; the DML is written.
    dump.write_text("# DDL\nCREATE DATABASE %s\n\n# DML\n# CONTEXT-DATABASE: %s\n"
                    "# CONTEXT-RETENTION-POLICY: autogen\n%s\n" % (db, db, "\n".join(lines)))
    r = subprocess.run([influx, "-import", "-path", str(dump), "-precision", "ns",
                        "-host", HOST, "-port", str(relay.port)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "Processed 3 inserts" in out and "Failed 0 inserts" in out, out
    # What the README says: the DDL line fails against the relay (no /query)...
    assert "error: not found" in out, out  # the relay's 404 for /query
    # ...and the writes are on both servers, byte for byte what the file said.
    cpu = same_rows(influxd_pair, db, "cpu", 2)
    assert [(row["host"], row["usage"], row["time"]) for row in cpu] == \
        [("a", 1.5, 1600000000000000000), ("b", 2.5, 1600000000000000000)]
    events = same_rows(influxd_pair, db, "events", 1)
    assert events[0]["text"] == "quoted, with spaces"


def test_influxdb_python_client_over_http_and_udp(influxd_pair, db, relay_factory, relay_port):
    influxdb = pytest.importorskip("influxdb", reason="pip install -r requirements-dev.txt")
    a, b = influxd_pair
    udp_port = free_port(socket.SOCK_DGRAM)
    config = http_relay_config(relay_port, [a, b]) + (
        '\n[[udp]]\nname = "u"\nbind-addr = "%s:%d"\noutput = [\n'
        '  { name = "a", location = "%s:%d" },\n  { name = "b", location = "%s:%d" },\n]\n'
        % (HOST, udp_port, HOST, a.udp_port, HOST, b.udp_port))
    relay = relay_factory(config, relay_port)

    client = influxdb.InfluxDBClient(host=HOST, port=relay.port, database=db, timeout=10)
    assert client.ping()  # the relay's X-Influxdb-Version
    points = [{"measurement": "temp", "tags": {"room": "r%d" % i},
               "fields": {"celsius": 20.0 + i}, "time": 1600000000 + i} for i in range(50)]
    assert client.write_points(points, time_precision="s", batch_size=20) is True
    assert client.write(["temp,room=line celsius=30.5 1600000100"],
                        params={"db": db, "precision": "s"}, protocol="line") is True
    rows = same_rows(influxd_pair, db, "temp", 51)
    assert {(row["room"], row["celsius"], row["time"]) for row in rows} == \
        {("r%d" % i, 20.0 + i, (1600000000 + i) * 10**9) for i in range(50)} | \
        {("line", 30.5, 1600000100 * 10**9)}

    # UDP has no precision parameter: the receiving influxd reads ns (its default).
    udp = influxdb.InfluxDBClient(host=HOST, use_udp=True, udp_port=udp_port)
    udp.send_packet({"points": [{"measurement": "udp_temp", "tags": {"room": "u%d" % i},
                                 "fields": {"celsius": 10.0 + i},
                                 "time": (1600000200 + i) * 10**9} for i in range(5)]})
    rows = same_rows(influxd_pair, "udpdb", "udp_temp", 5)
    assert sorted((row["room"], row["time"]) for row in rows) == \
        [("u%d" % i, (1600000200 + i) * 10**9) for i in range(5)]


class MillisecondUDPInfluxd(Influxd):
    """influxd whose UDP listener reads timestamps in ms (as collectd sends them)."""

    def _write_config(self):
        conf = super()._write_config()
        conf.write_text(conf.read_text().replace(
            '  batch-timeout = "100ms"\n', '  batch-timeout = "100ms"\n  precision = "ms"\n'))
        return conf


def test_collectd_over_udp(tmp_path, relay_factory, relay_port):
    collectd = program("/usr/sbin/collectd", "collectd-core")
    servers = []
    try:
        for name in ("a", "b"):
            servers.append(MillisecondUDPInfluxd(tmp_path / ("influxd-" + name),
                                                 udp_database="collectd").start())
        for s in servers:
            s.create_database("collectd")
        udp_port = free_port(socket.SOCK_DGRAM)
        relay_factory(
            http_relay_config(relay_port, servers) +
            '\n[[udp]]\nname = "u"\nbind-addr = "%s:%d"\nprecision = "ms"\noutput = [\n%s]\n'
            % (HOST, udp_port, "".join('  { name = "%s", location = "%s:%d" },\n'
                                       % (n, HOST, s.udp_port) for n, s in zip("ab", servers))),
            relay_port)
        d = tmp_path / "collectd"
        d.mkdir()
        conf = d / "collectd.conf"
        conf.write_text(
            'Hostname "relay-test"\nFQDNLookup false\nInterval 1\nBaseDir "%(d)s"\n'
            'PIDFile "%(d)s/collectd.pid"\nPluginDir "/usr/lib/collectd"\n'
            'TypesDB "/usr/share/collectd/types.db"\n'
            # FlushInterval: a datagram a second, not one per full packet (about 15 s).
            "LoadPlugin load\n<LoadPlugin write_influxdb_udp>\n  FlushInterval 1\n</LoadPlugin>\n"
            '<Plugin write_influxdb_udp>\n  Server "%(host)s" "%(port)d"\n</Plugin>\n'
            % {"d": d, "host": HOST, "port": udp_port})
        with open(d / "collectd.log", "wb") as log:
            proc = subprocess.Popen([collectd, "-f", "-C", str(conf)], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: len(servers[0].rows("collectd", "load")) >= 2, 20,
                       what="collectd's load points on a")
        finally:
            stop_process(proc)
        rows = same_rows(servers, "collectd", "load", 2)
        assert {row["host"] for row in rows} == {"relay-test"}
        assert all(isinstance(row["shortterm"], float) for row in rows)
        now_ns = time.time() * 1e9
        assert all(abs(row["time"] - now_ns) < 120e9 for row in rows), rows  # ms, read as ms
    finally:
        for s in servers:
            s.stop()


def dashboard_queries():
    dash = json.loads((REPO / "contrib" / "grafana-dashboard.json").read_text())
    out = []

    def walk(panels):
        for p in panels:
            out.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(dash["panels"])
    return out


def prom_api(port, path, **params):
    r = request("GET", "http://%s:%d%s?%s" % (HOST, port, path, urllib.parse.urlencode(params)),
                timeout=10)
    assert r.status == 200, r
    body = r.json()
    assert body["status"] == "success", body
    return body["data"]


def test_prometheus_remote_write_through_the_relay(tmp_path, influxd_pair, relay_for):
    prometheus = program("/usr/bin/prometheus", "prometheus")
    a, b = influxd_pair
    for s in influxd_pair:
        s.create_database("prom")
    relay = relay_for(influxd_pair)
    web = free_port()
    d = tmp_path / "prometheus"
    d.mkdir()
    conf = d / "prometheus.yml"
    # Prometheus scrapes the relay, evaluates the shipped rules, and remote-writes
    # everything through the relay into both influxd.
    conf.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - %(rules)s\n"
        "scrape_configs:\n  - job_name: relay\n    static_configs:\n"
        "      - targets: ['%(host)s:%(port)d']\n"
        "remote_write:\n  - url: http://%(host)s:%(port)d/api/v1/prom/write?db=prom\n"
        "    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n"
        "      max_backoff: 1s\n"
        % {"rules": REPO / "contrib" / "prometheus-rules.yml", "host": HOST, "port": relay.port})
    with open(d / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [prometheus, "--config.file=%s" % conf, "--storage.tsdb.path=%s" % (d / "data"),
             "--web.listen-address=%s:%d" % (HOST, web), "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(d),
            start_new_session=True)
    try:
        # Series land in both databases: Prometheus's own view of the relay ("up")
        # and the relay's metrics.
        wait_until(lambda: any(row.get("job") == "relay" and row["value"] == 1
                               for row in a.rows("prom", "up"))
                   and b.rows("prom", "influx_relay_http_requests_total"), 30,
                   what="remote-written series in influxd (log: %s)" % (d / "prometheus.log"))
        # The shipped rules load and evaluate against a live relay without errors...
        def rules_evaluated():
            groups = prom_api(web, "/api/v1/rules")["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("20")
                                          and r["health"] == "ok" for r in rules) else None
        rules = wait_until(rules_evaluated, 15, what="the shipped rules evaluated")
        assert len(rules) >= 5
        # ...and with every backend up, no alert fires.
        assert prom_api(web, "/api/v1/alerts")["alerts"] == []
        # Every dashboard query runs on Prometheus (Grafana's variables filled in), and
        # those on the relay's own write counters return data.
        for expr in dashboard_queries():
            q = expr.replace("$__rate_interval", "1m")
            q = re.sub(r"\$\{?\w+\}?", ".*", q)
            prom_api(web, "/api/v1/query", query=q)
        assert prom_api(web, "/api/v1/query",
                        query="influx_relay_http_requests_total")["result"]
    finally:
        assert stop_process(proc, timeout=20) == 0, (d / "prometheus.log").read_text()[-3000:]
    # Stopped, Prometheus has sent what it had; both databases end up with the same points.
    for measurement in ("up", "influx_relay_http_requests_total"):
        same_rows(influxd_pair, "prom", measurement, 1)
