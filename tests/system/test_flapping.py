"""Jepsen-style schedules: real influxd going down and up under a steady write load.

Two client threads write through the relay without a pause, every point
distinct and stamped by the relay, plus one point each overwrites with every
request. Meanwhile a seeded schedule stops (SIGTERM) or kills (SIGKILL) an
influxd and restarts it on the same ports at random intervals. At the end,
with every server up, each database holds every point the client got 204
for, at the same time and value, nothing never sent, and the overwritten
point's last acknowledged value (:func:`.workload.check_delivery`).

The schedules are short here (``FLAP_SECONDS``, 12 s by default) to keep CI
fast; ``INFLUX_RELAY_FLAP_SECONDS=300`` runs them for five minutes. The seeds
are fixed, so a failure replays the same schedule (timing aside);
``INFLUX_RELAY_FAULT_SEED=N`` shifts them, to explore other schedules.
"""

import os
import random
import time

from .helpers import wait_until
from .workload import Writer, assert_hub_never_blocked, check_delivery, drained

FLAP_SECONDS = float(os.environ.get("INFLUX_RELAY_FLAP_SECONDS", "12"))
SEED = int(os.environ.get("INFLUX_RELAY_FAULT_SEED", "0"))  # added to each test's own


def relay_config(port, servers, buffer_dir=None):
    text = 'shutdown-timeout = "5s"\n[[http]]\nname = "flap"\nbind-addr = "127.0.0.1:%d"\n' % port
    for name, server in zip("ab", servers):
        text += ('\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "2s"\n'
                 'buffer-size-mb = 64\nmax-delay-interval = "500ms"\n' % (name, server.url))
        if buffer_dir is not None:
            text += 'buffer-path = "%s"\n' % (buffer_dir / name)
    return text


def take_down(rng, server):
    """Stop a server, gracefully or not, as the schedule's dice say."""
    if rng.random() < 0.5:
        server.kill()
        return "killed"
    server.stop()
    return "stopped"


def run_schedule(rng, pick, seconds, down=(0.3, 1.5), up=(0.3, 1.5)):
    """Until ``seconds`` are up: wait, take ``pick()`` down, wait, restart it. Returns the log."""
    events = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(*up))
        server = pick()
        how = take_down(rng, server)
        time.sleep(rng.uniform(*down))
        server.restart()
        events.append("%s %s" % (how, server.port))
    return events


def finish(writer, relay, servers, db):
    """A clean tail with every server up, then the delivery check."""
    time.sleep(1.5)
    writer.stop()
    print(writer.summary())
    wait_until(lambda: drained(relay.url), 30, what="every backlog delivered")
    figures = check_delivery(writer, servers, db)
    assert_hub_never_blocked(relay)
    assert all(writer.last_ok.values()), "failed with every server up: " + writer.summary()
    print(figures)
    return figures


def test_one_backend_flapping_with_memory_buffers(hub_watch, influxd_pair, db, relay_factory,
                                                  relay_port):
    a, b = influxd_pair
    relay = relay_factory(relay_config(relay_port, (a, b)), relay_port)
    writer = Writer(relay.url, db, threads=2, points=5, interval=0).start()
    writer.wait_requests(20)
    events = run_schedule(random.Random(8 + SEED), lambda: b, FLAP_SECONDS)
    print("schedule:", ", ".join(events))
    finish(writer, relay, (a, b), db)
    # a never went down: every single write was acknowledged.
    assert set(writer.statuses) == {204}, writer.summary()
    assert len(events) >= 3


def test_each_backend_in_turn_with_disk_buffers(hub_watch, influxd_pair, db, relay_factory,
                                                relay_port, tmp_path):
    a, b = influxd_pair
    relay = relay_factory(relay_config(relay_port, (a, b), buffer_dir=tmp_path / "buffers"),
                          relay_port)
    writer = Writer(relay.url, db, threads=2, points=5, interval=0).start()
    writer.wait_requests(20)
    turn = iter([a, b] * 1000)
    events = run_schedule(random.Random(9 + SEED), lambda: next(turn), FLAP_SECONDS)
    print("schedule:", ", ".join(events))
    finish(writer, relay, (a, b), db)
    # Never both down at once, so a write fails only when the server left up still has a
    # backlog to deliver first and cannot within its timeout: the client gets 503.
    assert set(writer.statuses) <= {204, 503}, writer.summary()
    assert writer.statuses[204] > 10 * writer.statuses[503], writer.summary()
    assert len(events) >= 4
