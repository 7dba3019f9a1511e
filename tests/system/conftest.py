"""Fixtures that start real influxd and relay processes on free 127.0.0.1 ports.

Every test in tests/system is marked ``system`` and skipped when influxd is missing
(``bash scripts/test.sh`` installs it). With INFLUX_RELAY_REQUIRE_SYSTEM_TESTS=1,
as .ci/run sets, a missing influxd fails the tests instead of skipping them.
"""

import os
import uuid
from pathlib import Path

import pytest

from .helpers import INFLUXD, Influxd, Relay, free_port, influxd_available

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    ours = [item for item in items if HERE in Path(str(item.fspath)).resolve().parents]
    if not ours:
        return
    missing = not influxd_available()
    required = os.environ.get("INFLUX_RELAY_REQUIRE_SYSTEM_TESTS") == "1"
    for item in ours:
        item.add_marker(pytest.mark.system)
        if missing and not required:
            item.add_marker(pytest.mark.skip(
                reason="%s not found: system tests need InfluxDB 1.x "
                       "(apt-get install influxdb, or run bash scripts/test.sh)" % INFLUXD))


@pytest.fixture
def influxd_factory(tmp_path):
    """start(name, udp_database=None) -> a running Influxd; all are stopped at teardown."""
    started = []

    def start(name, udp_database=None):
        if not influxd_available():
            pytest.fail("%s not found but INFLUX_RELAY_REQUIRE_SYSTEM_TESTS=1" % INFLUXD)
        server = Influxd(tmp_path / ("influxd-" + name), udp_database=udp_database)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def influxd_pair(influxd_factory):
    """Two running influxd, each with UDP line protocol into database "udpdb"."""
    return influxd_factory("a", udp_database="udpdb"), influxd_factory("b", udp_database="udpdb")


@pytest.fixture
def db(influxd_pair):
    """A database created directly on both servers of influxd_pair."""
    name = "t_" + uuid.uuid4().hex[:8]
    for server in influxd_pair:
        server.create_database(name)
    return name


@pytest.fixture
def relay_factory(tmp_path):
    """start(config_text, port) -> a running Relay answering /ping.

    At teardown each relay still running gets SIGTERM and must exit 0 within 10 s.
    Its stderr is in relay.stderr_path (printed when a test fails).
    """
    started = []

    def start(config_text, port, name="relay", wait_http=True):
        relay = Relay(tmp_path / "relay", config_text, port, name=name)
        started.append(relay)
        return relay.start(wait_http=wait_http)

    yield start
    problems = []
    for relay in started:
        running = relay.proc.poll() is None
        status = relay.stop()
        if running and status != 0:
            problems.append("relay %s exited %s after SIGTERM; stderr:\n%s"
                            % (relay.config_path.name, status, relay.stderr()[-3000:]))
    assert not problems, "\n".join(problems)


@pytest.fixture
def relay_port():
    return free_port()


def http_relay_config(port, servers, style="seed", timeout="5s", name="t"):
    """[[http]] config with one output per server, in either config format."""
    if style == "seed":
        outputs = ", ".join(
            '{ name = "%s", location = "%s/write", timeout = "%s" }' % (n, s.url, timeout)
            for n, s in zip("abcdefgh", servers))
        return ('[[http]]\nname = "%s"\nbind-addr = "127.0.0.1:%d"\noutput = [ %s ]\n'
                % (name, port, outputs))
    if style == "veepee":
        text = '[[http]]\nname = "%s"\nbind-addr = "127.0.0.1:%d"\n' % (name, port)
        for n, s in zip("abcdefgh", servers):
            text += ('\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "%s"\n'
                     % (n, s.url, timeout))
        return text
    raise ValueError(style)


@pytest.fixture
def relay_for(relay_factory, relay_port):
    """relay_for(servers, style="seed") -> a running Relay writing to those servers."""
    def start(servers, style="seed"):
        return relay_factory(http_relay_config(relay_port, servers, style=style), relay_port)
    return start


@pytest.fixture
def hub_watch(monkeypatch):
    """Relays started in the test run gevent's monitor thread: a greenlet that keeps the
    hub for a second or more (a busy loop, a blocking call) is reported on stderr, with
    its stack. :func:`assert_hub_never_blocked` checks that none was."""
    monkeypatch.setenv("GEVENT_MONITOR_THREAD_ENABLE", "true")
    monkeypatch.setenv("GEVENT_MAX_BLOCKING_TIME", "1")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore:Unable to monitor memory usage")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the relay's stderr and influxd logs to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    tmp = item.funcargs.get("tmp_path")
    if tmp is None:
        return
    for path in sorted(Path(tmp).glob("relay/*.stderr")) + sorted(Path(tmp).glob("influxd-*/influxd.log")):
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        report.sections.append(("%s (last 4000 chars)" % path.name, text[-4000:]))
