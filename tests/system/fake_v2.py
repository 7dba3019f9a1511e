"""A fake InfluxDB 2.x write endpoint for the system tests, in a thread.

No InfluxDB 2.x or 3.x server is packaged by Debian or PyPI, so the 2.x side
of a mixed pair is this: it answers ``POST /api/v2/write`` the way InfluxDB
OSS 2.x does for the checks it can make without storage (a bucket and an org
are required, the precision must be ns, us, ms or s, the token must match when
one is set) and records every request, so a test can check the lines, query
and token it got. It runs on the standard library's threading HTTP server, so
it works whether or not the test process is monkey-patched by gevent.
"""

import json
import threading
from collections import namedtuple
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

Request = namedtuple("Request", "method path query params headers body")


class FakeV2(object):
    def __init__(self, token=None):
        self.token = token
        self.requests = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.server.server_address[1]

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    @property
    def writes(self):
        return [r for r in self.requests if r.path == "/api/v2/write"]

    @property
    def lines(self):
        return [line for r in self.writes for line in r.body.split(b"\n") if line]

    def answer(self, request):
        """(status, JSON body or None) for one request."""
        if request.path != "/api/v2/write":
            return 404, {"code": "not found", "message": "path not found"}
        params = request.params
        if self.token is not None and request.headers.get("Authorization") != "Token " + self.token:
            return 401, {"code": "unauthorized", "message": "unauthorized access"}
        if params.get("precision", ["ns"])[0] not in ("ns", "us", "ms", "s"):
            return 400, {"code": "invalid", "message": "invalid precision; valid precision "
                                                       "units are ns, us, ms, and s"}
        if not params.get("bucket", [""])[0]:
            return 404, {"code": "not found", "message": "bucket not found"}
        if not params.get("org", [""])[0] and not params.get("orgID", [""])[0]:
            return 400, {"code": "invalid", "message": "Please provide either orgID or org"}
        return 204, None


def _handler(fake):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            url = urlsplit(self.path)
            request = Request("POST", url.path, url.query, parse_qs(url.query),
                              dict(self.headers.items()), body)
            status, obj = fake.answer(request)
            fake.requests.append(request)
            data = json.dumps(obj).encode() if obj is not None else b""
            self.send_response(status)
            self.send_header("X-Influxdb-Version", "v2.7-fake")
            self.send_header("Content-Length", str(len(data)))
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    return Handler
