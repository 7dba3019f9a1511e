"""systemd's service notifications (sd_notify), without libsystemd.

Under ``Type=notify`` systemd passes a datagram socket in ``$NOTIFY_SOCKET``;
the relay says ``READY=1`` once every listener is bound (so ``systemctl
start`` returns, and units ordered after it start, only when writes are
taken), ``RELOADING=1`` and ``READY=1`` around a SIGHUP reload, and
``STOPPING=1`` when it begins to drain. Outside systemd, it does nothing.
"""

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


def notify(*states):
    """Send ``states`` (``"READY=1"``, ``"STATUS=..."``) to systemd, if it listens.

    Returns whether they were sent. A failure is logged, never raised: the
    relay runs on whatever systemd thinks of it.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall("\n".join(states).encode("utf-8"))
        return True
    except OSError as e:
        log.warning("could not notify systemd on %s: %s", os.environ.get("NOTIFY_SOCKET"), e)
        return False


def reloading():
    """``RELOADING=1`` with the monotonic time systemd asks for (systemd 253+)."""
    return notify("RELOADING=1", "MONOTONIC_USEC=%d" % (time.monotonic_ns() // 1000))
