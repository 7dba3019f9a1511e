"""A UDP output whose host does not resolve yet: it drops and counts what it is
sent, tries again (at most every RESOLVE_EVERY seconds), and sends from the
first success. DNS is the fault here: the resolver answers "no such name" for
one host until the test lets it resolve (to a real UDP sink)."""

import logging
import socket
import time

import gevent

from influx_relay import udp_listener

from .conftest import eventually


def test_an_output_sends_once_its_host_resolves(relay, udp_sinks, monkeypatch, caplog):
    good, late = udp_sinks(), udp_sinks()
    real = socket.getaddrinfo
    asked = []
    dns = {"up": False}

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "late.invalid":
            asked.append(host)
            if not dns["up"]:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            host = "127.0.0.1"
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(udp_listener.socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(udp_listener, "RESOLVE_EVERY", 0.2)
    caplog.set_level(logging.INFO, logger="influx_relay.udp_listener")
    r = relay(
        '[[udp]]\nname = "u"\nbind-addr = "127.0.0.1:0"\noutput = [\n'
        '  { name = "late", location = "late.invalid:%d" },\n'
        '  { name = "good", location = "%s" },\n]\n' % (late.server_port, good.location))
    late_output = r.relay.udp[0].outputs[0]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0

    def send():
        nonlocal sent
        s.sendto(b"cpu v=%d %d" % (sent, sent), r.udp_address)
        sent += 1

    try:
        # While the name does not resolve: dropped and counted, tried again
        # no more often than RESOLVE_EVERY however many datagrams come.
        began = time.monotonic()
        for _ in range(20):
            send()
            gevent.sleep(0.03)
        eventually(lambda: len(good.lines) == sent)
        took = time.monotonic() - began
        assert late.lines == [] and late_output.dropped == sent
        # At start, then at most once per RESOLVE_EVERY: not once per datagram.
        assert 2 <= len(asked) <= 2 + took / 0.2
        errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
        assert len(errors) == 1  # said once (then at most once a minute)
        assert "udp output late: cannot resolve host 'late.invalid'" in errors[0].getMessage()

        dns["up"] = True
        with gevent.Timeout(5, False):
            while not late.lines:
                send()
                gevent.sleep(0.05)
        eventually(lambda: len(good.lines) == sent)
        # Every datagram either reached the late output or was counted dropped,
        # and from the first one sent, every later one arrived, in order.
        assert late.lines
        assert len(late.lines) + late_output.dropped == sent
        first = int(late.lines[0].split(b" ")[-1])
        assert late.lines == [b"cpu v=%d %d" % (i, i) for i in range(first, sent)]
        assert any("resolved to 127.0.0.1: sending again" in rec.getMessage()
                   for rec in caplog.records)
    finally:
        s.close()


def test_closing_an_output_stops_its_resolving(monkeypatch):
    calls = []

    def slow_failure(host, port, *args, **kwargs):
        calls.append(host)
        gevent.sleep(0.3)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(udp_listener.socket, "getaddrinfo", slow_failure)
    monkeypatch.setattr(udp_listener, "RESOLVE_EVERY", 0.0)
    output = udp_listener.UDPOutput(_cfg("slow.invalid", 1))
    output.send([b"cpu v=1 1"])
    gevent.sleep(0.05)
    assert output._resolver is not None  # resolving, in a greenlet of its own
    output.close()
    gevent.sleep(0.4)
    assert output.address is None and output.sock is None
    assert len(calls) == 2 and output.dropped == 1
    output.send([b"cpu v=2 2"])  # closed: counted, no new try
    gevent.sleep(0.05)
    assert len(calls) == 2 and output.dropped == 2


def _cfg(host, port):
    from influx_relay.config import loads

    return loads('[[udp]]\nbind-addr = "127.0.0.1:0"\n'
                 'output = [{ name = "o", location = "%s:%d" }]\n' % (host, port)).udp[0].outputs[0]
