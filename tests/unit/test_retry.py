"""The retry policy's delays."""

from influx_relay.retry import RetryPolicy


def test_delays_double_up_to_the_cap():
    p = RetryPolicy(initial=0.5, multiplier=2.0, cap=10.0, jitter=0)
    assert [p.delay(n) for n in (1, 2, 3, 5, 6, 7)] == [0.5, 1.0, 2.0, 8.0, 10.0, 10.0]


def test_a_very_long_outage_keeps_the_cap():
    # 2.0 ** 1024 overflows a float: the retry loop must not die after 1025 failures.
    p = RetryPolicy(initial=0.5, multiplier=2.0, cap=0.05, jitter=0.1)
    for n in (1024, 1025, 5000, 10 ** 9):
        assert 0.045 <= p.delay(n) <= 0.05
