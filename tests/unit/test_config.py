"""Configuration: both file formats, every key's default and validation, and
the exact text of the errors a user sees."""

import dataclasses
import os
import subprocess
from pathlib import Path

import pytest

from influx_relay import config
from influx_relay.config import ConfigError, Endpoints, loads

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample.toml"
FILE = "relay.toml"


def http_config(listener="", output=""):
    """One HTTP listener with one output; extra TOML lines for each table."""
    return (
        '[[http]]\nbind-addr = "127.0.0.1:0"\n%s\n'
        '[[http.output]]\nname = "a"\nlocation = "http://127.0.0.1:8086/"\n%s\n'
        % (listener, output)
    )


def udp_config(listener="", output=""):
    """One UDP listener with one output; extra TOML lines for each table."""
    return (
        '[[udp]]\nbind-addr = "127.0.0.1:0"\n%s\n'
        '[[udp.output]]\nname = "a"\nlocation = "127.0.0.1:8089"\n%s\n' % (listener, output)
    )


def error(text, path=FILE):
    with pytest.raises(ConfigError) as info:
        loads(text, path)
    message = str(info.value)
    assert "\n" not in message
    return message


def http_output(output_lines):
    return loads(http_config(output=output_lines)).http[0].outputs[0]


# ---------------------------------------------------------------------------
# The two formats users have today

ORIGINAL_README = """
[[http]]
name = "example-http"
bind-addr = "127.0.0.1:9096"
output = [
    { name="local1", location = "http://127.0.0.1:8086/write" },
    { name="local2", location = "http://127.0.0.1:7086/write", timeout="10s" },
]

[[udp]]
name = "example-udp"
bind-addr = "127.0.0.1:9096"
read-buffer = 0 # default
precision = "n" # Can be n, u, ms, s, m, h
output = [
    { name="local1", location="127.0.0.1:8089", mtu=512 },
    { name="local2", location="127.0.0.1:7089", mtu=1024 },
]
"""


def test_original_influxdb_relay_example_loads():
    cfg = loads(ORIGINAL_README, FILE)
    assert cfg.path == FILE
    (http,) = cfg.http
    assert (http.name, http.bind_addr, http.host, http.port) == (
        "example-http", "127.0.0.1:9096", "127.0.0.1", 9096,
    )
    assert [o.name for o in http.outputs] == ["local1", "local2"]
    local1 = http.outputs[0]
    assert (local1.scheme, local1.host, local1.port) == ("http", "127.0.0.1", 8086)
    assert local1.location == "http://127.0.0.1:8086/write"
    assert local1.endpoints == Endpoints()
    assert local1.base_url == "http://127.0.0.1:8086"
    assert http.outputs[1].port == 7086
    (udp,) = cfg.udp
    assert (udp.name, udp.host, udp.port, udp.read_buffer, udp.precision) == (
        "example-udp", "127.0.0.1", 9096, 0, "n",
    )
    assert [(o.name, o.host, o.port, o.mtu) for o in udp.outputs] == [
        ("local1", "127.0.0.1", 8089, 512),
        ("local2", "127.0.0.1", 7089, 1024),
    ]


VEEPEE = """
[[http]]
name      = "influxdb-relay-api"
bind-addr = "127.0.0.1:9096"

[[http.output]]
name      = "local-influxdb01"
location  = "http://127.0.0.1:8086/"
endpoints = {write="/write", write_prom="/api/v1/prom/write", ping="/", query="/query"}
timeout   = "10s"
skip-tls-verification = true
buffer-size-mb = 500
max-batch-kb = 200
max-delay-interval = "5s"

[[http.output]]
name      = "local-influxdb02"
location  = "https://127.0.0.1:8087/influx"
endpoints = {write="/write", ping="/ping"}

[[udp]]
name        = "influxdb-relay-collectd"
bind-addr   = "127.0.0.1:36936"
read-buffer = 0

[[udp.output]]
name     = "local-influxdb01"
location = "127.0.0.1:25826"
mtu      = 1500
"""


def test_veepee_format_loads():
    cfg = loads(VEEPEE, FILE)
    first, second = cfg.http[0].outputs
    assert first.endpoints == Endpoints(ping="/")
    assert first.skip_tls_verification is True
    assert (first.buffer_size_mb, first.max_batch_kb, first.max_delay_interval) == (500, 200, 5.0)
    assert (second.scheme, second.port) == ("https", 8087)
    assert second.endpoints == Endpoints(
        write="/influx/write",
        ping="/influx/ping",
        query="/influx/query",
        write_prom="/influx/api/v1/prom/write",
        write_v2="/influx/api/v2/write",
        query_v2="/influx/api/v2/query",
        read_prom="/influx/api/v1/prom/read",
    )
    assert cfg.udp[0].outputs[0].mtu == 1500


@pytest.mark.parametrize(
    "location, endpoints, expected",
    [
        # The original format: the full URL of /write.
        ("http://127.0.0.1:8086/write", None,
         ("http", "127.0.0.1", 8086, Endpoints())),
        ("http://h:8086/influx/write", None,
         ("http", "h", 8086, Endpoints("/influx/write", "/influx/ping", "/influx/query",
                                       "/influx/api/v1/prom/write", "/influx/api/v2/write",
                                       "/influx/api/v2/query", "/influx/api/v1/prom/read"))),
        ("https://h/write", None, ("https", "h", 443, Endpoints())),
        # An InfluxDB 2.x write URL: what is before /api/v2/write is the prefix.
        ("http://h:8086/api/v2/write", None, ("http", "h", 8086, Endpoints())),
        ("http://h/x/api/v2/write", None,
         ("http", "h", 80, Endpoints("/x/write", "/x/ping", "/x/query",
                                     "/x/api/v1/prom/write", "/x/api/v2/write",
                                     "/x/api/v2/query", "/x/api/v1/prom/read"))),
        # A base URL: its path is a prefix.
        ("http://h:8086/", None, ("http", "h", 8086, Endpoints())),
        ("http://h:8086", None, ("http", "h", 8086, Endpoints())),
        ("http://h", None, ("http", "h", 80, Endpoints())),
        ("http://h:8086/influx/", None,
         ("http", "h", 8086, Endpoints("/influx/write", "/influx/ping", "/influx/query",
                                       "/influx/api/v1/prom/write", "/influx/api/v2/write",
                                       "/influx/api/v2/query", "/influx/api/v1/prom/read"))),
        ("http://[::1]:8086/", None, ("http", "::1", 8086, Endpoints())),
        ("https://[2001:db8::1]/", None, ("https", "2001:db8::1", 443, Endpoints())),
        # With endpoints, location is always a base URL.
        ("http://h:8086/", '{ping="/"}', ("http", "h", 8086, Endpoints(ping="/"))),
        ("http://h:8086/", '{write="/api/v2/write", query="/q"}',
         ("http", "h", 8086, Endpoints(write="/api/v2/write", query="/q"))),
        ("http://h/p/", '{write="/w"}',
         ("http", "h", 80, Endpoints("/p/w", "/p/ping", "/p/query", "/p/api/v1/prom/write",
                                       "/p/api/v2/write", "/p/api/v2/query", "/p/api/v1/prom/read"))),
        ("http://h/write", "{}",
         ("http", "h", 80, Endpoints("/write/write", "/write/ping", "/write/query",
                                     "/write/api/v1/prom/write", "/write/api/v2/write",
                                     "/write/api/v2/query", "/write/api/v1/prom/read"))),
    ],
)
def test_http_location_and_endpoints(location, endpoints, expected):
    lines = 'location = "%s"' % location
    if endpoints is not None:
        lines += "\nendpoints = %s" % endpoints
    text = http_config().replace('location = "http://127.0.0.1:8086/"', lines)
    out = loads(text).http[0].outputs[0]
    assert out.location == location
    assert (out.scheme, out.host, out.port, out.endpoints) == expected


# ---------------------------------------------------------------------------
# Defaults

def test_http_defaults():
    cfg = loads(http_config())
    (listener,) = cfg.http
    assert cfg.udp == ()
    assert listener.name == "127.0.0.1:0"  # the bind-addr
    assert listener.ssl_combined_pem is None
    assert listener.default_retention_policy is None
    assert listener.max_body_size == 25000000  # InfluxDB's own default
    assert listener.read_timeout == 30.0
    (out,) = listener.outputs
    assert out.endpoints == Endpoints("/write", "/ping", "/query", "/api/v1/prom/write",
                                      "/api/v2/write")
    assert (out.api, out.org, out.token, out.bucket) == ("v1", None, None, None)
    assert out.timeout == 10.0
    assert out.skip_tls_verification is False
    assert out.pool_size == 64
    assert out.buffer_size_mb == 0
    assert out.max_batch_kb == 512
    assert out.max_delay_interval == 10.0
    assert (out.coalesce, out.coalesce_max_kb) == (True, 1024)


def test_udp_defaults():
    cfg = loads(udp_config())
    (listener,) = cfg.udp
    assert cfg.http == ()
    assert listener.name == "127.0.0.1:0"
    assert listener.read_buffer == 0
    assert listener.precision == "n"
    (out,) = listener.outputs
    assert (out.name, out.location, out.host, out.port, out.mtu) == (
        "a", "127.0.0.1:8089", "127.0.0.1", 8089, 1024,
    )


def test_every_key_is_read():
    listener = loads(http_config(
        listener='name = "in"\ndefault-retention-policy = "autogen"\n'
                 'max-body-size = 1000\nread-timeout = "1m"',
        output='timeout = "2s"\nskip-tls-verification = true\npool-size = 3\n'
               'buffer-size-mb = 7\nmax-batch-kb = 9\nmax-delay-interval = "3s"\n'
               'coalesce = true\ncoalesce-max-kb = 64',
    )).http[0]
    assert (listener.name, listener.default_retention_policy) == ("in", "autogen")
    assert (listener.max_body_size, listener.read_timeout) == (1000, 60.0)
    out = listener.outputs[0]
    assert (out.timeout, out.skip_tls_verification, out.pool_size) == (2.0, True, 3)
    assert (out.buffer_size_mb, out.max_batch_kb, out.max_delay_interval) == (7, 9, 3.0)
    assert (out.coalesce, out.coalesce_max_kb) == (True, 64)
    udp = loads(udp_config(listener='name = "u"\nread-buffer = 8388608\nprecision = "ms"',
                           output="mtu = 1472")).udp[0]
    assert (udp.name, udp.read_buffer, udp.precision, udp.outputs[0].mtu) == (
        "u", 8388608, "ms", 1472,
    )


@pytest.mark.parametrize("precision", config.PRECISIONS)
def test_every_precision(precision):
    assert loads(udp_config(listener='precision = "%s"' % precision)).udp[0].precision == precision


def test_result_is_frozen_and_uses_tuples():
    cfg = loads(VEEPEE)
    assert isinstance(cfg.http, tuple) and isinstance(cfg.http[0].outputs, tuple)
    assert isinstance(cfg.udp, tuple) and isinstance(cfg.udp[0].outputs, tuple)
    for obj in (cfg, cfg.http[0], cfg.http[0].outputs[0], cfg.http[0].outputs[0].endpoints,
                cfg.udp[0], cfg.udp[0].outputs[0]):
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.name = "x"


# ---------------------------------------------------------------------------
# Values: each class of error, with the exact message

@pytest.mark.parametrize(
    "text, message",
    [
        # Types.
        (http_config(output='pool-size = "x"'),
         'http[0].output[0].pool-size: "x" must be an integer'),
        (http_config(output="pool-size = 1.5"),
         "http[0].output[0].pool-size: 1.5 must be an integer"),
        (http_config(output="pool-size = true"),
         "http[0].output[0].pool-size: true must be an integer"),
        (http_config(output='skip-tls-verification = "true"'),
         'http[0].output[0].skip-tls-verification: "true" must be true or false'),
        (http_config(output="skip-tls-verification = 1"),
         "http[0].output[0].skip-tls-verification: 1 must be true or false"),
        (http_config(output="timeout = 10"),
         "http[0].output[0].timeout: 10 must be a string"),
        (http_config(listener="name = 1"), "http[0].name: 1 must be a string"),
        (http_config(listener='name = ""'), "http[0].name: must not be empty"),
        (http_config(listener="default-retention-policy = [1]"),
         "http[0].default-retention-policy: must be a string, not an array"),
        (http_config(output="endpoints = 1"),
         'http[0].output[0].endpoints: 1 must be a table (e.g. {write="/write", ping="/ping"})'),
        (http_config(output='endpoints = {write = 1}'),
         "http[0].output[0].endpoints.write: 1 must be a string"),
        (http_config(output='endpoints = {write = "write"}'),
         'http[0].output[0].endpoints.write: "write" is not a path starting with "/"'),
        (http_config(output='endpoints = {query = "/query?db=x"}'),
         'http[0].output[0].endpoints.query: "/query?db=x" is not a path starting with "/"'),
        (http_config(output='endpoints = {write_prometheus = "/w"}'),
         'http[0].output[0].endpoints.write_prometheus: unknown key (did you mean "write_prom"?)'),
        # Ranges.
        (http_config(output="pool-size = 0"), "http[0].output[0].pool-size: 0 must be between 1 and 65535"),
        (http_config(output="buffer-size-mb = -1"),
         "http[0].output[0].buffer-size-mb: -1 must be between 0 and 4398046511104"),
        (http_config(output="max-batch-kb = 0"),
         "http[0].output[0].max-batch-kb: 0 must be between 1 and 4503599627370496"),
        (http_config(output="coalesce-max-kb = 0"),
         "http[0].output[0].coalesce-max-kb: 0 must be between 1 and 4503599627370496"),
        (http_config(output='coalesce = "yes"'),
         'http[0].output[0].coalesce: "yes" must be true or false'),
        (udp_config(listener="read-buffer = -1"), "udp[0].read-buffer: -1 must be between 0 and 2147483647"),
        (udp_config(output="mtu = 63"), "udp[0].output[0].mtu: 63 must be between 64 and 65507"),
        (udp_config(output="mtu = 65508"),
         "udp[0].output[0].mtu: 65508 must be between 64 and 65507"),
        (udp_config(output='mtu = "1500"'), 'udp[0].output[0].mtu: "1500" must be an integer'),
        (udp_config(listener='precision = "ns "'),
         'udp[0].precision: "ns " is not a precision (one of n, ns, u, us, ms, s, m, h)'),
        (udp_config(listener='precision = "NS"'),
         'udp[0].precision: "NS" is not a precision (one of n, ns, u, us, ms, s, m, h)'),
        # Durations.
        (http_config(output='timeout = "10x"'),
         'http[0].output[0].timeout: "10x" is not a duration (e.g. "10s", "500ms")'),
        (http_config(output='timeout = "0"'),
         'http[0].output[0].timeout: "0" must be longer than 0'),
        (http_config(output='max-delay-interval = "0s"'),
         'http[0].output[0].max-delay-interval: "0s" must be longer than 0'),
        (http_config(listener='read-timeout = "-1s"'),
         'http[0].read-timeout: "-1s" is not a duration (e.g. "10s", "500ms")'),
        # Sizes.
        (http_config(listener='max-body-size = "25XB"'),
         'http[0].max-body-size: "25XB" is not a size (e.g. 25000000, "25MB", "512KB", "1GiB")'),
        (http_config(listener="max-body-size = 0"), "http[0].max-body-size: 0 must be between 1 and 4611686018427387904"),
        (http_config(listener='max-body-size = "0MB"'),
         'http[0].max-body-size: "0MB" must be between 1 byte and 4611686018427387904 bytes (4 EiB)'),
        (http_config(listener="max-body-size = 1.5"),
         'http[0].max-body-size: 1.5 must be an integer or a string such as "25MB"'),
        # Required keys and empty lists.
        ('[[http]]\nbind-addr = ":0"\noutput = []', "http[0].output: must not be empty"),
        ('[[http]]\nbind-addr = ":0"', "http[0].output: required key is missing"),
        ('[[http]]\noutput = [{name="a", location="http://h/"}]',
         "http[0].bind-addr: required key is missing"),
        ('[[http]]\nbind-addr = ":0"\noutput = [{location="http://h/"}]',
         "http[0].output[0].name: required key is missing"),
        ('[[http]]\nbind-addr = ":0"\noutput = [{name="a"}]',
         "http[0].output[0].location: required key is missing"),
        ('[[udp]]\nbind-addr = ":0"\noutput = []', "udp[0].output: must not be empty"),
        ('[[udp]]\nbind-addr = ":0"\noutput = [{name="a"}]',
         "udp[0].output[0].location: required key is missing"),
        # Shapes.
        ('[http]\nbind-addr = ":0"', "http: must be an array of tables ([[http]]), not a table"),
        ("http = 1", "http: 1 must be an array of tables ([[http]])"),
        ("http = [1]", "http[0]: 1 must be a table"),
        ('[[http]]\nbind-addr = ":0"\n[http.output]\nname = "a"\nlocation = "http://h/"',
         "http[0].output: must be an array of tables ([[http.output]]), not a table"),
        ('[[udp]]\nbind-addr = ":0"\noutput = ["127.0.0.1:8089"]',
         'udp[0].output[0]: "127.0.0.1:8089" must be a table'),
    ],
)
def test_value_errors(text, message):
    assert error(text) == "%s: %s" % (FILE, message)


def test_error_names_the_index_of_the_bad_output():
    text = ORIGINAL_README.replace('timeout="10s"', 'timeout="10x"')
    assert error(text) == (
        'relay.toml: http[0].output[1].timeout: "10x" is not a duration (e.g. "10s", "500ms")'
    )


def test_no_listener_is_an_error():
    assert error("") == "relay.toml: no [[http]] or [[udp]] listener is configured"
    assert error("http = []\nudp = []") == (
        "relay.toml: no [[http]] or [[udp]] listener is configured"
    )


# ---------------------------------------------------------------------------
# Unknown keys

def known(keys):
    return ", ".join(sorted(keys))


@pytest.mark.parametrize(
    "text, message",
    [
        (http_config(listener='bind_addr = ":1"'),
         'http[0].bind_addr: unknown key (did you mean "bind-addr"?)'),
        (http_config(output='locations = "x"'),
         'http[0].output[0].locations: unknown key (did you mean "location"?)'),
        (http_config(output="skip-tls-verify = true"),
         'http[0].output[0].skip-tls-verify: unknown key (did you mean "skip-tls-verification"?)'),
        (udp_config(output="mtus = 1"), 'udp[0].output[0].mtus: unknown key (did you mean "mtu"?)'),
        (http_config() + "\n[[htp]]\n", 'htp: unknown key (did you mean "http"?)'),
        (http_config(listener="zzz = 1"),
         "http[0].zzz: unknown key (known keys: %s)" % known(config.settings(config.HTTPListenerConfig))),
        (http_config(output="zzz = 1"),
         "http[0].output[0].zzz: unknown key (known keys: %s)" % known(config.settings(config.HTTPOutputConfig))),
        (udp_config(listener="zzz = 1"),
         "udp[0].zzz: unknown key (known keys: %s)" % known(config.settings(config.UDPListenerConfig))),
        (udp_config(output="zzz = 1"),
         "udp[0].output[0].zzz: unknown key (known keys: %s)" % known(config.settings(config.UDPOutputConfig))),
        ("zzz = 1", "zzz: unknown key (known keys: %s)" % known(config.settings(config.Config))),
        (http_config(output='"a.b" = 1'),
         'http[0].output[0]."a.b": unknown key (known keys: %s)' % known(config.settings(config.HTTPOutputConfig))),
    ],
)
def test_unknown_keys(text, message):
    assert error(text) == "%s: %s" % (FILE, message)


def test_unknown_key_is_reported_before_a_missing_one():
    # A typo in a required key names the typo, not the missing key.
    text = '[[http]]\nbindaddr = ":0"\noutput = [{name="a", location="http://h/"}]'
    assert error(text) == 'relay.toml: http[0].bindaddr: unknown key (did you mean "bind-addr"?)'


# ---------------------------------------------------------------------------
# Durations (Go syntax)

@pytest.mark.parametrize(
    "text, seconds",
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("300us", 0.0003),
        ("300\u00b5s", 0.0003),  # MICRO SIGN
        ("300\u03bcs", 0.0003),  # GREEK SMALL LETTER MU
        ("100ns", 1e-7),
        ("2h45m", 9900.0),
        ("0", 0.0),
        ("0s", 0.0),
        (".5s", 0.5),
        ("1h0m0.5s", 3600.5),
    ],
)
def test_durations(text, seconds):
    assert config.parse_duration(text) == pytest.approx(seconds)
    if seconds:  # a timeout of 0 is refused: see test_value_errors
        assert http_output('timeout = "%s"' % text).timeout == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["10x", "", "-1s", "-0", "10", "1.5", "00", "s", ".s", "1 s", " 1s", "1s ", "1S",
             "1sec", "1d"],
)
def test_bad_durations(text):
    with pytest.raises(ValueError):
        config.parse_duration(text)
    assert error(http_config(output='timeout = "%s"' % text)) == (
        'relay.toml: http[0].output[0].timeout: "%s" is not a duration (e.g. "10s", "500ms")'
        % text
    )


# ---------------------------------------------------------------------------
# Sizes

@pytest.mark.parametrize(
    "value, size",
    [
        ("1", 1),
        ("26214400", 26214400),
        ('"25MB"', 25 * 1024 * 1024),
        ('"512KB"', 512 * 1024),
        ('"1GiB"', 1024 ** 3),
        ('"1GB"', 1024 ** 3),
        ('"2MiB"', 2 * 1024 ** 2),
        ('"64kb"', 64 * 1024),
        ('"10 MB"', 10 * 1024 ** 2),
        ('"100B"', 100),
        ('"1.5MB"', 1536 * 1024),
    ],
)
def test_max_body_size(value, size):
    assert loads(http_config(listener="max-body-size = %s" % value)).http[0].max_body_size == size


# ---------------------------------------------------------------------------
# Addresses (Go syntax)

@pytest.mark.parametrize(
    "addr, host, port",
    [
        (":9096", "", 9096),
        ("127.0.0.1:9096", "127.0.0.1", 9096),
        ("localhost:9096", "localhost", 9096),
        ("[::1]:9096", "::1", 9096),
        ("[::]:9096", "::", 9096),
        ("[fe80::1%eth0]:9096", "fe80::1%eth0", 9096),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("relay.example.com:65535", "relay.example.com", 65535),
    ],
)
def test_bind_addresses(addr, host, port):
    for text in (
        http_config().replace('"127.0.0.1:0"', '"%s"' % addr),
        udp_config().replace('"127.0.0.1:0"', '"%s"' % addr),
    ):
        cfg = loads(text)
        (listener,) = cfg.http or cfg.udp
        assert (listener.bind_addr, listener.host, listener.port) == (addr, host, port)
        assert listener.name == addr


@pytest.mark.parametrize(
    "addr, reason",
    [
        ("127.0.0.1:70000", "port out of range (0-65535)"),
        ("127.0.0.1:-1", 'port "-1" is not a number'),
        ("127.0.0.1:http", 'port "http" is not a number'),
        ("127.0.0.1", "is missing a port"),
        ("127.0.0.1:", "is missing a port"),
        ("", "is missing a port"),
        ("::1:9096", 'has an IPv6 address without brackets (write "[::1]:9096")'),
        ("::1", 'has an IPv6 address without brackets (write "[::1]:port")'),
        ("[::1]", "is missing a port"),
        ("[::1:9096", 'has no closing "]"'),
        ("[::1]x:9096", 'has "x:9096" after "]"'),
        ("[127.0.0.1]:9096", 'has "127.0.0.1" in brackets, which is not an IPv6 address'),
        ("local host:9096", 'has an invalid host "local host"'),
    ],
)
def test_bad_bind_addresses(addr, reason):
    text = udp_config().replace('"127.0.0.1:0"', '"%s"' % addr)
    assert error(text) == 'relay.toml: udp[0].bind-addr: "%s" %s' % (addr, reason)
    text = http_config().replace('"127.0.0.1:0"', '"%s"' % addr)
    assert error(text) == 'relay.toml: http[0].bind-addr: "%s" %s' % (addr, reason)


def test_bind_addr_must_be_a_string():
    assert error(http_config().replace('"127.0.0.1:0"', "9096")) == (
        "relay.toml: http[0].bind-addr: 9096 must be a string"
    )


@pytest.mark.parametrize(
    "location, host, port",
    [
        ("127.0.0.1:8089", "127.0.0.1", 8089),
        ("localhost:1", "localhost", 1),
        ("[::1]:8089", "::1", 8089),
        ("influxdb.example.com:65535", "influxdb.example.com", 65535),
    ],
)
def test_udp_output_locations(location, host, port):
    out = loads(udp_config().replace('"127.0.0.1:8089"', '"%s"' % location)).udp[0].outputs[0]
    assert (out.location, out.host, out.port) == (location, host, port)


@pytest.mark.parametrize(
    "location, reason",
    [
        ("127.0.0.1:0", "port out of range (1-65535)"),
        ("127.0.0.1:65536", "port out of range (1-65535)"),
        (":8089", "has no host"),
        ("127.0.0.1", "is missing a port"),
        ("::1:8089", 'has an IPv6 address without brackets (write "[::1]:8089")'),
        ("udp://127.0.0.1:8089", 'is not a "host:port" address'),
        ("fe80::1", 'has an IPv6 address without brackets (write "[fe80::1]:port")'),
    ],
)
def test_bad_udp_output_locations(location, reason):
    text = udp_config().replace('"127.0.0.1:8089"', '"%s"' % location)
    assert error(text) == 'relay.toml: udp[0].output[0].location: "%s" %s' % (location, reason)


@pytest.mark.parametrize(
    "location, reason",
    [
        ("ftp://x", "is not an http or https URL"),
        ("127.0.0.1:8086/write", "is not an http or https URL"),
        ("http//h:8086/", "is not an http or https URL"),
        ("", "is not an http or https URL"),
        ("http://h:8086/write?db=x", "must not have a query string or fragment"),
        ("http://h:8086/#x", "must not have a query string or fragment"),
        ("http://h:8086/?", "must not have a query string or fragment"),
        ("http:///write", "has no host"),
        ("http://:8086/write", "has no host"),
        ("http://h:0/", "port out of range (1-65535)"),
        ("http://h:65536/", "port out of range (1-65535)"),
        ("http://h:x/", 'port "x" is not a number'),
        ("http://::1:8086/", 'has an IPv6 address without brackets (write "[::1]:8086")'),
        ("http://[::1/", "is not a valid URL"),
        ("http://h /", "must not contain spaces"),
    ],
)
def test_bad_http_output_locations(location, reason):
    text = http_config().replace('"http://127.0.0.1:8086/"', '"%s"' % location)
    assert error(text) == 'relay.toml: http[0].output[0].location: "%s" %s' % (location, reason)


def test_http_location_credentials_are_refused_and_not_echoed():
    text = http_config().replace("http://127.0.0.1:8086/", "http://admin:s3cret@127.0.0.1:8086/")
    message = error(text)
    assert "s3cret" not in message
    assert message == (
        'relay.toml: http[0].output[0].location: "http://admin:***@127.0.0.1:8086/": '
        "credentials in the URL are not supported"
    )


# ---------------------------------------------------------------------------
# Names and bind addresses used twice

def two_outputs(first, second):
    return '[[http]]\nbind-addr = ":0"\noutput = [\n%s,\n%s,\n]\n' % (first, second)


def test_two_outputs_of_one_listener_with_one_name():
    text = two_outputs('{name="a", location="http://h1/"}', '{name="a", location="http://h2/"}')
    assert error(text) == (
        'relay.toml: http[0].output[1].name: "a" is used by output http[0].output[0] too'
    )
    text = udp_config() + '[[udp.output]]\nname = "a"\nlocation = "127.0.0.1:7089"\n'
    assert error(text) == (
        'relay.toml: udp[0].output[1].name: "a" is used by output udp[0].output[0] too'
    )


def test_one_output_name_in_two_listeners_is_fine():
    text = ORIGINAL_README.replace('bind-addr = "127.0.0.1:9096"', 'bind-addr = "127.0.0.1:0"', 1)
    text += (
        '[[http]]\nbind-addr = "127.0.0.1:9097"\n'
        'output = [{name="local1", location="http://h/"}]\n'
    )
    cfg = loads(text)
    assert [lst.outputs[0].name for lst in cfg.http] == ["local1", "local1"]


@pytest.mark.parametrize("proto", ["http", "udp"])
def test_two_listeners_with_one_name(proto):
    output = '{name="a", location="%s"}' % ("http://h/" if proto == "http" else "h:1")
    text = "".join(
        '[[%s]]\nname = "x"\nbind-addr = "127.0.0.1:%d"\noutput = [%s]\n' % (proto, port, output)
        for port in (9096, 9097)
    )
    assert error(text) == (
        'relay.toml: %s[1].name: "x" is used by listener %s[0] too' % (proto, proto)
    )


def test_default_names_of_two_ephemeral_listeners_clash():
    # The name defaults to the bind-addr; two listeners on port 0 need names.
    text = http_config() + http_config()
    assert error(text) == 'relay.toml: http[1].name: "127.0.0.1:0" is used by listener http[0] too'


@pytest.mark.parametrize(
    "first, second",
    [
        ("127.0.0.1:9096", "127.0.0.1:9096"),
        (":9096", "127.0.0.1:9096"),
        ("127.0.0.1:9096", "0.0.0.0:9096"),
        ("[::1]:9096", "[::]:9096"),
    ],
)
@pytest.mark.parametrize("proto", ["http", "udp"])
def test_two_listeners_on_one_address(proto, first, second):
    output = '{name="a", location="%s"}' % ("http://h/" if proto == "http" else "h:1")
    text = "".join(
        '[[%s]]\nbind-addr = "%s"\noutput = [%s]\n' % (proto, addr, output)
        for addr in (first, second)
    )
    assert error(text) == (
        'relay.toml: %s[1].bind-addr: "%s" is also bound by listener %s[0] ("%s")'
        % (proto, second, proto, first)
    )


def test_listeners_that_do_not_clash():
    http = '[[http]]\nname = "%s"\nbind-addr = "%s"\noutput = [{name="a", location="http://h/"}]\n'
    udp = '[[udp]]\nname = "%s"\nbind-addr = "%s"\noutput = [{name="a", location="h:1"}]\n'
    text = (
        http % ("a", "127.0.0.1:0") + http % ("b", "127.0.0.1:0")          # ephemeral ports
        + http % ("c", "127.0.0.1:9096") + http % ("d", "127.0.0.2:9096")  # two hosts
        + http % ("e", "127.0.0.1:9097")
        + udp % ("a", "127.0.0.1:9096")  # TCP and UDP differ; names are per protocol
    )
    cfg = loads(text)
    assert [lst.port for lst in cfg.http] == [0, 0, 9096, 9096, 9097]


# ---------------------------------------------------------------------------
# Files

def test_load_reads_a_file_and_keeps_the_path_as_given(tmp_path, monkeypatch):
    (tmp_path / "relay.toml").write_text(ORIGINAL_README)
    monkeypatch.chdir(tmp_path)
    assert config.load("relay.toml").path == "relay.toml"
    assert config.load(tmp_path / "relay.toml").path == str(tmp_path / "relay.toml")


def test_error_in_a_file_names_the_path_as_given(tmp_path, monkeypatch):
    (tmp_path / "bad.toml").write_text(http_config(output='timeout = "10x"'))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        config.load("./bad.toml")
    assert str(info.value) == (
        './bad.toml: http[0].output[0].timeout: "10x" is not a duration (e.g. "10s", "500ms")'
    )


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value) == "%s: cannot read: No such file or directory" % path


def test_directory_instead_of_a_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        config.load(str(tmp_path))
    assert str(info.value) == "%s: cannot read: Is a directory" % tmp_path


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text(ORIGINAL_README)
    path.chmod(0)
    try:
        with pytest.raises(ConfigError) as info:
            config.load(str(path))
    finally:
        path.chmod(0o600)
    assert str(info.value) == "%s: cannot read: Permission denied" % path


def test_toml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_text('[[http]]\nbind-addr = "127.0.0.1:9096"\nname "x"\n')
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    message = str(info.value)
    assert message.startswith("%s: invalid TOML: " % path)
    assert "line 3, column 6" in message
    assert "\n" not in message


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "relay.toml"
    path.write_bytes(b'[[http]]\nname = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    assert str(info.value) == "%s: not UTF-8 text (byte 0xff at offset 17)" % path


def combined_pem(directory):
    """A self-signed certificate and its key, in one PEM file."""
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=influx-relay test"],
        check=True, capture_output=True, cwd=str(directory))
    pem = directory / "relay.pem"
    pem.write_bytes((directory / "cert.pem").read_bytes() + (directory / "key.pem").read_bytes())
    return pem


def test_ssl_combined_pem_must_be_readable(tmp_path):
    pem = combined_pem(tmp_path)
    listener = loads(http_config(listener='ssl-combined-pem = "%s"' % pem)).http[0]
    assert listener.ssl_combined_pem == str(pem)

    missing = tmp_path / "missing.pem"
    assert error(http_config(listener='ssl-combined-pem = "%s"' % missing)) == (
        'relay.toml: http[0].ssl-combined-pem: "%s" cannot be read: No such file or directory'
        % missing
    )
    assert error(http_config(listener='ssl-combined-pem = "%s"' % tmp_path)) == (
        'relay.toml: http[0].ssl-combined-pem: "%s" cannot be read: Is a directory' % tmp_path
    )
    assert error(http_config(listener='ssl-combined-pem = ""')) == (
        "relay.toml: http[0].ssl-combined-pem: must not be empty"
    )


@pytest.mark.parametrize("content, reason", [
    ("-----BEGIN CERTIFICATE-----\n", "PEM lib"),
    ("cert only", "PEM lib"),
    ("key only", "PEM lib"),
    ("other key", "key values mismatch"),
])
def test_ssl_combined_pem_must_hold_a_certificate_and_its_key(tmp_path, content, reason):
    # Loaded at load, as the listener loads it: a file `check` accepts starts.
    good = combined_pem(tmp_path)
    cert, key = (tmp_path / "cert.pem").read_bytes(), (tmp_path / "key.pem").read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    combined_pem(other)
    pem = tmp_path / "bad.pem"
    pem.write_bytes({"cert only": cert, "key only": key,
                     "other key": cert + (other / "key.pem").read_bytes()}.get(
                         content, content.encode()))
    message = error(http_config(listener='ssl-combined-pem = "%s"' % pem))
    assert message.startswith(
        'relay.toml: http[0].ssl-combined-pem: "%s" is not a certificate and its private '
        "key in PEM: " % pem), message
    assert reason in message and "_ssl.c" not in message
    assert good.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_ssl_combined_pem_unreadable(tmp_path):
    pem = tmp_path / "relay.pem"
    pem.write_text("x")
    pem.chmod(0)
    try:
        message = error(http_config(listener='ssl-combined-pem = "%s"' % pem))
    finally:
        pem.chmod(0o600)
    assert message == (
        'relay.toml: http[0].ssl-combined-pem: "%s" cannot be read: Permission denied' % pem
    )


# ---------------------------------------------------------------------------
# sample.toml

def test_sample_loads():
    cfg = config.load(str(SAMPLE))
    (http,) = cfg.http
    assert [(o.name, o.base_url) for o in http.outputs] == [
        ("local-influxdb01", "http://127.0.0.1:8086"),
        ("local-influxdb02", "http://127.0.0.1:7086"),
    ]
    (udp,) = cfg.udp
    assert [(o.name, o.host, o.port) for o in udp.outputs] == [
        ("local-influxdb01", "127.0.0.1", 8089),
        ("local-influxdb02", "127.0.0.1", 7089),
    ]


def test_sample_listens_on_loopback_only():
    cfg = config.load(str(SAMPLE))
    assert [lst.host for lst in cfg.http + cfg.udp] == ["127.0.0.1", "127.0.0.1"]


def test_sample_documents_the_defaults():
    # The values written in the sample are the defaults: removing them changes nothing.
    text = SAMPLE.read_text()
    kept = ("name", "bind-addr", "location")
    stripped = "\n".join(
        line for line in text.splitlines()
        if " = " not in line or line.startswith("#") or line.split(" = ")[0].strip() in kept
    )
    assert loads(stripped) == dataclasses.replace(config.load(str(SAMPLE)), path="<string>")


def test_sample_commented_original_format_loads():
    lines = SAMPLE.read_text().splitlines()
    start = lines.index("# [[http]]")
    end = lines.index("# ]", start)
    example = "\n".join(line[2:] for line in lines[start:end + 1])
    (listener,) = loads(example).http
    assert [o.endpoints.write for o in listener.outputs] == ["/write", "/write"]
    assert [o.port for o in listener.outputs] == [8086, 7086]


def test_sample_commented_v2_output_loads():
    lines = SAMPLE.read_text().splitlines()
    start = lines.index("# [[http.output]]")
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("# bucket = "))
    example = "\n".join(line[2:] for line in lines[start:end + 1])
    text = '[[http]]\nbind-addr = "127.0.0.1:0"\n' + example
    (out,) = loads(text).http[0].outputs
    assert (out.api, out.org, out.token, out.bucket) == ("v2", "my-org", "my-token",
                                                         "telegraf/autogen")
    assert out.endpoints.write_v2 == "/api/v2/write"


# ---------------------------------------------------------------------------
# InfluxDB 2.x outputs

def test_v2_output_keys():
    out = http_output('api = "v2"\norg = "acme"\ntoken = "s3cret"\nbucket = "b/rp"\n'
                      'endpoints = { write_v2 = "/v2w" }')
    assert (out.api, out.org, out.token, out.bucket) == ("v2", "acme", "s3cret", "b/rp")
    assert out.endpoints.write_v2 == "/v2w"
    assert "s3cret" not in repr(out)  # a config printed or logged keeps the token to itself
    out = http_output('api = "v2"')
    assert (out.api, out.org, out.token, out.bucket) == ("v2", None, None, None)


@pytest.mark.parametrize(
    "output, message",
    [
        ('api = "v3"', 'http[0].output[0].api: "v3" is not an API (one of "v1", "v2")'),
        ("api = 2", "http[0].output[0].api: 2 must be a string"),
        ('org = "acme"', 'http[0].output[0].org: is only used with api = "v2"'),
        ('bucket = "b"', 'http[0].output[0].bucket: is only used with api = "v2"'),
        ('api = "v2"\nendpoints = { write_v2 = "api/v2/write" }',
         'http[0].output[0].endpoints.write_v2: "api/v2/write" is not a path starting with "/"'),
    ],
)
def test_v2_output_errors(output, message):
    assert error(http_config(output=output)) == "%s: %s" % (FILE, message)


def test_workers_need_fixed_ports_and_auto_is_the_cpu_count():
    import os

    text = '[[http]]\nbind-addr = "127.0.0.1:%d"\noutput = [{ name = "a", location = "http://x/write" }]\n'
    assert config.loads("workers = 2\n" + text % 9096).workers == 2
    assert config.loads('workers = "auto"\n' + text % 9096).workers == min(256, os.cpu_count())
    with pytest.raises(ConfigError) as e:
        config.loads("workers = 2\n" + text % 0)
    assert str(e.value) == ('<string>: http[0].bind-addr: "127.0.0.1:0": workers share a '
                            "listening port, so it cannot be 0")
    with pytest.raises(ConfigError, match='"many" is not a number of processes or "auto"'):
        config.loads('workers = "many"\n' + text % 9096)
    with pytest.raises(ConfigError, match="must be between 1 and 256"):
        config.loads("workers = 0\n" + text % 9096)
