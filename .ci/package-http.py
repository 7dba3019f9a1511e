#!/usr/bin/env python3
"""HTTP helpers for .ci/package.sh (standard library only).

    package-http.py backend PORTFILE BODIES   a fake InfluxDB on 127.0.0.1:<free port>:
                                              writes its port to PORTFILE, answers
                                              /ping and /write with 204 and appends
                                              each /write body (one per line) to BODIES
    package-http.py write URL BODY [SECONDS]  POST BODY to URL, retrying refused
                                              connections for SECONDS; prints the status
    package-http.py wait-for FILE TEXT [SECONDS]
                                              wait until FILE contains TEXT
    package-http.py free-port                 print a free TCP and UDP port on 127.0.0.1
"""

import http.server
import os
import socket
import sys
import time
import urllib.error
import urllib.request


class Backend(http.server.BaseHTTPRequestHandler):
    bodies = None

    def do_GET(self):
        self._answer()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path.split("?")[0].endswith("/write"):
            with open(self.bodies, "ab") as f:
                f.write(body.rstrip(b"\n") + b"\n")
        self._answer()

    def _answer(self):
        self.send_response(204)
        self.send_header("X-Influxdb-Version", "1.8-fake")
        self.end_headers()

    def log_message(self, fmt, *args):
        sys.stderr.write("fake backend: %s\n" % (fmt % args))


def backend(portfile, bodies):
    Backend.bodies = bodies
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % server.server_address[1])
    os.rename(tmp, portfile)
    server.serve_forever()


def write(url, body, seconds="20"):
    deadline = time.monotonic() + float(seconds)
    while True:
        req = urllib.request.Request(url, data=body.encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                print(resp.status)
                return 0
        except urllib.error.HTTPError as e:
            print(e.code, e.read().decode(errors="replace").strip())
            return 1
        except (ConnectionError, urllib.error.URLError) as e:
            if time.monotonic() > deadline:
                print("no answer from %s: %s" % (url, e))
                return 1
            time.sleep(0.2)


def wait_for(path, text, seconds="10"):
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                if text in f.read():
                    return 0
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    print("%s: %r did not arrive within %ss" % (path, text, seconds))
    return 1


def free_port():
    # A port free for both TCP and UDP, so a config may use it for either.
    for _ in range(50):
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            print(port)
            return 0
    return 1


def main(argv):
    commands = {"backend": backend, "write": write, "wait-for": wait_for, "free-port": free_port}
    if not argv or argv[0] not in commands:
        sys.stderr.write(__doc__)
        return 2
    return commands[argv[0]](*argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
