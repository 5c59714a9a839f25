"""Retry with exponential backoff and full jitter, within an absolute deadline (tenacity).

Full jitter: the n-th wait is uniform in [0, min(max_delay, base_delay * 2**(n-1))], which
spreads retries of many clients apart (AWS architecture blog, "Exponential Backoff And
Jitter"). A `Retry-After` from the failure wins over the computed wait. No wait may end past
the deadline, so a record never keeps its transaction near `transaction.timeout.ms`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from processor.resilience.errors import CircuitOpen, RetriesExhausted, Transient

T = TypeVar("T")
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (Transient, TimeoutError, ConnectionError)


@dataclass
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0
    transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    on_retry: Callable[[], None] = lambda: None

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, self.transient) and not isinstance(error, CircuitOpen)

    def backoff(self, attempt: int) -> float:
        """The full-jitter wait after failed attempt number `attempt` (1-based)."""
        return self.rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    def _wait(self, state: tenacity.RetryCallState) -> float:
        retry_after = getattr(state.outcome.exception(), "retry_after", None)
        return float(retry_after) if retry_after is not None else self.backoff(state.attempt_number)

    def call(self, fn: Callable[[], T], deadline: float) -> T:
        """Call `fn` until it succeeds, fails for good, or attempts or deadline run out."""
        def stop(state: tenacity.RetryCallState) -> bool:
            return (state.attempt_number >= self.attempts
                    or self.clock() + (state.upcoming_sleep or 0) > deadline)

        retrying = tenacity.Retrying(
            sleep=self.sleep, stop=stop, wait=self._wait, reraise=True,
            retry=tenacity.retry_if_exception(self.is_transient),
            before_sleep=lambda _state: self.on_retry())
        try:
            return retrying(fn)
        except BaseException as error:
            attempts = retrying.statistics.get("attempt_number", 1)
            if self.is_transient(error):
                raise RetriesExhausted(f"{type(error).__name__}: {error} (after {attempts} attempts)",
                                       getattr(error, "retry_after", None)) from error
            error.attempts = attempts  # type: ignore[attr-defined] - read for the dead-letter header
            raise


def attempts_of(error: BaseException) -> int:
    return getattr(error, "attempts", 1)


