"""Every number of the config has a range, checked at load, whose top is what the
code and the OS can take; and what ``run`` would refuse at start (a buffer-path
two outputs share, or one that cannot be made) is refused at load, as
``check`` refuses it. (tests/integration/test_cli_config.py runs both commands
on these configs, and the relay at every maximum.)"""

import os

import pytest

from influx_relay.config import loads

from .test_config import error, http_config, udp_config

FILE = "relay.toml"


# (which table, key, its largest value).
# The largest values: see the MAX_* constants of config.py for the reasons.
INTEGERS = [
    ("output", "pool-size", 65535),
    ("output", "buffer-size-mb", 4398046511104),           # its bytes: 2^62
    ("output", "max-batch-kb", 4503599627370496),          # its bytes: 2^62
    ("output", "coalesce-max-kb", 4503599627370496),
    ("listener", "health-timeout-ms", 9223369200000),      # "2562047h"
    ("listener", "default-ping-response", 599),
    ("udp", "read-buffer", 2147483647),                    # SO_RCVBUF is a C int
    ("udp-output", "mtu", 65507),
]


def with_key(where, key, value):
    line = "%s = %s" % (key, value)
    if where == "output":
        return http_config(output=line), "http[0].output[0].%s" % key
    if where == "listener":
        return http_config(listener=line), "http[0].%s" % key
    if where == "udp":
        return udp_config(listener=line), "udp[0].%s" % key
    return udp_config(output=line), "udp[0].output[0].%s" % key


def value_of(cfg, where, key):
    owner = {"output": lambda: cfg.http[0].outputs[0], "listener": lambda: cfg.http[0],
             "udp": lambda: cfg.udp[0], "udp-output": lambda: cfg.udp[0].outputs[0]}[where]()
    return getattr(owner, key.replace("-", "_"))


@pytest.mark.parametrize("where, key, largest", INTEGERS, ids=[k for _, k, _ in INTEGERS])
def test_integers_up_to_their_largest(where, key, largest):
    text, path = with_key(where, key, largest)
    assert value_of(loads(text), where, key) == largest
    for bad in (largest + 1, 99999999999999999999, -1):
        text, path = with_key(where, key, bad)
        message = error(text)
        assert message.startswith("%s: %s: %d must be between " % (FILE, path, bad)), message
        assert message.endswith(" and %d" % largest), message


def test_the_issue_example_is_refused_in_the_house_style():
    assert error(http_config(output="pool-size = 99999999999999999999")) == (
        "relay.toml: http[0].output[0].pool-size: 99999999999999999999 must be between 1 and 65535"
    )
    assert error(udp_config(listener="read-buffer = 2147483648")) == (
        "relay.toml: udp[0].read-buffer: 2147483648 must be between 0 and 2147483647"
    )


def test_burst_limit_and_rate_limit_up_to_2_to_the_53():
    lst = loads(http_config(listener="rate-limit = 9007199254740992\n"
                                     "burst-limit = 9007199254740992")).http[0]
    assert (lst.rate_limit, lst.burst_limit) == (2.0 ** 53, 2 ** 53)
    assert error(http_config(listener="rate-limit = 1\nburst-limit = 9007199254740993")) == (
        "relay.toml: http[0].burst-limit: 9007199254740993 must be between 1 and 9007199254740992"
    )
    for rate in ("1e300", "inf", "9.1e15"):
        assert error(http_config(listener="rate-limit = %s" % rate)) == (
            "relay.toml: http[0].rate-limit: %s must be a number of requests per second "
            "between 0 and 9007199254740992" % {"inf": "inf"}.get(rate, str(float(rate)))
        )


DURATIONS = [
    ("output", "timeout"), ("output", "max-delay-interval"), ("output", "buffer-max-age"),
    ("output", "buffer-sync"), ("listener", "read-timeout"), ("top", "shutdown-timeout"),
]


@pytest.mark.parametrize("where, key", DURATIONS, ids=[k for _, k in DURATIONS])
def test_durations_up_to_2562047_hours(where, key):
    def text(value):
        line = '%s = "%s"' % (key, value)
        if where == "top":
            return line + "\n" + http_config(), key
        return with_key(where, key, '"%s"' % value)

    longest, path = text("2562047h")
    cfg = loads(longest)
    seconds = 2562047 * 3600.0
    if key == "shutdown-timeout":
        assert cfg.shutdown_timeout == seconds
    elif key == "buffer-sync":
        out = cfg.http[0].outputs[0]
        assert (out.buffer_sync, out.buffer_sync_interval) == ("interval", seconds)
    else:
        assert value_of(cfg, where, key) == seconds
    for too_long in ("2562048h", "100000000h", "2562047h0.5s"):
        bad, path = text(too_long)
        assert error(bad) == '%s: %s: "%s" must be at most "2562047h" (292 years)' % (
            FILE, path, too_long)


def test_sizes_up_to_4_eib():
    assert loads(http_config(listener="max-body-size = 4611686018427387904")).http[0] \
        .max_body_size == 2 ** 62
    assert error(http_config(listener="max-body-size = 4611686018427387905")) == (
        "relay.toml: http[0].max-body-size: 4611686018427387905 must be between 1 and "
        "4611686018427387904"
    )
    assert error(http_config(listener='max-body-size = "4294967297GB"')) == (
        'relay.toml: http[0].max-body-size: "4294967297GB" must be between 1 byte and '
        "4611686018427387904 bytes (4 EiB)"
    )


def test_max_body_size_defaults_to_influxdbs_25000000_bytes():
    assert loads(http_config()).http[0].max_body_size == 25000000


def test_buffer_sync_is_parsed_once_into_a_policy_and_an_interval():
    def sync(value):
        out = loads(http_config(output='buffer-sync = "%s"' % value)).http[0].outputs[0]
        return out.buffer_sync, out.buffer_sync_interval

    assert sync("write")[0] == "write"
    assert sync("os")[0] == "os"
    assert sync("250ms") == ("interval", 0.25)
    assert sync("1m") == ("interval", 60.0)
    out = loads(http_config()).http[0].outputs[0]
    assert (out.buffer_sync, out.buffer_sync_interval) == ("interval", 1.0)
    for bad in ("0", "0s", "never", "-1s"):
        assert error(http_config(output='buffer-sync = "%s"' % bad)) == (
            'relay.toml: http[0].output[0].buffer-sync: "%s" is not "write", "os" or an '
            'interval such as "1s"' % bad
        )


# ---------------------------------------------------------------------------
# buffer-path

def buffered(name, path):
    return '{ name = "%s", location = "http://127.0.0.1:8086/", buffer-size-mb = 1, ' \
           'buffer-path = "%s" }' % (name, path)


def listener(port, *outputs):
    return '[[http]]\nname = "l%d"\nbind-addr = "127.0.0.1:%d"\noutput = [\n  %s,\n]\n' % (
        port, port, ",\n  ".join(outputs))


def test_two_outputs_of_one_listener_with_one_buffer_path(tmp_path):
    text = listener(1, buffered("a", tmp_path / "buf"), buffered("b", tmp_path / "buf"))
    assert error(text) == (
        'relay.toml: http[0].output[1].buffer-path: "%s" is also the buffer-path of output '
        '"a" (http[0].output[0]): each output needs a directory of its own' % (tmp_path / "buf")
    )


def test_one_buffer_path_in_two_listeners_written_two_ways(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    for first, second in (("buf", "%s/buf/" % tmp_path), ("./x/../buf", "buf"),
                          ("real", "link")):
        text = listener(1, buffered("a", first), buffered("b", tmp_path / "other")) + \
            listener(2, buffered("c", tmp_path / "third"), buffered("a", second))
        assert error(text) == (
            'relay.toml: http[1].output[1].buffer-path: "%s" is also the buffer-path of '
            'output "a" (http[0].output[0]): each output needs a directory of its own'
            % second
        )


def test_distinct_buffer_paths_load(tmp_path):
    text = listener(1, buffered("a", tmp_path / "a"), buffered("b", tmp_path / "b")) + \
        listener(2, buffered("a", tmp_path / "c"), buffered("b", tmp_path / "d"))
    cfg = loads(text)
    assert [o.buffer_path for lst in cfg.http for o in lst.outputs] == [
        str(tmp_path / n) for n in "abcd"]
    assert not (tmp_path / "a").exists()  # nothing is made at load: the buffer makes it


def test_a_buffer_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    assert error(http_config(output='buffer-size-mb = 1\nbuffer-path = "%s"' % f)) == (
        'relay.toml: http[0].output[0].buffer-path: "%s" exists and is not a directory' % f
    )


def test_a_buffer_path_under_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    path = f / "deeper" / "buf"
    assert error(http_config(output='buffer-size-mb = 1\nbuffer-path = "%s"' % path)) == (
        'relay.toml: http[0].output[0].buffer-path: "%s" cannot be made: %s is not a directory'
        % (path, f)
    )


def test_a_buffer_path_whose_parents_are_to_be_made(tmp_path):
    path = tmp_path / "a" / "b" / "buf"
    out = loads(http_config(output='buffer-size-mb = 1\nbuffer-path = "%s"' % path)) \
        .http[0].outputs[0]
    assert out.buffer_path == str(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes any directory")
def test_a_buffer_path_that_cannot_be_made_or_used(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "used").mkdir()
    ro.chmod(0o500)
    (ro / "used").chmod(0o500)
    try:
        made = error(http_config(output='buffer-size-mb = 1\nbuffer-path = "%s"' % (ro / "x")))
        used = error(http_config(output='buffer-size-mb = 1\nbuffer-path = "%s"' % (ro / "used")))
    finally:
        (ro / "used").chmod(0o700)
        ro.chmod(0o700)
    assert made == ('relay.toml: http[0].output[0].buffer-path: "%s" cannot be made: no '
                    "permission to write %s" % (ro / "x", ro))
    assert used == ('relay.toml: http[0].output[0].buffer-path: "%s" cannot be used: no '
                    "permission to read and write %s" % (ro / "used", ro / "used"))


def test_check_does_not_take_the_buffers_lock(tmp_path):
    # A running relay holds it; `check` (ExecReload) runs next to it.
    import fcntl

    path = tmp_path / "buf"
    path.mkdir()
    with open(path / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        out = loads(http_config(output='buffer-size-mb = 1\nbuffer-path = "%s"' % path)) \
            .http[0].outputs[0]
    assert out.buffer_path == str(path)
