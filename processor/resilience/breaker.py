"""A circuit breaker over a count-based sliding window (as Resilience4j and Polly v8 do).

Closed: calls pass; once the window holds `minimum_calls`, a failure rate or a slow-call rate
at or above its threshold opens it. Open: calls are refused (`CircuitOpen`) for
`open_duration`. Half-open: up to `half_open_calls` probes pass; all of them succeeding
closes it, any failing opens it again.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("processor.resilience")


class State(enum.IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class CircuitBreaker:
    def __init__(self, name: str, *, failure_rate: float = 0.5, slow_call_rate: float = 1.0,
                 slow_call_seconds: float = 10.0, window: int = 20, minimum_calls: int = 10,
                 open_duration: float = 10.0, half_open_calls: int = 3,
                 clock: Callable[[], float] = time.monotonic,
                 on_state: Callable[[str, State], None] = lambda name, state: None):
        self.name = name
        self.failure_rate, self.slow_call_rate = failure_rate, slow_call_rate
        self.slow_call_seconds = slow_call_seconds
        self.minimum_calls, self.open_duration = minimum_calls, open_duration
        self.half_open_calls = half_open_calls
        self.clock, self.on_state = clock, on_state
        self.window: deque[tuple[bool, bool]] = deque(maxlen=window)  # (failed, slow)
        self.state = State.CLOSED
        self.opened_at = 0.0
        self.probes_left = self.probes_ok = 0
        self.lock = threading.Lock()

    def allow(self) -> bool:
        """May a call go out now? In half-open, each True uses up one probe."""
        with self.lock:
            if self.state is State.OPEN and self.clock() - self.opened_at >= self.open_duration:
                self._become(State.HALF_OPEN)
                self.probes_left, self.probes_ok = self.half_open_calls, 0
            if self.state is State.CLOSED:
                return True
            if self.state is State.HALF_OPEN and self.probes_left > 0:
                self.probes_left -= 1
                return True
            return False

    def seconds_until_probe(self) -> float:
        with self.lock:
            if self.state is not State.OPEN:
                return 0.0
            return max(self.open_duration - (self.clock() - self.opened_at), 0.0)

    def record(self, failed: bool, seconds: float) -> None:
        slow = seconds >= self.slow_call_seconds
        with self.lock:
            if self.state is State.HALF_OPEN:
                if failed or slow:
                    self._open()
                else:
                    self.probes_ok += 1
                    if self.probes_ok >= self.half_open_calls:
                        self.window.clear()
                        self._become(State.CLOSED)
                return
            if self.state is State.OPEN:
                return
            self.window.append((failed, slow))
            calls = len(self.window)
            if calls < self.minimum_calls:
                return
            failures = sum(f for f, _ in self.window) / calls
            slows = sum(s for _, s in self.window) / calls
            if failures >= self.failure_rate or slows >= self.slow_call_rate:
                self._open(f"failure rate {failures:.0%}, slow-call rate {slows:.0%} "
                           f"over the last {calls} calls")

    def _open(self, why: str = "a half-open probe failed") -> None:
        self.opened_at = self.clock()
        self._become(State.OPEN, why)

    def _become(self, state: State, why: str = "") -> None:
        if state is not self.state:
            log.warning("circuit %s: %s -> %s%s", self.name, self.state.name, state.name,
                        f" ({why})" if why else "")
            self.state = state
            self.on_state(self.name, state)
