"""The command line, run as a real process."""

import os
import subprocess
import sys

import pytest

from influx_relay import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args, env=None, timeout=20):
    return subprocess.run(
        [sys.executable, "-m", "influx_relay"] + list(args),
        cwd=ROOT,
        env=dict(os.environ, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def good_config(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(
        '[[http]]\nname = "h"\nbind-addr = "127.0.0.1:0"\n'
        'output = [{ name = "a", location = "http://127.0.0.1:8086/write" }]\n'
    )
    return str(path)


def test_version_both_ways():
    for args in (["--version"], ["-version"]):
        r = run_cli(*args)
        assert r.returncode == 0
        assert __version__ in r.stdout


def test_check_prints_listeners_and_outputs(good_config):
    r = run_cli("check", "--config", good_config)
    assert r.returncode == 0, r.stderr
    assert "http listener 'h' on 127.0.0.1:0" in r.stdout
    assert "a: http://127.0.0.1:8086/write" in r.stdout


def test_check_prints_each_outputs_filters(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(
        '[[http]]\nname = "h"\nbind-addr = "127.0.0.1:0"\n'
        'output = [{ name = "a", location = "http://127.0.0.1:8086/write" },\n'
        '          { name = "b", location = "http://127.0.0.1:8087/write" }]\n'
        '[[filter]]\nname = "cpu-only"\nmeasurement-expression = "^cpu$"\n'
        'tag-expression = "^(host|region)$"\noutputs = ["b"]\n'
    )
    r = run_cli("check", "--config", str(path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    at = lines.index("  -> b: http://127.0.0.1:8087/write (timeout 10s)")
    assert lines[at + 1] == ("       filter 'cpu-only': measurement =~ /^cpu$/ and "
                             "tag keys =~ /^(host|region)$/")
    assert "filter" not in lines[at - 1]  # a: no filter, every point


def test_config_path_from_the_environment(good_config):
    r = run_cli("check", env={"INFLUX_RELAY_CONFIG": good_config})
    assert r.returncode == 0, r.stderr


def test_bad_config_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(
        '[[http]]\nbind-addr = "127.0.0.1:0"\n'
        'output = [{ name = "a", location = "http://127.0.0.1:8086/write", timeout = "10x" }]\n'
    )
    for args in (["check", "--config", str(path)], ["run", "--config", str(path)], ["-config", str(path)]):
        r = run_cli(*args)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert str(path) in lines[0] and "timeout" in lines[0] and "10x" in lines[0]


def test_missing_config_file(tmp_path):
    r = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert r.returncode == 2
    assert "nope.toml" in r.stderr


def test_bind_failure_is_one_clear_line(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    path = tmp_path / "relay.toml"
    path.write_text(
        '[[http]]\nname = "busy"\nbind-addr = "127.0.0.1:%d"\n'
        'output = [{ name = "a", location = "http://127.0.0.1:8086/write" }]\n' % port
    )
    try:
        r = run_cli("-config", str(path))
    finally:
        s.close()
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr  # nothing before it: no "config loaded" line
    assert lines[0].startswith("influx-relay: http listener 'busy': cannot listen on ")
    assert str(port) in lines[0] and "in use" in lines[0]
