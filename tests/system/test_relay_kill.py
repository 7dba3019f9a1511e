"""The relay itself SIGKILLed under load, with disk buffers and a backend down across the kills.

The promise of ``buffer-path``: a write the client got 2xx for reaches every
backend, even if the relay is killed at any moment and restarted, and the
backend comes back later. Here the relay is killed at seeded random moments
while two clients write without a pause and influxd b is down throughout;
each time a new relay process starts on the same port and buffer
directories. After the last restart b comes back, and every acknowledged
point must be on both servers.
"""

import os
import random
import time

from .helpers import wait_until
from .workload import Writer, assert_hub_never_blocked, check_delivery, drained, status

KILLS = int(os.environ.get("INFLUX_RELAY_KILLS", "4"))
SEED = int(os.environ.get("INFLUX_RELAY_FAULT_SEED", "0"))  # shifts the schedule, to explore


def relay_config(port, servers, buffer_dir):
    text = 'shutdown-timeout = "5s"\n[[http]]\nname = "kill"\nbind-addr = "127.0.0.1:%d"\n' % port
    for name, server in zip("ab", servers):
        text += ('\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "2s"\n'
                 'buffer-size-mb = 64\nmax-delay-interval = "500ms"\nbuffer-path = "%s"\n'
                 % (name, server.url, buffer_dir / name))
    return text


def test_sigkill_at_random_moments_loses_no_acknowledged_write(
    hub_watch, influxd_pair, db, relay_factory, relay_port, tmp_path
):
    a, b = influxd_pair
    rng = random.Random(15 + SEED)
    config = relay_config(relay_port, (a, b), tmp_path / "buffers")
    relays = [relay_factory(config, relay_port, name="relay-0")]
    relay = relays[0]
    writer = Writer(relay.url, db, threads=2, points=5, interval=0).start()
    writer.wait_requests(20)
    b.stop()
    kills = []
    for i in range(1, KILLS + 1):
        time.sleep(rng.uniform(0.5, 2.0))
        backlog = status(relay.url)["b"]["buffered_writes"]
        relay.proc.kill()
        relay.proc.wait(5)
        kills.append("killed with %d write(s) buffered for b" % backlog)
        time.sleep(rng.uniform(0, 0.5))
        relay = relay_factory(config, relay_port, name="relay-%d" % i)
        relays.append(relay)
        # What the killed relay had buffered is replayed by this one.
        assert status(relay.url)["b"]["buffered_writes"] >= backlog
        writer.wait_requests(20)
    print("; ".join(kills))
    b.restart()
    time.sleep(1.0)
    writer.stop()
    print(writer.summary())
    wait_until(lambda: drained(relay.url), 30, what="b's backlog delivered")
    figures = check_delivery(writer, (a, b), db)
    print(figures)
    assert_hub_never_blocked(*relays)
    # Writes fail only while no relay is running (refused, or cut by the kill).
    assert set(writer.statuses) <= {204, "error"}, writer.summary()
    assert writer.statuses[204] > 100
