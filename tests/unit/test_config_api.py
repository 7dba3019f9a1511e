"""Config keys of the veepee-parity endpoints, filters and per-output credentials:
defaults, validation and the exact errors a user sees."""

import subprocess

import pytest

from influx_relay import config
from influx_relay.config import loads

from .test_config import SAMPLE, error, http_config, http_output

FILE = "relay.toml"


def listener(lines):
    return loads(http_config(listener=lines)).http[0]


def test_listener_defaults():
    lst = listener("")
    assert lst.default_ping_response == 204
    assert lst.health_timeout_ms == 10000
    assert lst.rate_limit == 0 and lst.burst_limit == 1
    assert lst.admin_enabled is False and lst.admin_token is None


def test_output_defaults():
    out = http_output("")
    assert (out.username, out.password, out.token, out.ca_file, out.filters) == (
        None, None, None, None, (),
    )


def test_every_new_key_is_read():
    lst = listener(
        "default-ping-response = 200\nhealth-timeout-ms = 1500\nrate-limit = 2.5\n"
        'burst-limit = 7\nadmin-enabled = true\nadmin-token = "t0k"'
    )
    assert (lst.default_ping_response, lst.health_timeout_ms) == (200, 1500)
    assert (lst.rate_limit, lst.burst_limit) == (2.5, 7)
    assert (lst.admin_enabled, lst.admin_token) == (True, "t0k")
    out = http_output('username = "relay"\npassword = "pw"')
    assert (out.username, out.password) == ("relay", "pw")
    assert http_output('token = "abc"').token == "abc"


@pytest.mark.parametrize("rate, burst", [(1, 1), (10, 10), (2.5, 3), (0.2, 1), (0, 1)])
def test_burst_defaults_to_the_rate_rounded_up(rate, burst):
    lst = listener("rate-limit = %s" % rate)
    assert (lst.rate_limit, lst.burst_limit) == (float(rate), burst)


def test_secrets_are_not_in_reprs():
    out = http_output('username = "relay"\npassword = "hunter2"')
    assert "hunter2" not in repr(out)
    assert "tok3n" not in repr(http_output('token = "tok3n"'))
    lst = listener('admin-enabled = true\nadmin-token = "s3cr3t"')
    assert "s3cr3t" not in repr(lst)


@pytest.mark.parametrize(
    "text, message",
    [
        (http_config(listener="default-ping-response = 199"),
         "http[0].default-ping-response: 199 must be between 200 and 599"),
        (http_config(listener="default-ping-response = 600"),
         "http[0].default-ping-response: 600 must be between 200 and 599"),
        (http_config(listener='default-ping-response = "204"'),
         'http[0].default-ping-response: "204" must be an integer'),
        (http_config(listener="health-timeout-ms = 0"),
         "http[0].health-timeout-ms: 0 must be between 1 and 9223369200000"),
        (http_config(listener='health-timeout-ms = "10s"'),
         'http[0].health-timeout-ms: "10s" must be an integer'),
        (http_config(listener="rate-limit = -1"),
         "http[0].rate-limit: -1 must be a number of requests per second between 0 and 9007199254740992"),
        (http_config(listener="rate-limit = nan"),
         "http[0].rate-limit: nan must be a number of requests per second between 0 and 9007199254740992"),
        (http_config(listener='rate-limit = "10"'), 'http[0].rate-limit: "10" must be a number'),
        (http_config(listener="rate-limit = true"), "http[0].rate-limit: true must be a number"),
        (http_config(listener="rate-limit = 5\nburst-limit = 0"),
         "http[0].burst-limit: 0 must be between 1 and 9007199254740992"),
        (http_config(listener="rate-limit = 5\nburst-limit = 1.5"),
         "http[0].burst-limit: 1.5 must be an integer"),
        (http_config(listener="burst-limit = 5"),
         "http[0].burst-limit: needs rate-limit (greater than 0)"),
        (http_config(listener='admin-enabled = "yes"'),
         'http[0].admin-enabled: "yes" must be true or false'),
        (http_config(listener='admin-token = "x"'),
         "http[0].admin-token: is set but admin-enabled is not true"),
        (http_config(listener='admin-enabled = true\nadmin-token = ""'),
         "http[0].admin-token: must not be empty"),
        (http_config(listener="admin-enabled = true\nadmin-token = 12345"),
         "http[0].admin-token: must be a string"),
        (http_config(output='username = "u"'), "http[0].output[0].password: is required with username"),
        (http_config(output='password = "p"'), "http[0].output[0].username: is required with password"),
        (http_config(output='token = "t"\nusername = "u"\npassword = "p"'),
         "http[0].output[0].token: use either token or username and password, not both"),
        (http_config(output='password = 1234\nusername = "u"'),
         "http[0].output[0].password: must be a string"),
        (http_config(output='token = ""'), "http[0].output[0].token: must not be empty"),
    ],
)
def test_value_errors(text, message):
    assert error(text) == "%s: %s" % (FILE, message)


def test_a_bad_password_is_not_quoted_in_the_error():
    message = error(http_config(output='username = "u"\npassword = ["hunter2"]'))
    assert "hunter2" not in message


# ---------------------------------------------------------------------------
# ca-file

@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory):
    d = tmp_path_factory.mktemp("ca")
    key, cert = d / "ca.key", d / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=test-ca"],
        check=True, capture_output=True,
    )
    return str(cert)


def https_config(output):
    return http_config(output=output).replace("http://127.0.0.1:8086/", "https://db.example:8086/")


def test_ca_file_is_read(ca_pem):
    out = loads(https_config('ca-file = "%s"' % ca_pem)).http[0].outputs[0]
    assert out.ca_file == ca_pem and out.scheme == "https"


def test_ca_file_must_be_readable(tmp_path):
    missing = tmp_path / "nope.pem"
    assert error(https_config('ca-file = "%s"' % missing)) == (
        '%s: http[0].output[0].ca-file: "%s" cannot be read: No such file or directory'
        % (FILE, missing)
    )


def test_ca_file_must_be_pem(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    message = error(https_config('ca-file = "%s"' % bad))
    assert message.startswith(
        '%s: http[0].output[0].ca-file: "%s" is not a PEM file of CA certificates: ' % (FILE, bad)
    )


def test_ca_file_needs_an_https_location(ca_pem):
    assert error(http_config(output='ca-file = "%s"' % ca_pem)) == (
        '%s: http[0].output[0].ca-file: is only used with an https location, '
        'not "http://127.0.0.1:8086/"' % FILE
    )


# ---------------------------------------------------------------------------
# [[filter]]

TWO_OUTPUTS = (
    '[[http]]\nbind-addr = "127.0.0.1:0"\n'
    '[[http.output]]\nname = "a"\nlocation = "http://127.0.0.1:8086/"\n'
    '[[http.output]]\nname = "b"\nlocation = "http://127.0.0.1:8087/"\n'
)


def test_filters_attach_to_the_outputs_they_name():
    cfg = loads(TWO_OUTPUTS + (
        '[[filter]]\nname = "sys"\nmeasurement-expression = "^cpu"\noutputs = ["b"]\n'
        '[[filter]]\ntag-expression = "^host$"\noutputs = ["a", "b"]\n'
    ))
    first, second = cfg.filter
    assert first.name == "sys" and second.name == "filter[1]"
    assert first.measurement_expression.pattern == "^cpu" and first.tag_expression is None
    assert second.tag_expression.pattern == "^host$" and second.outputs == ("a", "b")
    a, b = cfg.http[0].outputs
    assert a.filters == (second,)
    assert b.filters == (first, second)


def test_inline_filter_array():
    cfg = loads(TWO_OUTPUTS.replace("[[http]]", 'filter = [{ measurement-expression = "x", '
                                    'outputs = ["a"] }]\n[[http]]'))
    assert cfg.http[0].outputs[0].filters == cfg.filter


def test_a_filter_applies_to_same_named_outputs_of_every_listener():
    cfg = loads(TWO_OUTPUTS + TWO_OUTPUTS.replace('"127.0.0.1:0"', '"127.0.0.1:1"') + (
        '[[filter]]\nmeasurement-expression = "m"\noutputs = ["a"]\n'))
    assert [o.filters for lst in cfg.http for o in lst.outputs] == [
        cfg.filter, (), cfg.filter, ()]


@pytest.mark.parametrize(
    "table, message",
    [
        ('measurement-expression = "("\noutputs = ["a"]',
         'filter[0].measurement-expression: "(" is not a valid regular expression: '
         "missing ), unterminated subpattern at position 0"),
        ('tag-expression = "[a-"\noutputs = ["a"]',
         'filter[0].tag-expression: "[a-" is not a valid regular expression: '
         "unterminated character set at position 0"),
        ('tag-expression = 1\noutputs = ["a"]', "filter[0].tag-expression: 1 must be a string"),
        ('outputs = ["a"]', "filter[0]: a filter needs tag-expression or measurement-expression"),
        ('tag-expression = "x"', "filter[0].outputs: required key is missing"),
        ('tag-expression = "x"\noutputs = []', "filter[0].outputs: must not be empty"),
        ('tag-expression = "x"\noutputs = "a"',
         'filter[0].outputs: "a" must be an array of output names (e.g. ["a", "b"])'),
        ('tag-expression = "x"\noutputs = ["a", "c"]',
         'filter[0].outputs[1]: "c" is not the name of an HTTP output (known outputs: a, b)'),
        ('tag-expression = "x"\noutputs = ["bb"]',
         'filter[0].outputs[0]: "bb" is not the name of an HTTP output (did you mean "b"?)'),
        ('tag-expression = "x"\noutputs = ["a"]\noutput = ["b"]',
         'filter[0].output: unknown key (did you mean "outputs"?)'),
    ],
)
def test_filter_errors(table, message):
    assert error(TWO_OUTPUTS + "[[filter]]\n" + table) == "%s: %s" % (FILE, message)


def test_two_filters_with_one_name():
    text = TWO_OUTPUTS + '[[filter]]\nname = "f"\ntag-expression = "x"\noutputs = ["a"]\n' * 2
    assert error(text) == '%s: filter[1].name: "f" is used by filter filter[0] too' % FILE


def test_a_filter_needs_an_http_listener():
    text = ('[[udp]]\nbind-addr = "127.0.0.1:0"\noutput = [{name = "a", location = "h:1"}]\n'
            '[[filter]]\ntag-expression = "x"\noutputs = ["a"]\n')
    assert error(text) == (
        '%s: filter[0].outputs[0]: "a" is not the name of an HTTP output (there are none)' % FILE
    )


# ---------------------------------------------------------------------------
# sample.toml

def test_sample_commented_filter_loads():
    lines = SAMPLE.read_text().splitlines()
    start = lines.index("# [[filter]]")
    example = "\n".join(
        line[2:] for line in lines[start:start + 9] if not line.startswith("# #")
    )
    cfg = config.load(str(SAMPLE))
    text = SAMPLE.read_text() + "\n" + example + "\n"
    (f,) = loads(text).filter
    assert f.name == "only-system-metrics" and f.outputs == ("local-influxdb02",)
    assert cfg.filter == ()


def test_influxdb_relay_http_user_and_http_pass_are_username_and_password():
    from influx_relay import config as c

    text = (
        '[[http]]\nbind-addr = "127.0.0.1:0"\n'
        'output = [{ name = "a", location = "http://127.0.0.1:8086/write", '
        'http-user = "u", http-pass = "pw" }]\n'
    )
    (out,) = c.loads(text, "relay.toml").http[0].outputs
    assert (out.username, out.password) == ("u", "pw")
    both = text.replace('http-user = "u"', 'http-user = "u", username = "v"')
    with pytest.raises(c.ConfigError) as e:
        c.loads(both, "relay.toml")
    assert "http-user" in str(e.value) and "username" in str(e.value)
