"""The UDP path: datagrams in, stamped line protocol out to every UDP output."""

import time

import pytest

from .conftest import eventually, send, udp_config


def test_datagrams_reach_every_output_stamped_alike(relay, udp_sinks):
    a, b = udp_sinks(), udp_sinks()
    r = relay(udp_config(a, b, precision="s"))
    before = int(time.time())
    send(r, b"cpu v=1\ncpu v=2 42\n")
    eventually(lambda: len(a.lines) == 2 and len(b.lines) == 2)
    assert a.lines == b.lines
    stamped, kept = a.lines
    assert kept == b"cpu v=2 42"
    assert before <= int(stamped.rsplit(b" ", 1)[1]) <= int(time.time())


def test_payloads_are_split_on_line_boundaries_within_the_mtu(relay, udp_sinks):
    a = udp_sinks()
    r = relay(udp_config(a, mtu=100))
    lines = [b"cpu,host=h%02d value=%d %d" % (i, i, 1000 + i) for i in range(40)]
    send(r, b"\n".join(lines))
    eventually(lambda: len(a.lines) == 40)
    assert a.lines == lines
    assert len(a.datagrams) > 1
    assert all(len(d) <= 100 for d in a.datagrams)


def test_a_line_longer_than_the_mtu_is_dropped_alone(relay, udp_sinks):
    a = udp_sinks()
    r = relay(udp_config(a, mtu=64))
    long_line = b"cpu,host=" + b"x" * 100 + b" v=1 1"
    send(r, b"cpu v=1 1\n" + long_line + b"\ncpu v=2 2")
    eventually(lambda: len(a.lines) == 2)
    assert a.lines == [b"cpu v=1 1", b"cpu v=2 2"]
    assert r.relay.udp[0].outputs[0].dropped == 1


def test_malformed_datagram_is_dropped_and_the_listener_keeps_going(relay, udp_sinks):
    a = udp_sinks()
    r = relay(udp_config(a))
    send(r, b"this is not line protocol", b"\xff\xfe\x00garbage", b"cpu v=1 1")
    eventually(lambda: a.lines)
    assert a.lines == [b"cpu v=1 1"]
    assert r.relay.udp[0].malformed == 2


def _datagram_of(size):
    """A datagram of exactly ``size`` bytes: distinct timestamped lines, the last
    one padded to fit (so a cut anywhere changes a line or loses one)."""
    lines = []
    total = 0
    i = 0
    while True:
        line = b"big,n=%06d value=%di %d" % (i, i, 1700000000000000000 + i)
        if total + len(line) + 1 > size - 80:
            break
        lines.append(line)
        total += len(line) + 1
        i += 1
    pad = size - total - len(b'last s="" 1800000000000000000')
    lines.append(b'last s="' + b"x" * pad + b'" 1800000000000000000')
    data = b"\n".join(lines)
    assert len(data) == size
    return data, lines


@pytest.mark.parametrize("size", [8192, 9 * 1024, 32 * 1024, 65507])
def test_datagrams_up_to_the_largest_are_read_whole(relay, udp_sinks, size):
    """Every line of a datagram of up to 65,507 bytes arrives as sent (gevent's
    DatagramServer would read only its first 8192 bytes and cut a line in two)."""
    a = udp_sinks()
    r = relay(udp_config(a, mtu=65507))
    data, lines = _datagram_of(size)
    send(r, data)
    eventually(lambda: len(a.lines) >= len(lines))
    assert a.lines == lines
    assert r.relay.udp[0].malformed == 0
