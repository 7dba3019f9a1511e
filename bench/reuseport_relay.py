#!/usr/bin/env python3
"""Experiment, not a feature: COPIES relay processes sharing one port (SO_REUSEPORT).

    reuseport_relay.py COPIES CONFIG

Each copy is a whole relay with its own buffers, as several relays behind a load
balancer are; the kernel spreads connections over them. bench/http_bench.sh runs
this when RELAY_COPIES > 1. The parent only forks the copies, passes SIGTERM and
SIGINT on, and exits when they have.
"""
import os
import signal
import socket
import sys


def run_copy(config):
    from gevent import monkey

    monkey.patch_all()
    import gevent.server

    def reuseport_listener(address, backlog=50, reuse_addr=None, family=socket.AF_INET):
        sock = gevent.server.GeventSocket(family=family)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(0)
        return sock

    gevent.server._tcp_listener = reuseport_listener
    sys.argv = ["influx-relay", "run", "--config", config]
    from influx_relay.cli import main

    sys.exit(main())


def main():
    copies, config = int(sys.argv[1]), sys.argv[2]
    children = []
    for _ in range(copies):
        pid = os.fork()
        if pid == 0:
            run_copy(config)
        children.append(pid)

    def forward(signum, frame):
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for pid in children:
        while True:
            try:
                _, st = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
        status = status or os.waitstatus_to_exitcode(st)
    sys.exit(status)


if __name__ == "__main__":
    main()
