"""``workers = 2``: a supervisor and two relay processes on the same ports, against
two real influxd. What an operator sees: every write lands, /status, /health and
/metrics answer for both workers, a worker that dies is started again, SIGHUP
and SIGTERM reach both, and what a layout of workers left on disk is replayed."""

import os
import signal
import socket
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import HOST, Relay, free_port, request, rows_on_both, wait_until

NS = 10 ** 9


def config(port, a, b, workers=2, buffer="buffer-size-mb = 4", extra=""):
    return ('workers = %d\n%s[[http]]\nname = "main"\nbind-addr = "%s:%d"\nadmin-enabled = true\n'
            '[[http.output]]\nname = "a"\nlocation = "%s/"\ntimeout = "2s"\n%s\n'
            'max-delay-interval = "200ms"\n'
            '[[http.output]]\nname = "b"\nlocation = "%s/"\ntimeout = "2s"\n%s\n'
            'max-delay-interval = "200ms"\n'
            % (workers, extra, HOST, port, a.url, buffer.replace("NAME", "a"), b.url,
               buffer.replace("NAME", "b")))


def children(pid):
    """The pids of a process's children (the workers of a supervisor)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return sorted(found)


def write_from_many_connections(url, db, clients, each, start):
    """``clients`` threads, each on its own connection(s), ``each`` writes; all 204."""
    failures = []

    def client(c):
        for i in range(each):
            n = start + c * each + i
            r = request("POST", url + "/write?db=" + db,
                        body=("w,client=%d v=%di %d" % (c, n, 1_600_000_000 * NS + n)).encode())
            if r.status != 204:
                failures.append(r)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[:3]
    return clients * each


def serving(relay, count=2):
    """Wait until the supervisor says every worker serves; their pids. (A worker
    process may exist a while before it listens, and /ping is answered as soon
    as one does.)"""
    wait_until(lambda: "%d workers serving" % count in relay.stderr(), 15,
               what="%d workers serving" % count)
    return children(relay.proc.pid)


def write_until_every_worker_has_some(relay, db, workers=2):
    """Writes from new connections, 8 at a time, until each worker served some:
    the kernel spreads connections by a hash, and 8 may all land on one."""
    n = 0
    for _ in range(10):
        n += write_from_many_connections(relay.url, db, clients=8, each=10, start=n)
        log = relay.stderr()
        if all('worker %d: 127.0.0.1 "POST /write' % w in log for w in range(workers)):
            return n
    pytest.fail("80 connections all went to the same worker")


def metric(text, name, **labels):
    total = 0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_two_workers_share_the_port_and_answer_as_one(tmp_path, influxd_pair, db):
    a, b = influxd_pair
    port = free_port()
    relay = Relay(tmp_path / "relay", config(port, a, b), port).start()
    try:
        pids = serving(relay)
        n = write_from_many_connections(relay.url, db, clients=8, each=25, start=0)
        rows_on_both(influxd_pair, db, "w", n)
        status = request("GET", relay.url + "/status").json()
        assert status["workers"] == status["workers_answering"] == 2
        text = request("GET", relay.url + "/metrics").body.decode()
        # Every request counted once, whichever worker served it: the sum of both.
        assert metric(text, "influx_relay_http_requests_total", path="/write", status="204") == n
        assert metric(text, "influx_relay_http_points_received_total") == n
        # Counters summed, gauges as one relay: b up in both workers is up, not 2.
        assert metric(text, "influx_relay_backend_up", output="b") == 1

        # b down: both workers buffer for it; /status and /health add them up.
        b.stop()
        m = write_from_many_connections(relay.url, db, clients=8, each=5, start=n)
        status = wait_until(lambda: (lambda s: s if s["buffered_writes"] == m else None)(
            request("GET", relay.url + "/status").json()["outputs"]["b"]), 10,
            what="b's backlog in both workers")
        assert status["state"] == "down" and status["backlog"]
        health = request("GET", relay.url + "/health/b")
        assert health.status == 503 and health.json()["status"] == "down"
        assert request("GET", relay.url + "/health/a").status == 200

        # A worker killed: started again, and the pair still answers as one.
        os.kill(pids[0], signal.SIGKILL)
        wait_until(lambda: len(children(relay.proc.pid)) == 2 and children(relay.proc.pid) != pids,
                   15, what="the killed worker started again")
        wait_until(lambda: request("GET", relay.url + "/status").json()["workers_answering"] == 2,
                   15, what="both workers answering")
        assert "worker 0" in relay.stderr() and "died (signal SIGKILL)" in relay.stderr()
        b.restart()
        wait_until(lambda: request("GET", relay.url + "/health/b").status == 200, 30,
                   what="b ready again in every worker")
        # The killed worker's memory backlog is gone (the ledger says so: a crash
        # gap, or nothing if it had none); the other's reached b.
        write_from_many_connections(relay.url, db, clients=4, each=5, start=n + m)

        # SIGHUP reaches both workers; SIGTERM stops both, in order.
        relay.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: relay.stderr().count("reloaded") >= 2, 10, what="both workers reloaded")
    finally:
        status = relay.stop()
    assert status == 0
    assert children(relay.proc.pid) == []
    assert "Traceback" not in relay.stderr()


def test_a_disk_backlog_left_by_two_workers_is_replayed_by_one(tmp_path, influxd_pair, db):
    a, b = influxd_pair
    port = free_port()
    disk = 'buffer-size-mb = 8\nbuffer-path = "%s/NAME"' % (tmp_path / "buffers")
    b.stop()
    relay = Relay(tmp_path / "relay", config(port, a, b, buffer=disk), port).start()
    try:
        serving(relay)
        n = write_until_every_worker_has_some(relay, db)
        wait_until(lambda: request("GET", relay.url + "/status").json()["outputs"]["b"][
            "buffered_writes"] == n, 10, what="b's backlog on disk in both workers")
    finally:
        assert relay.stop() == 0
    left = sorted(os.listdir(tmp_path / "buffers" / "b"))
    assert left == ["worker-0", "worker-1"]
    # Back to one relay process: it replays both workers' directories to b.
    b.restart()
    single = Relay(tmp_path / "relay1", config(port, a, b, workers=1, buffer=disk), port,
                   name="single").start()
    try:
        rows_on_both(influxd_pair, db, "w", n, timeout=30)
        wait_until(lambda: not any(d.startswith("worker-") for d in os.listdir(
            tmp_path / "buffers" / "b")), 20, what="the workers' directories removed")
        assert "left in" in single.stderr() and "by a worker that no longer runs" in single.stderr()
    finally:
        assert single.stop() == 0


def test_systemd_hears_ready_once_every_worker_serves(tmp_path, monkeypatch, influxd_pair):
    a, b = influxd_pair
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    port = free_port()
    relay = Relay(tmp_path / "relay", config(port, a, b), port).start(wait_http=False)
    try:
        ready = sock.recv(4096).decode().split("\n")
        assert "READY=1" in ready and "STATUS=2 workers" in ready
        # Both serve by then: 20 new connections are shared between them.
        assert len(children(relay.proc.pid)) == 2
        for _ in range(20):
            assert request("GET", relay.url + "/ping").status == 204
        relay.proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode() == "STOPPING=1"
        assert relay.proc.wait(20) == 0
    finally:
        sock.close()
        relay.stop()

