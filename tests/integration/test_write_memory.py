"""A write's body is freed as soon as every output is done with it, by
reference counting alone: nothing of a finished write waits in a reference
cycle for the garbage collector, which runs by object count, not bytes, so
that 64 concurrent 5000-line writes once held six times the memory they
needed (a send left in its write's result queue, which it referred to)."""

import gc

import gevent
import pytest

from influx_relay import fanout

from .conftest import eventually, http_config


@pytest.fixture
def no_gc():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def sends_alive():
    return sum(1 for o in gc.get_objects() if type(o) is fanout._Send)


@pytest.mark.parametrize("slow", [False, True], ids=["both-fast", "one-slower"])
@pytest.mark.parametrize("buffered", [False, True], ids=["no-buffer", "buffer"])
@pytest.mark.parametrize("coalesce", ["true", "false"], ids=["coalesce", "no-coalesce"])
def test_a_finished_writes_sends_and_body_are_freed_without_the_collector(
        relay, backends, no_gc, slow, buffered, coalesce):
    a = backends()
    b = backends(mode=("slow", 0.05, 204, b"") if slow else ("status", 204, b""))
    extra = ', coalesce = %s' % coalesce + (', buffer-size-mb = 10' if buffered else '')
    r = relay(http_config('{ name = "a", location = "%s"%s }' % (a.url, extra),
                          '{ name = "b", location = "%s"%s }' % (b.url, extra)))
    # Both sends of a write often finish before the write looks at them.
    jobs = [gevent.spawn(r.write, b"cpu v=%di %d" % (i, i)) for i in range(40)]
    gevent.joinall(jobs, timeout=10)
    assert [j.value.status for j in jobs] == [204] * 40
    assert eventually(lambda: len(a.lines) == 40 and len(b.lines) == 40)
    # Once the slower output's sends settle, none is left: none waits for the collector.
    assert eventually(lambda: sends_alive() == 0, timeout=5), sends_alive()
