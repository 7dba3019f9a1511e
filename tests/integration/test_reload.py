"""Reloading the config (what SIGHUP does), in process: what changes and what stays."""

import logging
import socket

import gevent
import urllib3
from gevent.event import Event

from influx_relay import config

from .conftest import buffered, eventually, http_config, point, send, status, udp_config


def reload(r, text):
    """Write ``text`` over the relay's config file and reload it, as SIGHUP does."""
    with open(r.relay.config.path, "w") as f:
        f.write(text)
    return r.relay.reload()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_output_added_while_writes_flow_gets_the_writes_after_it(relay, backends):
    a, b = backends(), backends()
    r = relay(http_config(a))
    results = []
    done = Event()

    def writer():
        i = 0
        while not done.is_set():
            results.append(r.write(point(i)).status)
            i += 1
            gevent.sleep(0.005)

    g = gevent.spawn(writer)
    gevent.sleep(0.2)
    assert reload(r, http_config(a, b)) is True
    n_at_reload = len(results)
    gevent.sleep(0.2)
    done.set()
    g.join()
    assert set(results) == {204}
    assert len(results) > n_at_reload + 5
    eventually(lambda: len(a.lines) == len(results))
    assert b.lines  # it gets every write made after the reload...
    assert b.lines == a.lines[-len(b.lines):]  # ...the latest ones, in order
    assert len(b.lines) >= len(results) - n_at_reload - 1


def test_unchanged_outputs_keep_their_buffer_and_connections(relay, backends):
    a, b, c = backends(), backends(), backends()
    b.stop()
    r = relay(buffered(a, b))
    before = {o.name: o for o in r.relay.http[0].app.fanout.outputs}
    for i in range(5):
        assert r.write(point(i)).status == 204
    assert status(r)["b1"]["buffered_writes"] == 5
    text = buffered(a, b).replace("output = [\n", 'output = [\n  { name = "c", location = "%s/write" },\n' % c.url)
    assert reload(r, text) is True
    after = {o.name: o for o in r.relay.http[0].app.fanout.outputs}
    assert after["b0"] is before["b0"] and after["b1"] is before["b1"]
    assert status(r)["b1"]["buffered_writes"] == 5  # the backlog survived
    requests_before = len(a.requests)
    assert r.write(point(5)).status == 204
    eventually(lambda: c.lines == [point(5)])
    b.start()
    eventually(lambda: len(b.lines) == 6, timeout=10)
    assert b.lines == [point(i) for i in range(6)]
    assert len(a.requests) == requests_before + 1


def test_a_broken_config_changes_nothing(relay, backends, caplog):
    a, b = backends(), backends()
    r = relay(http_config(a))
    caplog.set_level(logging.INFO)
    text = http_config(a, b).replace('timeout = "2s"', 'timeout = "2x"')
    assert reload(r, text) is False
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "reload rejected" in errors[0].getMessage()
    assert '"2x" is not a duration' in errors[0].getMessage()
    assert r.write(point(1)).status == 204
    assert a.lines == [point(1)] and b.lines == []
    # A later good reload works.
    assert reload(r, http_config(a, b)) is True
    assert r.write(point(2)).status == 204
    eventually(lambda: b.lines == [point(2)])


def test_a_new_listener_that_cannot_bind_changes_nothing(relay, backends, caplog):
    a = backends()
    r = relay(http_config(a))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        text = http_config(a) + http_config(a).replace('"test"', '"second"').replace(
            "127.0.0.1:0", "127.0.0.1:%d" % port)
        caplog.set_level(logging.ERROR)
        assert reload(r, text) is False
        assert "cannot listen on" in caplog.records[-1].getMessage()
        assert len(r.relay.http) == 1
        assert r.write(point(1)).status == 204
    finally:
        taken.close()


def test_listeners_added_moved_and_removed(relay, backends):
    a = backends()
    r = relay(http_config(a))
    old_port = r.relay.http[0].address[1]
    p1, p2 = free_port(), free_port()
    text = (http_config(a).replace("127.0.0.1:0", "127.0.0.1:%d" % p1)
            + http_config(a).replace('"test"', '"other"').replace("127.0.0.1:0", "127.0.0.1:%d" % p2))
    assert reload(r, text) is True
    pool = urllib3.PoolManager(retries=False, timeout=2)
    for port in (p1, p2):
        resp = pool.request("POST", "http://127.0.0.1:%d/write?db=x" % port, body=point(port))
        assert resp.status == 204
    eventually(lambda: sorted(a.lines) == sorted([point(p1), point(p2)]))
    # The old address is closed once its listener has stopped.
    def refused():
        try:
            socket.create_connection(("127.0.0.1", old_port), timeout=1).close()
        except OSError:
            return True
        return False
    eventually(refused)
    # Dropping the second listener stops it; the first keeps serving.
    assert reload(r, text.split("[[http]]")[0] + "[[http]]" + text.split("[[http]]")[1]) is True
    assert [listener.name for listener in r.relay.http] == ["test"]
    eventually(lambda: _refused(p2))
    assert pool.request("POST", "http://127.0.0.1:%d/write?db=x" % p1, body=b"m v=1 1").status == 204


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_changed_listener_settings_keep_the_socket(relay, backends):
    a = backends()
    r = relay(http_config(a))
    port = r.relay.http[0].address[1]
    assert r.write(b"x" * 200 + b" v=1 1").status == 204
    assert reload(r, http_config(a, listener_extra="max-body-size = 100")) is True
    assert r.relay.http[0].address[1] == port  # the same port, never closed
    resp = r.write(b"x" * 200 + b" v=1 1")
    assert resp.status == 413
    assert r.write(b"m v=1 1").status == 204


def test_a_removed_output_drains_its_backlog_within_the_shutdown_timeout(relay, backends):
    a, b, c = backends(), backends(), backends()
    b.stop()
    r = relay('shutdown-timeout = "3s"\n' + buffered(a, b, c))
    for i in range(3):
        assert r.write(point(i)).status == 204
    assert status(r)["b1"]["buffered_writes"] == 3
    assert reload(r, 'shutdown-timeout = "3s"\n' + buffered(a, c).replace('"b1"', '"b2"')) is True
    assert set(status(r)) == {"b0", "b2"}
    b.start()  # the removed output still delivers what it held
    eventually(lambda: len(b.lines) == 3, timeout=5)
    assert b.lines == [point(i) for i in range(3)]


def test_udp_outputs_change_without_dropping_the_socket(relay, udp_sinks):
    a, b = udp_sinks(), udp_sinks()
    r = relay(udp_config(a))
    listener = r.relay.udp[0]
    send(r, b"cpu v=1 1")
    eventually(lambda: a.lines == [b"cpu v=1 1"])
    assert reload(r, udp_config(a, b)) is True
    assert r.relay.udp[0] is listener
    send(r, b"cpu v=2 2")
    eventually(lambda: b.lines == [b"cpu v=2 2"])
    assert a.lines == [b"cpu v=1 1", b"cpu v=2 2"]
    # Another precision rebuilds the listener on the same socket.
    assert reload(r, udp_config(a, b, precision="s")) is True
    assert r.relay.udp[0] is not listener
    assert r.udp_address[1] == listener.cfg.port or r.relay.udp[0].address == listener.address
    send(r, b"cpu v=3 3")
    eventually(lambda: b.lines[-1:] == [b"cpu v=3 3"])


def test_reloads_are_counted_in_metrics(relay, backends):
    from .test_metrics import scrape, value

    a = backends()
    r = relay(http_config(a))
    assert reload(r, "not toml [") is False
    assert reload(r, http_config(a)) is True
    m = scrape(r)
    assert value(m, "influx_relay_config_reloads_total", result="ok") == 1
    assert value(m, "influx_relay_config_reloads_total", result="failed") == 1
    assert value(m, "influx_relay_config_last_reload_successful") == 1


def test_the_config_in_use_is_the_new_one(relay, backends):
    a = backends()
    r = relay(http_config(a))
    assert reload(r, 'shutdown-timeout = "7s"\n' + http_config(a)) is True
    assert r.relay.config == config.load(r.relay.config.path)
    assert r.relay.config.shutdown_timeout == 7


def test_a_renamed_listener_keeps_its_socket_and_counts_under_its_new_name(relay, backends):
    from .test_metrics import scrape, value

    a = backends()
    port = free_port()
    text = http_config(a).replace("127.0.0.1:0", "127.0.0.1:%d" % port)
    r = relay(text)
    assert r.write(point(1)).status == 204
    assert reload(r, text.replace('"test"', '"renamed"')) is True
    assert [listener.name for listener in r.relay.http] == ["renamed"]
    assert r.write(point(2)).status == 204
    m = scrape(r)
    assert value(m, "influx_relay_http_requests_total",
                 listener="renamed", path="/write", status="204") == 1
    assert value(m, "influx_relay_http_points_received_total", listener="renamed") == 1
    assert value(m, "influx_relay_http_points_received_total", listener="test") is None


def test_a_changed_filter_takes_effect(relay, backends):
    a, b = backends(), backends()
    base = http_config(a, b)
    r = relay(base)
    assert r.write(b"cpu v=1 1\nmem v=2 2").status == 204
    eventually(lambda: a.lines and b.lines)
    assert b.lines == [b"cpu v=1 1", b"mem v=2 2"]
    filtered = base + '\n[[filter]]\nname = "only-cpu"\nmeasurement-expression = "^cpu$"\noutputs = ["b1"]\n'
    assert reload(r, filtered) is True
    assert r.write(b"cpu v=3 3\nmem v=4 4").status == 204
    eventually(lambda: len(a.lines) == 4 and len(b.lines) == 3)
    assert b.lines[-1] == b"cpu v=3 3"
