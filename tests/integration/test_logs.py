"""The relay process's logs: events that matter, JSON lines, and never a credential."""

import json
import os
import re
import signal
import socket
import subprocess
import sys

import gevent
import urllib3

from .conftest import eventually

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PASSWORD = "pw-Zq81x"
BASIC = "Ym9iOnB3LVpxODF4"  # base64("bob:pw-Zq81x")
TOKEN = "tok-Hh27JkL0"


class Process(object):
    """``influx-relay run`` in a subprocess, its stderr collected as it comes."""

    def __init__(self, tmp_path, config_text, *args):
        path = tmp_path / "relay.toml"
        path.write_text(config_text)
        self.err_path = tmp_path / "relay.stderr"
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "influx_relay", "run", "--config", str(path)] + list(args),
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            )
        found = eventually(lambda: re.search(r"listener 'h' on 127\.0\.0\.1:(\d+)", self.stderr()),
                           timeout=15)
        assert found, self.stderr()
        self.url = "http://127.0.0.1:%s" % found.group(1)

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            # Wait cooperatively: the fake backends live in this process's hub.
            eventually(lambda: self.proc.poll() is not None, timeout=15)
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait()


def refused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(*locations):
    outputs = ", ".join('{ name = "o%d", location = "%s", timeout = "1s", buffer-size-mb = 1 }'
                        % (i, loc) for i, loc in enumerate(locations))
    return ('shutdown-timeout = "1s"\n[[http]]\nname = "h"\nbind-addr = "127.0.0.1:0"\n'
            "output = [ %s ]\n" % outputs)


def send_with_credentials(url):
    pool = urllib3.PoolManager(retries=False, timeout=10)
    statuses = []
    for i, headers in enumerate([{"Authorization": "Basic " + BASIC},
                                 {"Authorization": "Token " + TOKEN}, {}]):
        resp = pool.request("POST", url + "/write?db=x&u=bob&p=%s" % PASSWORD,
                            body=b"cpu v=%d %d" % (i, i + 1), headers=headers)
        statuses.append(resp.status)
    resp = pool.request("POST", url + "/write?db=x&u=bob&p=%s" % PASSWORD, body=b"not line protocol")
    statuses.append(resp.status)
    return statuses


def test_credentials_never_reach_the_logs(tmp_path, backends):
    failing = backends(mode=("status", 500, b'{"error":"engine down"}'))
    rejecting = backends(mode=("status", 400, b'{"error":"partial write"}'))
    dead = "http://127.0.0.1:%d/write" % refused_port()
    p = Process(tmp_path, config(failing.url + "/write", rejecting.url + "/write", dead), "-v")
    try:
        statuses = send_with_credentials(p.url)
        assert statuses == [400, 400, 400, 400]
        gevent.sleep(0.5)  # let the failures be logged
    finally:
        assert p.stop() == 0
    err = p.stderr()
    # The failures were logged, with the backend names, and -v logged each request...
    assert "output o0: backend down: HTTP 500" in err
    assert "output o2: backend down: connection failed" in err
    assert err.count("POST /write?db=x&u=bob&p=*** ") == 4
    # ...but no credential made it.
    for secret in (PASSWORD, BASIC, TOKEN):
        assert secret not in err


def test_json_logs_parse_line_by_line(tmp_path, backends):
    good = backends()
    dead = "http://127.0.0.1:%d/write" % refused_port()
    p = Process(tmp_path, config(good.url + "/write", dead), "--log-format", "json")
    try:
        pool = urllib3.PoolManager(retries=False, timeout=10)
        for i in range(3):
            assert pool.request("POST", p.url + "/write?db=x&p=" + PASSWORD,
                                body=b"cpu v=1 %d" % (i + 1)).status == 204
        assert eventually(lambda: "backend down" in p.stderr())
    finally:
        assert p.stop() == 0
    lines = p.stderr().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    messages = [r["message"] for r in records]
    assert any(m.startswith("config ") and "1 http listener(s), 0 udp listener(s), 2 output(s)" in m
               for m in messages)
    assert any("backend down" in m and "o1" in m for m in messages)
    assert any(m == "stopped" for m in messages)
    down = [r for r in records if "backend down" in r["message"]]
    assert down[0]["level"] == "WARNING" and down[0]["logger"] == "influx_relay.output"
    # One line per event: the outage is announced once, not once per write or retry.
    assert sum("output o1" in m for m in messages) == 2
    assert "output o1: shutting down with 3 buffered write(s): 3 point(s) lost" in messages
    assert PASSWORD not in p.stderr()
