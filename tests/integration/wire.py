"""A raw client for the relay's HTTP server: bytes in, whole responses out, as
the tests of what crosses the wire need (no HTTP library between them and the
relay to tidy a request up or read an answer leniently)."""

import socket


def port_of(r):
    return int(r.url.rsplit(":", 1)[1])


class Client(object):
    """A raw connection to the relay that reads whole responses."""

    def __init__(self, r):
        self.sock = socket.create_connection(("127.0.0.1", port_of(r)))
        self.sock.settimeout(5)
        self.buf = b""

    def sendall(self, data):
        self.sock.sendall(data)

    def recv(self, n):
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        return self.sock.recv(n)

    def close(self):
        self.sock.close()


def read_response(s):
    """One response from Client ``s``: (status, headers dict lowercased, body)."""
    data, s.buf = s.buf, b""
    while b"\r\n\r\n" not in data:
        chunk = s.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed after %r" % data)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = s.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in a body")
        rest += chunk
    s.buf = rest[length:]
    return status, headers, rest[:length]


def closed(s, timeout=2.0):
    """Whether the relay closes the connection (with nothing more to read)."""
    if s.buf:
        return False
    s.sock.settimeout(timeout)
    try:
        return s.sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def connect(r):
    return Client(r)


def post(body, path=b"/write?db=test", extra=b""):
    return (b"POST %s HTTP/1.1\r\nHost: relay\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path, len(body), extra, body))
