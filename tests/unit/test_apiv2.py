"""Writes between InfluxDB's 1.x and 2.x APIs: the request each output gets, error shapes."""

import base64
import json
from types import SimpleNamespace
from urllib.parse import parse_qs

import pytest

from influx_relay import apiv2, config
from influx_relay.responses import Response, error_response


def output(lines=""):
    text = ('[[http]]\nbind-addr = "127.0.0.1:0"\n[[http.output]]\nname = "o"\n'
            'location = "http://127.0.0.1:8086/"\n' + lines)
    return SimpleNamespace(cfg=config.loads(text).http[0].outputs[0])


V1 = output()
V2 = output('api = "v2"')
V2_ORG = output('api = "v2"\norg = "acme"')
V2_ALL = output('api = "v2"\norg = "acme"\ntoken = "tok"\nbucket = "fixed"')
HEADERS = {"Content-Type": "text/plain; charset=utf-8"}


def from_v1(query, headers=HEADERS, out=V2_ORG, default_rp=None):
    params = parse_qs(query)
    precision = params.get("precision", ["n"])[0]
    q, h = apiv2.FromV1(params, precision, default_rp)(out, query, headers)
    return q, h


def from_v2(query, headers=HEADERS, out=V1, default_rp=None):
    params = parse_qs(query)
    precision = params.get("precision", ["ns"])[0]
    return apiv2.FromV2(params, precision, default_rp)(out, query, headers)


def test_endpoints():
    assert apiv2.write_endpoint(V1) == "/write"
    assert apiv2.write_endpoint(V2) == "/api/v2/write"


# -- 1.x write -> outputs ------------------------------------------------------

def test_v1_write_to_a_v1_output_is_unchanged():
    query = "db=x&rp=y&u=a&p=b&consistency=one"
    headers = dict(HEADERS, Authorization="Basic eA==")
    q, h = from_v1(query, headers, out=V1)
    assert q is query and h is headers


@pytest.mark.parametrize("query, expected", [
    ("db=telegraf", "org=acme&bucket=telegraf/autogen&precision=ns"),
    ("db=telegraf&rp=week", "org=acme&bucket=telegraf/week&precision=ns"),
    ("db=telegraf&rp=", "org=acme&bucket=telegraf/autogen&precision=ns"),
    ("db=my%20db&rp=a%2Fb&precision=s", "org=acme&bucket=my%20db/a/b&precision=s"),
    ("db=t&precision=n", "org=acme&bucket=t/autogen&precision=ns"),
    ("db=t&precision=u", "org=acme&bucket=t/autogen&precision=us"),
    # InfluxDB 1.x reads "us" as nanoseconds: so must the 2.x output.
    ("db=t&precision=us", "org=acme&bucket=t/autogen&precision=ns"),
    ("db=t&precision=ms&consistency=all&u=joe&p=pw", "org=acme&bucket=t/autogen&precision=ms"),
])
def test_v1_write_to_a_v2_output_maps_db_rp_to_a_bucket(query, expected):
    assert from_v1(query)[0] == expected


def test_v1_write_default_retention_policy_names_the_bucket():
    assert from_v1("db=t", default_rp="two weeks")[0] == \
        "org=acme&bucket=t/two%20weeks&precision=ns"
    assert from_v1("db=t&rp=mine", default_rp="two weeks")[0] == \
        "org=acme&bucket=t/mine&precision=ns"


def test_v1_write_to_a_v2_output_without_org_sends_none():
    assert from_v1("db=t", out=V2)[0] == "bucket=t/autogen&precision=ns"


def test_v1_write_to_a_v2_output_with_fixed_bucket_and_token():
    q, h = from_v1("db=t&rp=r&p=pw", dict(HEADERS, Authorization="Token client"), out=V2_ALL)
    assert q == "org=acme&bucket=fixed&precision=ns"
    assert h == dict(HEADERS, Authorization="Token tok")


@pytest.mark.parametrize("query, auth, expected", [
    ("db=t&u=joe&p=s3cret", None, "Token s3cret"),
    ("db=t&p=s3cret", None, "Token s3cret"),
    ("db=t", "Basic " + base64.b64encode(b"joe:s3:cret").decode(), "Token s3:cret"),
    ("db=t&u=x&p=y", "Token abc", "Token abc"),    # a header wins over p=, as in InfluxDB
    ("db=t", "Bearer jwt", "Bearer jwt"),
    ("db=t", "Basic !!!", "Basic !!!"),            # not base64: the backend will say 401
    ("db=t", None, None),
])
def test_v1_credentials_reach_a_v2_output_as_a_token(query, auth, expected):
    headers = dict(HEADERS)
    if auth:
        headers["Authorization"] = auth
    _, h = from_v1(query, headers)
    assert h.get("Authorization") == expected
    assert h["Content-Type"] == HEADERS["Content-Type"]


def test_v1_precisions_without_a_v2_name():
    for p in ("n", "ns", "u", "us", "ms", "s"):
        assert apiv2.v1_precision_has_v2_name(p)
    for p in ("m", "h"):
        assert not apiv2.v1_precision_has_v2_name(p)


# -- 2.x write -> outputs ------------------------------------------------------

@pytest.mark.parametrize("query, expected", [
    ("org=o&bucket=telegraf", "db=telegraf&precision=n"),
    ("org=o&bucket=telegraf/week", "db=telegraf&rp=week&precision=n"),
    ("org=o&bucket=telegraf/", "db=telegraf&precision=n"),
    ("bucket=db/rp/with/slashes&precision=us", "db=db&rp=rp/with/slashes&precision=u"),
    ("bucket=d&precision=ns", "db=d&precision=n"),
    ("bucket=d&precision=ms", "db=d&precision=ms"),
    ("bucket=d&precision=s", "db=d&precision=s"),
    ("bucket=my%20db", "db=my%20db&precision=n"),
])
def test_v2_write_to_a_v1_output_splits_the_bucket(query, expected):
    assert from_v2(query)[0] == expected


def test_v2_write_to_a_v1_output_default_retention_policy():
    assert from_v2("bucket=d", default_rp="r")[0] == "db=d&rp=r&precision=n"
    assert from_v2("bucket=d/x", default_rp="r")[0] == "db=d&rp=x&precision=n"


def test_v2_write_to_a_v1_output_keeps_the_authorization_header():
    headers = dict(HEADERS, Authorization="Token joe:pw")
    assert from_v2("org=o&bucket=d", headers)[1] is headers


def test_v2_write_to_a_v2_output_passes_through():
    query = "org=o&bucket=b&precision=s&orgID=123"
    headers = dict(HEADERS, Authorization="Token client")
    q, h = from_v2(query, headers, out=V2)
    assert q is query and h is headers


def test_v2_write_to_a_v2_output_with_org_bucket_token():
    headers = dict(HEADERS, Authorization="Token client")
    q, h = from_v2("orgID=123&org=o&bucket=b&precision=s", headers, out=V2_ALL)
    assert parse_qs(q) == {"org": ["acme"], "bucket": ["fixed"], "precision": ["s"]}
    assert h["Authorization"] == "Token tok"
    q, h = from_v2("org=o&bucket=b", headers, out=V2_ORG)
    assert q == "org=acme&bucket=b"
    assert h is headers


# -- errors ----------------------------------------------------------------------

def body(response):
    return json.loads(response.body)


@pytest.mark.parametrize("status, code", [
    (400, "invalid"), (401, "unauthorized"), (403, "forbidden"), (404, "not found"),
    (405, "method not allowed"), (413, "request too large"), (415, "invalid"),
    (422, "unprocessable entity"), (429, "too many requests"), (500, "internal error"),
    (502, "internal error"), (503, "unavailable"),
])
def test_v2_error_shape(status, code):
    r = apiv2.error_response(status, "oops")
    assert r.status == status
    assert body(r) == {"code": code, "message": "oops"}
    assert r.content_type.startswith("application/json")


def test_as_v2():
    ok = Response(204, b"", "")
    assert apiv2.as_v2(ok) is ok
    v2 = apiv2.error_response(422, "partial write")
    assert apiv2.as_v2(v2) is v2
    r = apiv2.as_v2(error_response(400, 'partial write: field type conflict'))
    assert (r.status, body(r)) == (400, {"code": "invalid",
                                         "message": "partial write: field type conflict"})
    r = apiv2.as_v2(error_response(503, "unable to write points"))
    assert body(r) == {"code": "unavailable", "message": "unable to write points"}
    r = apiv2.as_v2(Response(413, b"<html>Too big</html>\n", "text/html"))
    assert (r.status, body(r)) == (413, {"code": "request too large",
                                         "message": "<html>Too big</html>"})
    r = apiv2.as_v2(Response(500, b"", ""))
    assert body(r) == {"code": "internal error", "message": "HTTP 500"}


def test_as_v1():
    v1 = error_response(400, "bad")
    assert apiv2.as_v1(v1) is v1
    r = apiv2.as_v1(apiv2.error_response(422, "partial write: 1 point rejected"))
    assert (r.status, body(r)) == (422, {"error": "partial write: 1 point rejected"})
    html = Response(502, b"<html/>", "text/html")
    assert apiv2.as_v1(html) is html
    ok = Response(204, b"", "")
    assert apiv2.as_v1(ok) is ok
