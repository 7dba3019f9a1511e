"""`influx-relay check` and `influx-relay run` agree, as processes.

A config that check accepts starts (every key at its largest value too); one
that run would refuse at start, check refuses with the same line; and a UDP
output whose host does not resolve stops nothing: it drops and counts, and the
others go on.
"""

import re
import socket

import pytest

from tests.system.helpers import HOST, Relay, free_port, request, run_cli, wait_until

from .conftest import eventually

MAX_DURATION = '"2562047h"'


def outputs_to(port, extra=""):
    return ('output = [{ name = "a", location = "http://%s:%d/write"%s }]\n'
            % (HOST, port, extra))


def http_listener(extra="", output_extra=""):
    return '[[http]]\nbind-addr = "127.0.0.1:0"\n%s\n' % extra + outputs_to(1, output_extra)


#: (name, the key path its error names, config): what run would refuse (or crash on, before these checks);
#: "{tmp}" is a directory with a file "file" and a file "bad.pem" in it.
BAD_CONFIGS = [
    ("pool-size", "http[0].output[0].pool-size", http_listener(output_extra=", pool-size = 99999999999999999999")),
    ("read-buffer", "udp[0].read-buffer", '[[udp]]\nbind-addr = "127.0.0.1:0"\nread-buffer = 2147483648\n'
                    'output = [{ name = "a", location = "127.0.0.1:1" }]\n'),
    ("timeout", "http[0].output[0].timeout", http_listener(output_extra=', timeout = "100000000h"')),
    ("read-timeout", "http[0].read-timeout", http_listener('read-timeout = "100000000h"')),
    ("shutdown-timeout", "shutdown-timeout", 'shutdown-timeout = "100000000h"\n' + http_listener()),
    ("health-timeout-ms", "http[0].health-timeout-ms", http_listener("health-timeout-ms = 99999999999999999999")),
    ("max-body-size", "http[0].max-body-size", http_listener("max-body-size = 99999999999999999999")),
    ("rate-limit", "http[0].rate-limit", http_listener("rate-limit = 1e300")),
    ("burst-limit", "http[0].burst-limit", http_listener("rate-limit = 1\nburst-limit = 99999999999999999999")),
    ("buffer-size-mb", "http[0].output[0].buffer-size-mb", http_listener(output_extra=", buffer-size-mb = 99999999999999999999")),
    ("mtu", "udp[0].output[0].mtu", '[[udp]]\nbind-addr = "127.0.0.1:0"\n'
            'output = [{ name = "a", location = "127.0.0.1:1", mtu = 65508 }]\n'),
    ("shared-buffer-path", "http[1].output[1].buffer-path",
     '[[http]]\nname = "one"\nbind-addr = "127.0.0.1:0"\noutput = [\n'
     '  { name = "a", location = "http://127.0.0.1:1/", buffer-size-mb = 1, '
     'buffer-path = "{tmp}/shared" },\n'
     '  { name = "b", location = "http://127.0.0.1:2/" },\n]\n'
     '[[http]]\nname = "two"\nbind-addr = "127.0.0.1:0"\noutput = [\n'
     '  { name = "c", location = "http://127.0.0.1:3/" },\n'
     '  { name = "d", location = "http://127.0.0.1:4/", buffer-size-mb = 1, '
     'buffer-path = "{tmp}/shared/" },\n]\n'),
    ("buffer-path-file", "http[0].output[0].buffer-path", http_listener(
        output_extra=', buffer-size-mb = 1, buffer-path = "{tmp}/file"')),
    ("ssl-combined-pem", "http[0].ssl-combined-pem", http_listener('ssl-combined-pem = "{tmp}/bad.pem"')),
]


@pytest.mark.parametrize("name, key, text", BAD_CONFIGS, ids=[n for n, _, _ in BAD_CONFIGS])
def test_check_and_run_refuse_alike(tmp_path, name, key, text):
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    path = tmp_path / "relay.toml"
    path.write_text(text.replace("{tmp}", str(tmp_path)))
    said = []
    for command in ("check", "run"):
        r = run_cli(command, "--config", str(path))
        err = r.stderr.decode()
        assert r.returncode == 2, (command, r.returncode, err[-2000:])
        assert "Traceback" not in err, err[-2000:]
        assert len(err.splitlines()) == 1, (command, err)
        said.append(err.strip())
    assert said[0] == said[1]
    assert said[0].startswith("influx-relay: %s: %s: " % (path, key)), said[0]
    if name == "shared-buffer-path":
        # Both outputs named: the one refused and the one it clashes with.
        assert 'output "a" (http[0].output[0])' in said[0], said[0]
    assert not (tmp_path / "shared").exists()  # nothing made at load


def test_a_bind_host_that_does_not_resolve_fails_the_start_in_one_line(tmp_path):
    # Not a config error: DNS may be down at boot, and exit status 2 tells
    # systemd not to restart (RestartPreventExitStatus=2); 1 lets it retry.
    path = tmp_path / "relay.toml"
    path.write_text('[[http]]\nname = "h"\nbind-addr = "nowhere.invalid:0"\n' + outputs_to(1))
    assert run_cli("check", "--config", str(path)).returncode == 0
    r = run_cli("run", "--config", str(path))
    err = r.stderr.decode()
    assert r.returncode == 1, err
    assert "Traceback" not in err
    assert err.splitlines()[-1].startswith(
        "influx-relay: http listener 'h': cannot listen on nowhere.invalid:0: "
        "Name or service not known"), err


def metric(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^%s\{(.*)\} (\S+)$" % re.escape(name), line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return None


def test_a_udp_output_whose_host_does_not_resolve_drops_and_counts(tmp_path, backends,
                                                                    udp_sinks):
    http_port, udp_port = free_port(), free_port(socket.SOCK_DGRAM)
    sink = udp_sinks()
    text = (
        '[[http]]\nname = "h"\nbind-addr = "%s:%d"\n%s'
        '[[udp]]\nname = "u"\nbind-addr = "%s:%d"\noutput = [\n'
        '  { name = "nowhere", location = "nowhere.invalid:8089" },\n'
        '  { name = "good", location = "%s" },\n]\n'
        % (HOST, http_port, outputs_to(backends().port), HOST, udp_port, sink.location))
    (tmp_path / "relay.toml").write_text(text)
    assert run_cli("check", "--config", str(tmp_path / "relay.toml")).returncode == 0
    relay = Relay(tmp_path, text, http_port).start()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(5):
            s.sendto(b"cpu v=%d %d" % (i, i), (HOST, udp_port))
        s.close()
        eventually(lambda: len(sink.lines) == 5, timeout=10)
        assert sink.lines == [b"cpu v=%d %d" % (i, i) for i in range(5)]

        def dropped():
            body = request("GET", relay.url + "/metrics").body.decode()
            return metric(body, "influx_relay_udp_dropped_total", listener="u",
                          output="nowhere")

        assert wait_until(lambda: dropped() == 5, 10, what="5 drops counted")
        body = request("GET", relay.url + "/metrics").body.decode()
        assert metric(body, "influx_relay_udp_dropped_total", listener="u", output="good") == 0
        assert metric(body, "influx_relay_udp_packets_sent_total", listener="u",
                      output="good") == 5
    finally:
        status = relay.stop()
    err = relay.stderr()
    assert status == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    said = [line for line in err.splitlines() if "nowhere.invalid" in line]
    assert len(said) == 1, err[-3000:]  # said once, however many datagrams were dropped
    assert "ERROR" in said[0] and "udp output nowhere: cannot resolve host 'nowhere.invalid'" \
        in said[0], said


def test_every_key_at_its_largest_value_runs(tmp_path, backends, udp_sinks):
    http_port, ping_port, udp_port = free_port(), free_port(), free_port(socket.SOCK_DGRAM)
    a, b, c = backends(), backends(), backends()
    sink = udp_sinks()
    text = (
        "shutdown-timeout = %(d)s\n"
        '[[http]]\nname = "max"\nbind-addr = "%(host)s:%(http)d"\n'
        "max-body-size = 4611686018427387904\nread-timeout = %(d)s\n"
        "health-timeout-ms = 9223369200000\n"
        "rate-limit = 9007199254740992\nburst-limit = 9007199254740992\n"
        '[[http.output]]\nname = "a"\nlocation = "%(a)s"\ntimeout = %(d)s\npool-size = 65535\n'
        "buffer-size-mb = 4398046511104\nmax-batch-kb = 4503599627370496\n"
        "max-delay-interval = %(d)s\nbuffer-max-age = %(d)s\ncoalesce = true\n"
        "coalesce-max-kb = 4503599627370496\n"
        '[[http.output]]\nname = "b"\nlocation = "%(b)s"\ntimeout = %(d)s\npool-size = 65535\n'
        'buffer-size-mb = 4398046511104\nbuffer-path = "%(buf)s"\nbuffer-sync = %(d)s\n'
        '[[http]]\nname = "ping"\nbind-addr = "%(host)s:%(ping)d"\ndefault-ping-response = 599\n'
        'output = [{ name = "c", location = "%(c)s" }]\n'
        '[[udp]]\nname = "u"\nbind-addr = "%(host)s:%(udp)d"\nread-buffer = 2147483647\n'
        'output = [{ name = "s", location = "%(sink)s", mtu = 65507 }]\n'
    ) % {"d": MAX_DURATION, "host": HOST, "http": http_port, "ping": ping_port,
         "udp": udp_port, "a": a.url, "b": b.url, "c": c.url, "buf": tmp_path / "buffer",
         "sink": sink.location}
    (tmp_path / "relay.toml").write_text(text)
    check = run_cli("check", "--config", str(tmp_path / "relay.toml"))
    assert check.returncode == 0, check.stderr
    relay = Relay(tmp_path, text, http_port).start()
    try:
        assert request("GET", "http://%s:%d/ping" % (HOST, ping_port)).status == 599
        r = relay.write(b"cpu v=1 1\n", db="x")
        assert r.status == 204, r
        r = relay.write(b"cpu v=2 2\n", db="x", gzip=True)
        assert r.status == 204, r
        eventually(lambda: len(a.lines) == 2 and len(b.lines) == 2, timeout=10)
        assert a.lines == b.lines == [b"cpu v=1 1", b"cpu v=2 2"]
        assert request("GET", relay.url + "/health").status == 200
        big = b"cpu,host=%s v=1 1" % (b"h" * 60000)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(big, (HOST, udp_port))
        s.close()
        eventually(lambda: sink.lines == [big], timeout=10)
    finally:
        status = relay.stop()
    err = relay.stderr()
    assert status == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
