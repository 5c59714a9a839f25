"""A named external dependency with its policies, and the registry transforms reach it by.

    gateway = dependency("payment-gateway")        # at import time of the transform module
    def transform(record):
        return gateway.call(charge, record.value, idempotency_key=record.idempotency_key)

One call: the breaker admits it (else `CircuitOpen`), the rate limiter grants a slot, the
bulkhead a seat, and transient failures are retried with backoff until the record's deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from processor.resilience.breaker import CircuitBreaker
from processor.resilience.bulkhead import Bulkhead
from processor.resilience.errors import CircuitOpen
from processor.resilience.ratelimit import RateLimiter
from processor.resilience.retry import RetryPolicy

T = TypeVar("T")
_deadline = threading.local()
DEFAULT_RECORD_SECONDS = 20.0


def set_record_deadline(deadline: float | None) -> None:
    """Set by the pipeline around each transform call (per thread)."""
    _deadline.value = deadline


def record_deadline(clock: Callable[[], float] = time.monotonic) -> float:
    value = getattr(_deadline, "value", None)
    return value if value is not None else clock() + DEFAULT_RECORD_SECONDS


class Dependency:
    def __init__(self, name: str, retry: RetryPolicy, breaker: CircuitBreaker,
                 bulkhead: Bulkhead | None = None, limiter: RateLimiter | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.name, self.retry, self.breaker = name, retry, breaker
        self.bulkhead, self.limiter, self.clock = bulkhead, limiter, clock

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        deadline = record_deadline(self.clock)
        return self.retry.call(lambda: self._attempt(fn, args, kwargs, deadline), deadline)

    def _attempt(self, fn, args, kwargs, deadline: float):
        if not self.breaker.allow():
            raise CircuitOpen(f"circuit {self.name} is open")
        if self.limiter is not None:
            self.limiter.acquire(deadline)
        if self.bulkhead is None:
            return self._measured(fn, args, kwargs)
        with self.bulkhead.slot(deadline):
            return self._measured(fn, args, kwargs)

    def _measured(self, fn, args, kwargs):
        began = self.clock()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            # only transient failures speak of the dependency's health; poison does not
            self.breaker.record(self.retry.is_transient(error), self.clock() - began)
            raise
        self.breaker.record(False, self.clock() - began)
        return result


class Registry:
    """The dependencies of this process, configured from the `resilience` config section."""

    def __init__(self) -> None:
        self.dependencies: dict[str, Dependency] = {}

    def get(self, name: str) -> Dependency:
        try:
            return self.dependencies[name]
        except KeyError:
            known = ", ".join(sorted(self.dependencies)) or "none"
            raise LookupError(f"no dependency {name!r} in the resilience config (known: {known})") from None

    def seconds_until_probe(self) -> float:
        """0 when every breaker lets calls through (or a probe), else the longest open wait."""
        return max((d.breaker.seconds_until_probe() for d in self.dependencies.values()), default=0.0)


REGISTRY = Registry()


class _Handle:
    """What `dependency(name)` returns: resolved at call time, so modules may ask at import."""

    def __init__(self, name: str):
        self.name = name

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        return REGISTRY.get(self.name).call(fn, *args, **kwargs)


def dependency(name: str) -> _Handle:
    return _Handle(name)
