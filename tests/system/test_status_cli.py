"""``influx-relay status`` and ``influx-relay gaps`` against a running relay and two
real influxd: what an operator types, and what they read."""

import time

from .helpers import HOST, Relay, free_port, request, run_cli, wait_until

NS = 10 ** 9


def config(port, a, b, top=""):
    return (top + '[[http]]\nname = "main"\nbind-addr = "%s:%d"\nadmin-enabled = true\n'
            'admin-token = "s3cret-token"\n'
            '[[http.output]]\nname = "a"\nlocation = "%s/"\ntimeout = "2s"\nbuffer-size-mb = 1\n'
            '[[http.output]]\nname = "b"\nlocation = "%s/"\ntimeout = "2s"\nbuffer-size-mb = 1\n'
            'max-delay-interval = "200ms"\n'
            % (HOST, port, a.url, b.url))


def test_status_and_gaps_say_what_each_output_is_doing(tmp_path, influxd_pair, db):
    a, b = influxd_pair
    port = free_port()
    path = tmp_path / "relay" / "relay.toml"
    text = config(port, a, b, 'state-dir = "%s"\n' % (tmp_path / "state"))
    # The relay is not running yet: one line that says so, and where it looked.
    path.parent.mkdir(parents=True)
    path.write_text(text)
    out = run_cli("status", "--config", str(path))
    assert out.returncode == 1
    err = out.stderr.decode()
    assert "no answer from the relay's listener 'main'" in err
    assert "http://127.0.0.1:%d" % port in err and "Is it running?" in err
    assert "Traceback" not in err

    relay = Relay(tmp_path / "relay", text, port).start()
    try:
        b.stop()
        stamp = time.time_ns()
        for i in range(5):
            resp = relay.write("cpu,i=%d v=1i %d" % (i, stamp + i), db=db)
            assert resp.status == 204, resp
        wait_until(lambda: "down" in run_cli("status", "-c", str(path)).stdout.decode(), 10,
                   what="b down in influx-relay status")
        lines = run_cli("status", "-c", str(path)).stdout.decode().splitlines()
        assert lines[0] == 'listener "main": 2 output(s)'
        header, row_a, row_b = lines[1], lines[2], lines[3]
        assert header.split()[:4] == ["OUTPUT", "STATE", "BACKLOG", "WRITES"]
        assert row_a.split()[:2] == ["a", "ok"]
        assert row_b.split()[:2] == ["b", "down"] and " 5 " in row_b

        # An admin empties b's buffer: those five points are a gap now.
        flushed = request("POST", relay.url + "/admin/flush?output=b",
                          headers={"Authorization": "Bearer s3cret-token"})
        assert flushed.status == 200, flushed
        out = run_cli("gaps", "-c", str(path)).stdout.decode()
        assert out.startswith('listener "main": 5 point(s) missing in 1 range(s)'), out
        row = [line for line in out.splitlines() if line.startswith("b ")]
        assert len(row) == 1 and db in row[0] and "(default)" in row[0]
        assert "flushed 5" in row[0]
        status = request("GET", relay.url + "/status").json()["outputs"]["b"]["gaps"]
        assert status["points"] == 5
        (rng,) = status["ranges"]
        assert (rng["start"], rng["end"]) == (stamp, stamp + 4)
    finally:
        assert relay.stop() == 0
    # The ledger outlives the relay (state-dir): a restart still knows the gap.
    b.restart()
    relay = Relay(tmp_path / "relay", text, port).start()
    try:
        out = run_cli("gaps", "-c", str(path)).stdout.decode()
        assert "5 point(s) missing in 1 range(s)" in out
        metrics = request("GET", relay.url + "/metrics").body.decode()
        assert 'influx_relay_gap_points{listener="main",output="b"} 5.0' in metrics
    finally:
        assert relay.stop() == 0
