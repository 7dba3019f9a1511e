"""Operating the real relay process: SIGHUP reloads, /metrics, logs."""

import signal
import socket
import threading
import time

from prometheus_client.parser import text_string_to_metric_families

from .conftest import http_relay_config
from .helpers import request, wait_until


def writer(relay, db, measurement):
    """Write one point per request, point i at time i, until stopped; keep the statuses."""
    state = {"statuses": [], "stop": False}

    def run():
        i = 0
        while not state["stop"]:
            resp = relay.write("%s,writer=w v=%di %d" % (measurement, i, i + 1), db=db)
            state["statuses"].append(resp.status)
            i += 1
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop():
        state["stop"] = True
        thread.join(10)
        return state["statuses"]

    return state, stop


def times(server, db, measurement):
    return [row["time"] for row in server.rows(db, measurement)]


def test_sighup_adds_an_output_while_writes_flow(influxd_pair, db, relay_factory, relay_port):
    a, b = influxd_pair
    relay = relay_factory(http_relay_config(relay_port, [a]), relay_port)
    state, stop = writer(relay, db, "flow")
    try:
        wait_until(lambda: len(state["statuses"]) >= 20, 10, what="writes before the reload")
        relay.config_path.write_text(http_relay_config(relay_port, [a, b]))
        relay.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reloaded" in relay.stderr(), 10, what="the reload log line")
        after_reload = len(state["statuses"])
        wait_until(lambda: len(state["statuses"]) >= after_reload + 20, 10,
                   what="writes after the reload")
    finally:
        statuses = stop()
    assert set(statuses) == {204}, "a write failed during the reload"
    n = len(statuses)
    wait_until(lambda: len(times(a, db, "flow")) == n, 10, what="every point on a")
    assert times(a, db, "flow") == list(range(1, n + 1))
    on_b = set(times(b, db, "flow"))
    # b gets every write from (at the latest) the moment the reload was logged.
    assert set(range(after_reload + 2, n + 1)) <= on_b
    assert on_b <= set(range(1, n + 1))
    err = relay.stderr()
    assert "reload: http listener 't': output 'b' added" in err
    assert " ERROR " not in err


def test_sighup_with_a_broken_config_keeps_serving(influxd_pair, db, relay_factory, relay_port):
    a, b = influxd_pair
    good = http_relay_config(relay_port, [a, b])
    relay = relay_factory(good, relay_port)
    relay.config_path.write_text(good.replace('timeout = "5s"', 'timeout = "5 seconds"', 1))
    relay.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: " ERROR " in relay.stderr(), 10, what="the reload error line")
    assert relay.write("kept v=1i 1", db=db).status == 204
    wait_until(lambda: all(times(s, db, "kept") == [1] for s in (a, b)), 10,
               what="the write on both servers")
    errors = [line for line in relay.stderr().splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert "reload rejected" in errors[0] and '"5 seconds" is not a duration' in errors[0]
    assert relay.proc.poll() is None
    assert relay.stop() == 0


def test_metrics_count_what_was_sent(influxd_pair, db, relay_factory, relay_port):
    a, b = influxd_pair
    relay = relay_factory(http_relay_config(relay_port, [a, b]), relay_port)
    for i in range(7):
        body = "m,i=%d v=1i %d\nm,i=%d v=2i %d\nm,i=%d v=3i %d" % (i, 3 * i + 1, i, 3 * i + 2,
                                                                   i, 3 * i + 3)
        assert relay.write(body, db=db).status == 204
    assert relay.write("m v=1i 1", db="no_such_db").status == 404

    def scrape():
        resp = request("GET", relay.url + "/metrics")
        assert resp.status == 200
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(resp.body.decode())
                for s in f.samples}

    def ok_writes(m, output):
        return m.get(("influx_relay_output_writes_total",
                      (("listener", "t"), ("output", output), ("result", "ok"))))

    # The slower backend's answer may come after the client's: wait for it.
    m = wait_until(lambda: (lambda m: m if ok_writes(m, "a") == ok_writes(m, "b") == 7 else None)(
        scrape()), 10, what="both backends' answers counted")
    assert m[("influx_relay_http_requests_total",
              (("listener", "t"), ("path", "/write"), ("status", "204")))] == 7
    assert m[("influx_relay_http_requests_total",
              (("listener", "t"), ("path", "/write"), ("status", "404")))] == 1
    assert m[("influx_relay_http_points_received_total", (("listener", "t"),))] == 22
    for output in ("a", "b"):
        key = (("listener", "t"), ("output", output))
        assert m[("influx_relay_output_writes_total", key + (("result", "rejected"),))] == 1
        assert m[("influx_relay_output_write_duration_seconds_count", key)] == 8
        assert m[("influx_relay_backend_up", key)] == 1
    assert m[("process_resident_memory_bytes", ())] > 0


def test_systemd_hears_ready_reloading_and_stopping(tmp_path, monkeypatch, relay_factory,
                                                    relay_port, influxd_pair):
    """Under Type=notify: READY=1 only once the relay answers, RELOADING=1 then
    READY=1 around a SIGHUP, STOPPING=1 on SIGTERM (systemd's sd_notify)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    heard = []

    def next_message():
        message = sock.recv(4096).decode()
        heard.append(message)
        return message.split("\n")

    try:
        relay = relay_factory(http_relay_config(relay_port, influxd_pair), relay_port,
                              wait_http=False)
        ready = next_message()
        assert "READY=1" in ready
        assert request("GET", relay.url + "/ping").status == 204  # listening by then
        assert any(s.startswith("STATUS=") for s in ready)

        relay.proc.send_signal(signal.SIGHUP)
        reloading = next_message()
        assert "RELOADING=1" in reloading
        assert any(s.startswith("MONOTONIC_USEC=") for s in reloading)
        assert "READY=1" in next_message()

        relay.proc.send_signal(signal.SIGTERM)
        assert next_message() == ["STOPPING=1"]
        assert relay.proc.wait(15) == 0
    finally:
        sock.close()
    print(heard)
