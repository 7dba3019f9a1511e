"""HTTP/1.1 conformance, case by case: one small file per request or response.

``http_cases/requests/{valid,invalid}/*.txt`` are requests sent as they are to a
running relay; ``http_cases/responses/{valid,invalid}/*.txt`` answers a scripted
backend gives the relay's client. Each file holds the raw message, one line of
the file per line of the message, with its line end and any odd byte written as
an escape (``\\r\\n``, ``\\n``, ``\\r``, ``\\t``, ``\\xNN``), after ``#`` lines:

    # what the case is about (optional)
    # expect: 400 a fragment of the error message    (or: 204; for responses:
    #                                                  200 body, or: error fragment)
    # body: what the backend must receive             (valid requests)

A refused request gets its status with a JSON error naming the problem, and the
connection closes; the backend receives nothing. A valid one is written, and the
connection then serves a second request, so its framing was read right (the
smuggling class of bugs: two parsers disagreeing on where a message ends).
"""

import codecs
import json
from pathlib import Path

import pytest

from influx_relay.errors import BackendError

from .conftest import eventually, http_config
from .fakes import Scripted, post
from .wire import closed, connect, read_response

CASES = Path(__file__).resolve().parent / "http_cases"


def load(path):
    meta = {}
    raw = []
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("# ") and not raw:
            key, sep, value = line[2:].partition(": ")
            if sep and key in ("expect", "body"):
                meta[key] = value
            continue
        raw.append(line)
    message = codecs.escape_decode("".join(raw).encode("latin-1"))[0]
    return meta, message


def cases(kind, validity):
    paths = sorted((CASES / kind / validity).glob("*.txt"))
    assert paths, "no cases in %s/%s" % (kind, validity)
    return pytest.mark.parametrize("path", paths, ids=[p.stem for p in paths])


@cases("requests", "invalid")
def test_invalid_requests_are_refused_by_name_and_closed(relay, backends, path):
    meta, message = load(path)
    status, _, fragment = meta["expect"].partition(" ")
    b = backends()
    r = relay(http_config(b))
    s = connect(r)
    s.sendall(message)
    got, headers, body = read_response(s)
    assert got == int(status), body
    assert fragment in json.loads(body)["error"], body
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert closed(s)
    assert b.requests == []
    assert r.write(b"cpu v=1 1").status == 204  # and the relay goes on


@cases("requests", "valid")
def test_valid_requests_are_written_and_the_connection_goes_on(relay, backends, path):
    meta, message = load(path)
    b = backends()
    r = relay(http_config(b))
    s = connect(r)
    s.sendall(message)
    got, headers, body = read_response(s)
    assert got == int(meta["expect"]), body
    expected = meta["body"].encode("latin-1")
    if expected:
        assert eventually(lambda: b.bodies) == [expected]
    else:
        assert b.requests == []
    if b" HTTP/1.0\r\n" not in message.split(b"\n", 1)[0] + b"\n":
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: relay\r\n\r\n")
        assert read_response(s)[0] == 204
    s.close()


@cases("responses", "valid")
def test_valid_responses_are_read(path):
    meta, message = load(path)
    status, _, body = meta["expect"].partition(" ")
    s = Scripted([message], close_after=True)
    try:
        response = post(s.backend())
    finally:
        s.stop()
    assert (response.status, response.body) == (int(status), body.encode())


@cases("responses", "invalid")
def test_invalid_responses_are_no_answer(path):
    meta, message = load(path)
    fragment = meta["expect"].partition(" ")[2]
    s = Scripted([message], close_after=True)
    try:
        with pytest.raises(BackendError) as e:
            post(s.backend())
    finally:
        s.stop()
    assert fragment in str(e.value)
