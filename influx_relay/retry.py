"""Retry policy: how long an output waits before trying its backlog again."""

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off: ``initial``, times ``multiplier`` after every
    failure, never above ``cap``, each delay shortened by up to ``jitter``
    (a fraction) so that relays restarted together don't retry in step."""

    initial: float = 0.5
    multiplier: float = 2.0
    cap: float = 10.0
    jitter: float = 0.1

    def delay(self, failures):
        """The wait after ``failures`` consecutive failures (1 or more)."""
        # Doubling up to the cap only: 2.0 ** 1024 would overflow a float after
        # 1025 failures (under 3 hours of outage at a 10 s cap).
        base = self.initial
        for _ in range(min(failures, 64) - 1):
            base *= self.multiplier
            if base >= self.cap:
                break
        base = min(self.cap, base)
        return base * (1 - self.jitter * random.random())
