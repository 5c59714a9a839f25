"""The `resilience` config section -> configured dependencies in the registry, with metrics."""

from __future__ import annotations

import importlib

from processor.config import Config, DependencyConfig, Problem
from processor.metrics import Metrics
from processor.resilience.breaker import CircuitBreaker, State
from processor.resilience.bulkhead import Bulkhead
from processor.resilience.dependency import REGISTRY, Dependency
from processor.resilience.ratelimit import RateLimiter
from processor.resilience.retry import DEFAULT_TRANSIENT, RetryPolicy


def _exception_class(path: str) -> type[BaseException]:
    module_name, _, name = path.replace(":", ".").rpartition(".")
    found = getattr(importlib.import_module(module_name), name, None)
    if not (isinstance(found, type) and issubclass(found, BaseException)):
        raise TypeError(f"{path} is not an exception class")
    return found


def _dependency(name: str, c: DependencyConfig, metrics: Metrics | None) -> Dependency:
    transient = DEFAULT_TRANSIENT + tuple(_exception_class(p) for p in c.retry.transient)
    retry = RetryPolicy(attempts=c.retry.attempts, base_delay=c.retry.base_delay_ms / 1000,
                        max_delay=c.retry.max_delay_ms / 1000, transient=transient,
                        on_retry=metrics.retries.inc if metrics else lambda: None)
    b = c.breaker
    breaker = CircuitBreaker(
        name, failure_rate=b.failure_rate, slow_call_rate=b.slow_call_rate,
        slow_call_seconds=b.slow_call_ms / 1000, window=b.window, minimum_calls=b.minimum_calls,
        open_duration=b.open_ms / 1000, half_open_calls=b.half_open_calls,
        on_state=(lambda n, state: metrics.circuit_state.labels(n).set(int(state))) if metrics
        else lambda n, state: None)
    if metrics:
        metrics.circuit_state.labels(name).set(int(State.CLOSED))
    bulkhead = (Bulkhead(name, c.bulkhead,
                         on_change=(lambda n, v: metrics.bulkhead_in_flight.labels(n).set(v))
                         if metrics else lambda n, v: None)
                if c.bulkhead else None)
    limiter = RateLimiter(c.rate_limit, c.rate_burst) if c.rate_limit else None
    return Dependency(name, retry, breaker, bulkhead, limiter)


def configure(config: Config, metrics: Metrics | None) -> list[Problem]:
    """Fill the registry from the config; problems (unknown exception classes) are returned."""
    problems = []
    REGISTRY.dependencies.clear()
    for name, dep in config.resilience.items():
        try:
            REGISTRY.dependencies[name] = _dependency(name, dep, metrics)
        except (ImportError, TypeError, ValueError) as exc:
            problems.append(Problem(f"resilience.{name}.retry.transient", str(exc)))
    return problems
