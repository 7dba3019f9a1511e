"""Replicas that converge, through the real relay process and two real influxd:
the causes of a gap (a full buffer, /admin/flush, buffer-max-age, a memory buffer
at shutdown or at a crash), the ledger that names them, and ``influx-relay
repair`` (or repair = "auto") bringing b to exactly a's content, compared by a
full SELECT * GROUP BY * of every measurement (and field types) on both."""

import json
import signal

import pytest

from .dataset import END, START, dump, new_db, rich_lines
from .helpers import HOST, Relay, free_port, request, run_cli, wait_until

NS = 10 ** 9
TOKEN = "r3pair-token"


def config(port, a, b, state, buffer="buffer-size-mb = 1", extra=""):
    return ('state-dir = "%s"\nshutdown-timeout = "1s"\n[[http]]\nname = "main"\nbind-addr = "%s:%d"\n'
            'admin-enabled = true\nadmin-token = "%s"\n%s\n'
            '[[http.output]]\nname = "a"\nlocation = "%s/"\ntimeout = "2s"\n%s\n'
            'max-delay-interval = "200ms"\n'
            '[[http.output]]\nname = "b"\nlocation = "%s/"\ntimeout = "2s"\n%s\n'
            'max-delay-interval = "200ms"\n'
            % (state, HOST, port, TOKEN, extra, a.url, buffer, b.url, buffer))


def admin(relay, method, path):
    return request(method, relay.url + path, headers={"Authorization": "Bearer " + TOKEN},
                   timeout=30)


def send(relay, db, lines, rp=None, per_request=200):
    for i in range(0, len(lines), per_request):
        params = {"db": db}
        if rp:
            params["rp"] = rp
        r = relay.write(b"\n".join(lines[i:i + per_request]), **params)
        assert r.status == 204, r


def outputs(relay):
    return request("GET", relay.url + "/status").json()["outputs"]


def drained(relay):
    return not any(o["backlog"] for o in outputs(relay).values())


def same(a, b, places):
    for db, rp in places:
        da, db_ = dump(a, db, rp), dump(b, db, rp)
        assert da, (db, rp)  # something was written there
        assert da == db_, (db, rp)


def repair_cli(path):
    out = run_cli("repair", "--config", str(path), timeout=120)
    return out.returncode, out.stdout.decode(), out.stderr.decode()


@pytest.fixture
def setup(tmp_path, influxd_pair):
    a, b = influxd_pair
    db1, db2 = new_db(influxd_pair, rps=("week",)), new_db(influxd_pair)
    return a, b, db1, db2, tmp_path


def lines_of(n, offset):
    """``n`` rich points, shifted by ``offset`` seconds: distinct from other calls'."""
    return rich_lines(n=n, start=START + offset * NS, end=END + offset * NS)


def test_a_full_buffer_is_repaired_to_exactly_what_a_holds(setup):
    a, b, db1, db2, tmp = setup
    port = free_port()
    path = tmp / "relay" / "relay.toml"
    relay = Relay(tmp / "relay", config(port, a, b, tmp / "state"), port).start()
    try:
        b.stop()
        # 1 MB of buffer: about 3 MB of writes overflow it.
        for k in range(10):
            send(relay, db1, lines_of(600, 1000 * k))
            send(relay, db1, lines_of(300, 1000 * k + 500), rp="week")
            send(relay, db2, lines_of(300, 1000 * k + 700))
        b.restart()
        wait_until(lambda: drained(relay), 60, what="b's backlog delivered")
        gaps = outputs(relay)["b"]["gaps"]
        assert gaps["points"] > 0
        reasons = {k for r in gaps["ranges"] for k in r["reasons"]}
        assert reasons == {"full"}
        assert {(r["db"], r["rp"]) for r in gaps["ranges"]} <= {(db1, ""), (db1, "week"), (db2, "")}
        out = run_cli("gaps", "-c", str(path)).stdout.decode()
        assert "point(s) missing" in out and db1 in out
        status = request("GET", relay.url + "/health/b")
        assert status.status == 503 and status.json()["status"] == "gap"
        assert dump(a, db1, "") != dump(b, db1, "")  # b really lacks points

        dry = run_cli("repair", "-c", str(path), "--dry-run").stdout.decode()
        rows = dry.splitlines()
        assert rows[0].split()[-2:] == ["FROM", "WHY"] or "COPY FROM" in rows[0]
        assert len(rows) > 1 and all(row.startswith("b ") and row.endswith(" a") for row in rows[1:])

        code, stdout, stderr = repair_cli(path)
        assert code == 0, (stdout, stderr)
        assert "repaired: a, b miss nothing" in stdout
        same(a, b, [(db1, ""), (db1, "week"), (db2, "")])
        assert outputs(relay)["b"]["gaps"] == {"points": 0, "ranges": []}
        assert request("GET", relay.url + "/health/b").status == 200
    finally:
        assert relay.stop() == 0


def test_a_repair_killed_midway_resumes_and_converges(setup):
    a, b, db1, _, tmp = setup
    port = free_port()
    path = tmp / "relay" / "relay.toml"
    text = config(port, a, b, tmp / "state", extra="repair-rate-limit = 3000")
    relay = Relay(tmp / "relay", text, port).start()
    try:
        b.stop()
        for k in range(30):  # 1.8 MB: most of it past the 1 MB buffer
            send(relay, db1, lines_of(600, 1000 * k))
        b.restart()
        wait_until(lambda: drained(relay), 60, what="b's backlog delivered")
        before = outputs(relay)["b"]["gaps"]["points"]
        assert before > 3000
        started = admin(relay, "POST", "/admin/repair")
        assert started.status == 202, started
        wait_until(lambda: admin(relay, "GET", "/admin/repair").json()["repair"][
            "points_copied"] >= 3000, 30, what="the repair under way")
    finally:
        relay.proc.send_signal(signal.SIGKILL)
        relay.proc.wait(10)
    # The ledger kept what was left (state-dir): less than before, not nothing.
    relay = Relay(tmp / "relay", text.replace("repair-rate-limit = 3000", ""), port).start()
    try:
        left = outputs(relay)["b"]["gaps"]["points"]
        assert 0 < left < before
        code, stdout, stderr = repair_cli(path)
        assert code == 0, (stdout, stderr)
        same(a, b, [(db1, "")])
    finally:
        assert relay.stop() == 0


def test_flush_max_age_shutdown_and_crash_are_gaps_and_auto_repair_converges(setup):
    a, b, db1, db2, tmp = setup
    port = free_port()
    text = config(port, a, b, tmp / "state", buffer="buffer-size-mb = 8\nbuffer-max-age = \"2s\"",
                  extra='repair = "auto"')
    relay = Relay(tmp / "relay", text, port).start()
    try:
        b.stop()
        send(relay, db1, lines_of(200, 0))          # expires after 2 s in b's buffer
        wait_until(lambda: "expired" in json.dumps(outputs(relay)["b"]["gaps"]), 20,
                   what="an expired gap")
        send(relay, db1, lines_of(200, 5000))       # flushed by an admin
        flushed = admin(relay, "POST", "/admin/flush?output=b")
        assert flushed.json()["flushed"]["b"]["writes"] > 0
        send(relay, db2, lines_of(200, 9000))       # still buffered when the relay stops
    finally:
        assert relay.stop() == 0
    relay = Relay(tmp / "relay", text, port).start()
    try:
        send(relay, db2, lines_of(200, 13000))      # buffered when the relay is killed
    finally:
        relay.proc.send_signal(signal.SIGKILL)
        relay.proc.wait(10)
    relay = Relay(tmp / "relay", text, port).start()
    try:
        reasons = {k for r in outputs(relay)["b"]["gaps"]["ranges"] for k in r["reasons"]}
        assert {"expired", "flushed", "shutdown", "crash"} <= reasons, reasons
        b.restart()
        # No command: repair = "auto" copies it all once b answers.
        wait_until(lambda: outputs(relay)["b"]["gaps"]["points"] == 0, 90,
                   what="b repaired by itself")
        same(a, b, [(db1, ""), (db2, "")])
        wait_until(lambda: request("GET", relay.url + "/health/b").status == 200, 10,
                   what="b ready")
    finally:
        assert relay.stop() == 0

