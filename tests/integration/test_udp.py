"""The UDP path: datagrams in, stamped line protocol out to every UDP output."""

import socket
import time

from .conftest import eventually


def udp_config(*sinks, mtu=1024, precision="n"):
    outputs = ",\n  ".join(
        '{ name = "s%d", location = "%s", mtu = %d }' % (i, s.location, mtu) for i, s in enumerate(sinks)
    )
    return (
        '[[udp]]\nname = "u"\nbind-addr = "127.0.0.1:0"\nprecision = "%s"\nread-buffer = 1048576\n'
        "output = [\n  %s,\n]\n" % (precision, outputs)
    )


def send(relay, *datagrams):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for d in datagrams:
        s.sendto(d, relay.udp_address)
    s.close()


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
