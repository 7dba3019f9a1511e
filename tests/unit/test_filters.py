"""[[filter]] routing: which lines each output takes, and the series keys it reads."""

import re
from types import SimpleNamespace

import pytest

from influx_relay import lineprotocol
from influx_relay.config import FilterConfig
from influx_relay.filters import Router


@pytest.mark.parametrize(
    "line, measurement, tags",
    [
        (b"cpu v=1 5", "cpu", []),
        (b"cpu,host=a,region=eu v=1", "cpu", ["host", "region"]),
        (b"  cpu,host=a v=1", "cpu", ["host"]),
        (b'my\\ cpu,ho\\,st=a\\ b,x\\=y=1 f="a b" 5', "my cpu", ["ho,st", "x=y"]),
        (b"m\\,x,t=1 v=1", "m,x", ["t"]),
        (b'q"uote,t"k=v v=1', 'q"uote', ['t"k']),
        ("m\u00e9tric,t\u00e4g=v v=1".encode(), "m\u00e9tric", ["t\u00e4g"]),
    ],
)
def test_series_keys(line, measurement, tags):
    assert lineprotocol.parse_series_key(lineprotocol.series_key(line)) == (measurement, tags)


class FakeOutput(object):
    """What the router reads of an Output (hashable, like the real one)."""

    def __init__(self, name, filters):
        self.name = name
        self.cfg = SimpleNamespace(filters=filters)


def output(name, *filters):
    return FakeOutput(name, filters)


def flt(measurement=None, tag=None):
    return FilterConfig(
        name="f", outputs=("x",),
        measurement_expression=re.compile(measurement) if measurement else None,
        tag_expression=re.compile(tag) if tag else None,
    )


LINES = [
    b"cpu,host=a v=1 1",
    b"mem,host=a,region=eu v=2 2",
    b"disk v=3 3",
    b"cpu,host=b,dc=x v=4 4",
    b"cpu_total,host=c v=5 5",
]
BODY = b"\n".join(LINES)


def test_unfiltered_outputs_get_the_body_itself():
    a, b = output("a"), output("b", flt(measurement="^cpu$"))
    bodies = Router([a, b]).split(LINES, BODY)
    assert bodies[a] is BODY
    assert bodies[b] == b"cpu,host=a v=1 1\ncpu,host=b,dc=x v=4 4"


def test_no_filter_no_router():
    assert not Router([output("a"), output("b")])


def test_measurement_expressions_match_anywhere_unless_anchored():
    a = output("a", flt(measurement="cpu"))
    assert Router([a]).split(LINES, BODY)[a].split(b"\n") == [LINES[0], LINES[3], LINES[4]]


def test_every_tag_key_must_match_every_tag_expression():
    a = output("a", flt(tag="^(host|region)$"))
    # disk has no tags: nothing to fail. cpu with dc=x fails.
    assert Router([a]).split(LINES, BODY)[a].split(b"\n") == [
        LINES[0], LINES[1], LINES[2], LINES[4]]


def test_several_filters_on_one_output_must_all_pass():
    a = output("a", flt(measurement="^cpu"), flt(tag="^host$"), flt(measurement="total$"))
    assert Router([a]).split(LINES, BODY)[a] == LINES[4]


def test_an_output_taking_nothing_gets_an_empty_body():
    a, b = output("a", flt(measurement="^nothing$")), output("b", flt(measurement="."))
    bodies = Router([a, b]).split(LINES, BODY)
    assert bodies[a] == b""
    assert bodies[b] is BODY  # took every line: no copy
