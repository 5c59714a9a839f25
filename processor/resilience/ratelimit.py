"""A token bucket: `rate` calls per second on average, bursts of up to `burst`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from processor.resilience.errors import Transient


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rate, self.burst = rate, burst
        self.clock, self.sleep = clock, sleep
        self.tokens = float(burst)
        self.updated = clock()
        self.lock = threading.Lock()

    def _reserve(self) -> float:
        """Take a token (possibly one not yet there) and return how long to wait for it."""
        with self.lock:
            now = self.clock()
            self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
            self.updated = now
            self.tokens -= 1
            return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def acquire(self, deadline: float) -> None:
        """Wait for a token; a wait that would end past `deadline` is a `Transient` failure."""
        wait = self._reserve()
        if wait and self.clock() + wait > deadline:
            with self.lock:
                self.tokens += 1  # give the reservation back
            raise Transient("rate limit: no call slot before the record's deadline", wait)
        if wait:
            self.sleep(wait)
