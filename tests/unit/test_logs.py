"""Log formatting and the credential filter, without sockets."""

import io
import json
import logging

import pytest

from influx_relay import logs


@pytest.mark.parametrize("text,secret", [
    ('"POST /write?db=x&u=bob&p=s3cret HTTP/1.1" 204', "s3cret"),
    ("/write?p=s3cret", "s3cret"),
    ("url: /query?q=show+databases&password=s3cret&db=x", "s3cret"),
    ("{'Authorization': 'Basic Ym9iOnMzY3JldA=='}", "Ym9iOnMzY3JldA=="),
    ("Authorization: Bearer eyJhbGciOi.s3cret", "eyJhbGciOi.s3cret"),
    ("authorization=Token s3cret-token", "s3cret-token"),
    ("sent Token abcdef0123456789 to b", "abcdef0123456789"),
    ("http://bob:s3cret@db1:8086/write", "s3cret"),
])
def test_credentials_are_masked(text, secret):
    clean = logs.redact(text)
    assert secret not in clean
    assert "***" in clean


@pytest.mark.parametrize("text", [
    "output b1: backend down: connection failed: [Errno 111] Connection refused",
    "write db=telegraf points=3 bytes=120 -> 204",
    "http listener 'h' on 127.0.0.1:9096 -> a, b",
    "a token bucket of 10 requests", "up=1 dp=2 cpu=3",
])
def test_ordinary_lines_are_untouched(text):
    assert logs.redact(text) == text


def capture(fmt):
    stream = io.StringIO()
    handler = logs.setup(verbose=True, fmt=fmt, stream=stream)
    return stream, handler


@pytest.fixture(autouse=True)
def restore_root_logger():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_parse_and_carry_the_exception():
    stream, _ = capture("json")
    log = logging.getLogger("influx_relay.test")
    log.info("write to %s failed: %s", "b1", "HTTP 500")
    try:
        raise ValueError("bad p=s3cret")
    except ValueError:
        log.exception("unexpected error with Authorization: Basic Ym9iOnMzY3JldA==")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "INFO" and first["logger"] == "influx_relay.test"
    assert first["message"] == "write to b1 failed: HTTP 500"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert second["level"] == "ERROR"
    assert "ValueError: bad p=***" in second["exception"]
    assert "s3cret" not in lines[1] and "Ym9iOnMzY3JldA==" not in lines[1]


def test_text_lines_are_redacted_too():
    stream, _ = capture("text")
    logging.getLogger("gevent.pywsgi").debug('127.0.0.1 "POST /write?db=x&u=a&p=s3cret HTTP/1.1"')
    out = stream.getvalue()
    assert "p=***" in out and "s3cret" not in out
    assert " DEBUG gevent.pywsgi: " in out


def test_throttled_logs_one_record_per_interval_and_counts_the_rest(monkeypatch, caplog):
    now = [100.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: now[0])
    warn = logs.Throttled(logging.getLogger("t"), interval=10.0)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(1000):
            warn("bad datagram %d from %s", i, "10.0.0.1")
        now[0] += 10.5
        warn("bad datagram %d from %s", 1000, "10.0.0.1")
        warn("bad datagram %d from %s", 1001, "10.0.0.1")
    assert [r.getMessage() for r in caplog.records] == [
        "bad datagram 0 from 10.0.0.1",
        "bad datagram 1000 from 10.0.0.1 (and 999 more like it in the last 10s, not logged)",
    ]


def test_an_error_in_a_greenlet_nobody_waits_for_is_one_redacted_json_record(monkeypatch):
    import gevent

    stream = io.StringIO()
    handler = logs.setup(fmt="json", stream=stream)
    hub = gevent.get_hub()
    monkeypatch.setattr(hub, "print_exception", hub.print_exception)  # undone after the test
    logs.route_hub_errors(hub)
    try:
        def bug():
            raise ValueError("lost /write?db=x&p=s3cret")

        gevent.spawn(bug).join()
    finally:
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(records) == 1, stream.getvalue()
    record = records[0]
    assert record["level"] == "ERROR" and record["logger"] == "gevent.hub"
    assert "uncaught error in" in record["message"]
    assert "ValueError: lost /write?db=x&p=***" in record["exception"]
    assert "s3cret" not in stream.getvalue()
