"""A token bucket: ``rate-limit`` requests per second, ``burst-limit`` at once."""

import time


class TokenBucket(object):
    """Holds up to ``burst`` tokens, refilled at ``rate`` per second; starts full."""

    def __init__(self, rate, burst, clock=time.monotonic):
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.tokens = self.burst
        self.updated = clock()

    def take(self):
        """Take a token: 0.0 if there was one, else the seconds until there is."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate
