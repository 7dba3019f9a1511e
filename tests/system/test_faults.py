"""A faulty backend beside a healthy one, against the real relay process and two real influxd.

Backend b sits behind a :class:`FaultProxy` that, on cue, accepts and never
answers, resets mid-answer, answers garbage, or takes seconds per request;
then it heals. For each: every write still gets its 204 from a, well within
b's timeout; b's share is buffered and, once b heals, delivered, so that both
databases hold the same rows; and the relay holds no more file descriptors
or greenlets than before the fault (a leak per failed request would show as
dozens). A location whose host name does not resolve is the fifth fault: it
never heals, costs the other backend nothing, and is said clearly in the log.
"""

import time

import pytest

from .faultproxy import FaultProxy
from .helpers import request, wait_until
from .workload import Writer, assert_hub_never_blocked, check_delivery, drained, greenlets, open_fds, status

TIMEOUT = 2.0  # b's timeout, seconds
POOL = 4  # pool-size: the keep-alive connections an output may keep


def relay_config(port, a_url, b_url, extra=""):
    # A backlog that cannot drain (the unresolvable name) must not hold up the teardown.
    text = 'shutdown-timeout = "1s"\n'
    text += '[[http]]\nname = "faults"\nbind-addr = "127.0.0.1:%d"\n' % port
    for name, url in (("a", a_url), ("b", b_url)):
        text += ('\n[[http.output]]\nname = "%s"\nlocation = "%s/"\ntimeout = "%gs"\n'
                 'pool-size = %d\nbuffer-size-mb = 16\nmax-delay-interval = "500ms"\n%s'
                 % (name, url, TIMEOUT, POOL, extra))
    return text


@pytest.fixture
def faulty(hub_watch, influxd_pair, db, relay_factory, relay_port):
    """(relay, proxy in front of b, a, b, db), warmed up, every backend answering."""
    a, b = influxd_pair
    proxy = FaultProxy(b.port).start()
    relay = relay_factory(relay_config(relay_port, a.url, proxy.url), relay_port)
    yield relay, proxy, a, b
    proxy.stop()


def baseline(relay):
    """Open fds and greenlets of the relay at rest."""
    time.sleep(0.3)
    return open_fds(relay.proc.pid), greenlets(relay.url)


def settles_to(relay, fds, threads, slack_fds=POOL + 2, slack_greenlets=3):
    """Wait (bounded) until the relay is back near its baseline, then assert it is."""
    def near():
        return (open_fds(relay.proc.pid) <= fds + slack_fds
                and greenlets(relay.url) <= threads + slack_greenlets)
    try:
        wait_until(near, 10, interval=0.2, what="fds and greenlets back to their baseline")
    finally:
        now = open_fds(relay.proc.pid), greenlets(relay.url)
        print("fds %d -> %d, greenlets %d -> %d" % (fds, now[0], threads, now[1]))
    assert now[0] <= fds + slack_fds
    assert now[1] <= threads + slack_greenlets


@pytest.mark.parametrize("fault", ["hang", "reset", "garbage", "slow"])
def test_a_faulty_backend_costs_the_client_nothing_and_catches_up(faulty, db, fault):
    relay, proxy, a, b = faulty
    writer = Writer(relay.url, db, threads=2, points=5, interval=0.02).start()
    writer.wait_requests(20)
    wait_until(lambda: drained(relay.url), 10, what="warm-up delivered")
    fds, threads = baseline(relay)

    proxy.mode = ("slow", TIMEOUT + 1.5) if fault == "slow" else fault
    before = proxy.requests
    time.sleep(3 * TIMEOUT)  # several timeouts' worth of writes, and retries
    assert proxy.requests > before, "b was not even tried"
    assert status(relay.url)["b"]["backlog"], "b's share is not buffered"
    during = open_fds(relay.proc.pid)

    proxy.mode = "pass"
    time.sleep(1.0)  # writes during the drain queue behind the backlog
    writer.stop()
    print(writer.summary())
    # Every write was answered by a, well within b's timeout.
    assert set(writer.statuses) == {204}, writer.summary()
    assert writer.max_latency < TIMEOUT, writer.summary()

    wait_until(lambda: drained(relay.url), 20, what="b's backlog delivered")
    figures = check_delivery(writer, [a, b], db)
    print(figures, "fds during the fault: %d" % during)
    assert figures["stored"] == [len(writer.acked)] * 2  # nothing unacknowledged was sent
    settles_to(relay, fds, threads)
    assert_hub_never_blocked(relay)


def test_a_slow_backend_within_its_timeout_gets_everything_in_order(faulty, db):
    """Seconds per request, but within the timeout: never down, just behind."""
    relay, proxy, a, b = faulty
    writer = Writer(relay.url, db, threads=2, points=5, interval=0.02).start()
    writer.wait_requests(10)
    wait_until(lambda: drained(relay.url), 10, what="warm-up delivered")
    fds, threads = baseline(relay)
    proxy.mode = ("slow", TIMEOUT / 2)
    time.sleep(3 * TIMEOUT)
    proxy.mode = "pass"
    writer.stop()
    print(writer.summary())
    assert set(writer.statuses) == {204}, writer.summary()
    assert writer.max_latency < TIMEOUT / 2, writer.summary()
    wait_until(lambda: drained(relay.url), 20, what="b caught up")
    check_delivery(writer, [a, b], db)
    settles_to(relay, fds, threads)
    assert_hub_never_blocked(relay)


def test_a_host_name_that_does_not_resolve(hub_watch, influxd_pair, db, relay_factory,
                                           relay_port):
    a, _ = influxd_pair
    relay = relay_factory(relay_config(relay_port, a.url, "http://influx-b.invalid:8086"),
                          relay_port)
    writer = Writer(relay.url, db, threads=2, points=5, interval=0.02).start()
    writer.wait_requests(10)
    fds, threads = baseline(relay)
    time.sleep(3.0)
    writer.stop()
    print(writer.summary())
    assert set(writer.statuses) == {204}, writer.summary()
    # The lookup fails at once; b's share waits in its buffer for a name that never comes.
    assert writer.max_latency < 1.0, writer.summary()
    check_delivery(writer, [a], db)
    s = status(relay.url)["b"]
    assert s["backlog"] and s["buffered_writes"] > 0
    log = relay.stderr()
    down = [line for line in log.splitlines() if "output b: backend down" in line]
    assert len(down) == 1, log[-3000:]  # said once, not once per write
    print(down[0])
    # The name the user must fix; or, where no DNS server answers at all, the timeout.
    assert "Failed to resolve 'influx-b.invalid'" in down[0] or "no answer within" in down[0], down
    health = request("GET", relay.url + "/health", timeout=15)
    assert health.status == 200 and "b" in health.json()["problem"], health
    settles_to(relay, fds, threads)
    assert_hub_never_blocked(relay)
