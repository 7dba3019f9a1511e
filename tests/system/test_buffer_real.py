"""Retry buffers against real InfluxDB: a server stopped and restarted under writes."""

import hashlib
import json

from .conftest import http_relay_config
from .helpers import request, wait_until


def buffered_config(port, servers, extra=""):
    text = http_relay_config(port, servers, style="veepee", timeout="2s")
    return text.replace(
        'timeout = "2s"\n',
        'timeout = "2s"\nbuffer-size-mb = 64\nmax-delay-interval = "300ms"\n%s' % extra,
    )


def checksum(server, db):
    rows = server.rows(db, "m")
    return len(rows), hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def status(relay):
    return request("GET", relay.url + "/status").json()["outputs"]


def test_a_restarted_influxd_catches_up_and_both_hold_the_same_rows(
    influxd_pair, db, relay_factory, relay_port
):
    a, b = influxd_pair
    relay = relay_factory(buffered_config(relay_port, [a, b]), relay_port)
    sent = 0

    def write_batch(n):
        nonlocal sent
        # Half the lines carry no timestamp: the relay stamps them, once for both servers.
        lines = []
        for i in range(sent, sent + n):
            ts = "" if i % 2 else " %d" % (1_600_000_000_000_000_000 + i)
            lines.append("m,host=h%d,k=%d v=%di,s=\"x %d\"%s" % (i % 7, i, i, i, ts))
        r = relay.write("\n".join(lines), db=db)
        assert r.status == 204, r
        sent += n

    write_batch(50)
    b.stop()
    for _ in range(30):
        write_batch(20)
    s = status(relay)["b"]
    # 30, or 31 when b was stopped with the first batch's request in flight.
    assert s["backlog"] and s["buffered_writes"] in (30, 31)
    b.restart()
    for _ in range(10):  # writes during the drain go behind the backlog
        write_batch(20)
    wait_until(lambda: status(relay)["b"]["direct"], 20, what="backlog drained")
    expected = sent
    wait_until(lambda: checksum(a, db)[0] == expected and checksum(b, db)[0] == expected, 10,
               what="both servers hold %d points" % expected)
    assert a.rows(db, "m") == b.rows(db, "m")


def test_a_point_overwritten_during_an_outage_ends_equal_everywhere(
    influxd_pair, db, relay_factory, relay_port
):
    a, b = influxd_pair
    relay = relay_factory(buffered_config(relay_port, [a, b]), relay_port)
    b.stop()
    for value in range(40):  # the same point (series and time), ever-new values
        r = relay.write("m,host=x v=%di 1600000000000000000" % value, db=db)
        assert r.status == 204
    b.restart()
    for value in range(40, 60):
        assert relay.write("m,host=x v=%di 1600000000000000000" % value, db=db).status == 204
    wait_until(lambda: status(relay)["b"]["direct"], 20, what="backlog drained")
    wait_until(lambda: b.rows(db, "m"), 10, what="b has the point")
    assert a.rows(db, "m") == b.rows(db, "m") == [
        {"time": 1600000000000000000, "host": "x", "v": 59}
    ]


def test_disk_buffers_survive_sigkill_and_deliver_every_acknowledged_point(
    influxd_pair, db, relay_factory, relay_port, tmp_path
):
    a, b = influxd_pair
    disk = 'buffer-path = "%s/buf-{name}"\nbuffer-sync = "os"\n' % tmp_path
    text = buffered_config(relay_port, [a, b])
    # One buffer directory per output.
    parts = text.split("[[http.output]]")
    text = parts[0] + "".join(
        "[[http.output]]" + part.replace('buffer-size-mb = 64\n',
                                         'buffer-size-mb = 64\n' + disk.format(name=n))
        for n, part in zip("ab", parts[1:])
    )
    relay = relay_factory(text, relay_port, name="first")
    acked = []

    def write(i):
        line = "m,k=%d v=%di" % (i, i)  # stamped by the relay
        r = relay.write(line, db=db)
        if r.status == 204:
            acked.append(i)
        return r.status

    for i in range(20):
        assert write(i) == 204
    b.stop()
    for i in range(20, 220):
        assert write(i) == 204
    assert status(relay)["b"]["buffered_writes"] >= 200
    relay.proc.kill()  # SIGKILL: nothing gets to run
    relay.proc.wait(5)

    b.restart()
    relay = relay_factory(text, relay_port, name="second")
    for i in range(220, 240):
        write(i)
    wait_until(lambda: status(relay)["b"]["direct"], 20, what="b's backlog replayed")
    wait_until(lambda: len(b.rows(db, "m")) >= len(acked), 10, what="b holds every point")
    keys_a = {int(row["k"]) for row in a.rows(db, "m")}
    keys_b = {int(row["k"]) for row in b.rows(db, "m")}
    assert set(acked) <= keys_a and set(acked) <= keys_b
    # Replayed points carry the time the relay stamped before the kill: same rows.
    assert a.rows(db, "m") == b.rows(db, "m")
