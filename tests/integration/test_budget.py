"""The byte budget that bounds the write bodies a listener takes in at once."""

import gevent

from influx_relay.http_listener import ByteBudget


def test_a_taker_waits_for_room_and_one_alone_may_exceed_the_limit():
    budget = ByteBudget(100)
    budget.take(60)
    got = []

    def later(n, tag):
        budget.take(n)
        got.append(tag)

    waiting = gevent.spawn(later, 50, "second")
    gevent.sleep(0.01)
    assert got == []  # 60 + 50 > 100: it waits
    budget.give(60)
    waiting.join(1)
    assert got == ["second"]
    budget.give(50)
    assert budget.used == 0
    budget.take(500)  # larger than the limit, but alone: goes
    assert budget.used == 500
    budget.give(500)


def test_takers_are_served_in_the_order_they_came():
    budget = ByteBudget(100)
    budget.take(100)
    got = []

    def later(n, tag):
        budget.take(n)
        got.append(tag)

    big = gevent.spawn(later, 90, "big")
    gevent.sleep(0.01)
    small = gevent.spawn(later, 5, "small")  # would fit after a give(10), but big came first
    gevent.sleep(0.01)
    budget.give(10)
    gevent.sleep(0.01)
    assert got == []
    budget.give(90)
    gevent.joinall([big, small], timeout=1)
    assert got == ["big", "small"]
    assert budget.used == 95
