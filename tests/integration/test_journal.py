"""The relay under systemd, without systemd: log lines for the journal, and a
pre-start check that says nothing unless the config is broken.

systemd tells a service its stderr is the journal with ``JOURNAL_STREAM=dev:ino``;
here stderr is a file and the variable names that file (or another one), so the
real process decides exactly as it would under systemd.
"""

import os
import re
import signal
import socket
import subprocess
import sys

import urllib3

from .conftest import eventually

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def refused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_relay(tmp_path, journal_of):
    """Start the relay with stderr to a file and JOURNAL_STREAM naming
    ``journal_of(stderr path)``'s device and inode; write once through it to a
    dead backend; stop it. Returns its stderr's lines."""
    conf = tmp_path / "relay.toml"
    conf.write_text('[[http]]\nname = "h"\nbind-addr = "127.0.0.1:0"\n'
                    'output = [{ name = "dead", location = "http://127.0.0.1:%d/write", '
                    'timeout = "1s" }]\n' % refused_port())
    err_path = tmp_path / "relay.stderr"
    err_path.touch()
    st = os.stat(journal_of(err_path))
    env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
    with open(err_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "influx_relay", "run", "--config", str(conf)],
                                cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        found = eventually(lambda: re.search(r"listener 'h' on 127\.0\.0\.1:(\d+)",
                                             err_path.read_text()), timeout=15)
        assert found, err_path.read_text()
        pool = urllib3.PoolManager(retries=False, timeout=10)
        resp = pool.request("POST", "http://127.0.0.1:%s/write?db=x" % found.group(1),
                            body=b"cpu v=1 1")
        assert resp.status == 503
        assert eventually(lambda: "backend down" in err_path.read_text(), timeout=10)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    return err_path.read_text().splitlines()


def test_journal_lines_have_a_priority_and_no_timestamp(tmp_path):
    lines = run_relay(tmp_path, journal_of=lambda err: err)
    assert lines
    for line in lines:
        assert re.match(r"<[0-7]>[A-Z]+ [\w.]+: ", line), line
        assert not STAMP.match(line[3:]), line
    # journald files each line under the priority its prefix names.
    assert any(line.startswith("<6>INFO ") and "listener 'h'" in line for line in lines)
    down = [line for line in lines if "backend down" in line]
    assert down and all(re.match(r"<[34]>(WARNING|ERROR) ", line) for line in down), down


def test_stderr_elsewhere_keeps_its_timestamps(tmp_path):
    # JOURNAL_STREAM inherited from a unit, but stderr redirected to a file.
    other = tmp_path / "elsewhere"
    other.touch()
    lines = run_relay(tmp_path, journal_of=lambda err: other)
    assert lines
    assert all(STAMP.match(line) for line in lines), lines


def check(path, *args):
    return subprocess.run([sys.executable, "-m", "influx_relay", "check"] + list(args)
                          + ["--config", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=20)


def test_check_quiet_says_nothing_unless_the_config_is_broken(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text('[[http]]\nname = "h"\nbind-addr = "127.0.0.1:0"\n'
                    'output = [{ name = "a", location = "http://127.0.0.1:8086/write" }]\n')
    loud = check(path)
    assert loud.returncode == 0 and "http listener 'h'" in loud.stdout
    quiet = check(path, "--quiet")
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")

    path.write_text(path.read_text() + "no-such-key = 1\n")
    broken = check(path, "--quiet")
    assert broken.returncode == 2
    assert broken.stdout == ""
    assert len(broken.stderr.splitlines()) == 1 and "no-such-key" in broken.stderr
