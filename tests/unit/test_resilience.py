"""Backoff maths, Retry-After, deadlines, breaker states, token bucket and bulkhead, on a fake clock."""

from __future__ import annotations

import random
import threading
import time

import pytest

from processor.resilience.breaker import CircuitBreaker, State
from processor.resilience.bulkhead import Bulkhead
from processor.resilience.dependency import Dependency
from processor.resilience.errors import CircuitOpen, RetriesExhausted, Transient
from processor.resilience.ratelimit import RateLimiter
from processor.resilience.retry import RetryPolicy


class Clock:
    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def flaky(failures: int, error=lambda: Transient("down")):
    calls = {"n": 0}

    def fn():
        calls["n"] += 1
        if calls["n"] <= failures:
            raise error()
        return "ok"
    fn.calls = calls
    return fn


def policy(clock: Clock, **kw) -> RetryPolicy:
    return RetryPolicy(clock=clock, sleep=clock.sleep, rng=random.Random(3), **kw)


def test_full_jitter_stays_within_the_exponential_cap():
    p = RetryPolicy(base_delay=0.1, max_delay=2.0, rng=random.Random(1))
    for attempt in range(1, 10):
        waits = [p.backoff(attempt) for _ in range(200)]
        cap = min(2.0, 0.1 * 2 ** (attempt - 1))
        assert all(0 <= w <= cap for w in waits)
        assert max(waits) > cap * 0.8  # spread over the whole range, not a constant


def test_retries_transient_errors_then_succeeds():
    clock = Clock()
    fn = flaky(3)
    assert policy(clock, attempts=5).call(fn, deadline=clock() + 60) == "ok"
    assert fn.calls["n"] == 4 and len(clock.slept) == 3


def test_retry_after_wins_over_backoff():
    clock = Clock()
    fn = flaky(2, lambda: Transient("429", retry_after=1.5))
    policy(clock, attempts=5, base_delay=0.01).call(fn, deadline=clock() + 60)
    assert clock.slept == [1.5, 1.5]


def test_attempts_and_deadline_bound_the_retries():
    clock = Clock()
    with pytest.raises(RetriesExhausted):
        policy(clock, attempts=3).call(flaky(10), deadline=clock() + 60)
    clock = Clock()
    with pytest.raises(RetriesExhausted):
        policy(clock, attempts=100, base_delay=1, max_delay=1).call(
            flaky(10, lambda: Transient("x", retry_after=1.0)), deadline=clock() + 3.5)
    assert clock.now <= 100 + 3.5


def test_poison_is_not_retried_and_keeps_its_attempts():
    clock = Clock()
    fn = flaky(1, lambda: ValueError("bad card"))
    with pytest.raises(ValueError) as caught:
        policy(clock).call(fn, deadline=clock() + 60)
    assert fn.calls["n"] == 1 and caught.value.attempts == 1


def breaker(clock: Clock, **kw) -> CircuitBreaker:
    defaults = dict(failure_rate=0.5, window=10, minimum_calls=4, open_duration=5, half_open_calls=2)
    return CircuitBreaker("gw", clock=clock, **{**defaults, **kw})


def test_breaker_opens_on_failure_rate_after_minimum_calls():
    clock = Clock()
    b = breaker(clock)
    for failed in (True, True, True):
        b.record(failed, 0.01)
    assert b.state is State.CLOSED  # fewer than minimum_calls
    b.record(False, 0.01)
    assert b.state is State.OPEN and not b.allow()
    assert b.seconds_until_probe() == 5


def test_breaker_opens_on_slow_calls():
    clock = Clock()
    b = breaker(clock, slow_call_seconds=1.0, slow_call_rate=0.75)
    for _ in range(4):
        b.record(False, 2.0)
    assert b.state is State.OPEN


def test_half_open_allows_bounded_probes_and_closes_or_reopens():
    clock = Clock()
    b = breaker(clock)
    for _ in range(4):
        b.record(True, 0.01)
    clock.now += 5
    assert [b.allow() for _ in range(3)] == [True, True, False]
    assert b.state is State.HALF_OPEN
    b.record(False, 0.01)
    b.record(False, 0.01)
    assert b.state is State.CLOSED
    for _ in range(4):
        b.record(True, 0.01)
    clock.now += 5
    assert b.allow()
    b.record(True, 0.01)
    assert b.state is State.OPEN


def test_dependency_refuses_while_open_and_counts_only_transient_failures():
    clock = Clock()
    b = breaker(clock)
    dep = Dependency("gw", policy(clock, attempts=1), b, clock=clock)
    for _ in range(4):
        with pytest.raises(ValueError):
            dep.call(flaky(1, lambda: ValueError("poison")))
    assert b.state is State.CLOSED
    for _ in range(4):
        with pytest.raises(RetriesExhausted):
            dep.call(flaky(1))
    with pytest.raises(CircuitOpen):
        dep.call(lambda: "never called")


def test_token_bucket_rate_and_burst():
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, clock=clock, sleep=clock.sleep)
    for _ in range(25):
        limiter.acquire(deadline=clock() + 60)
    # 5 from the burst at once, then one every 0.1 s
    assert clock.now - 100 == pytest.approx(2.0)


def test_token_bucket_refuses_past_the_deadline():
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, clock=clock, sleep=clock.sleep)
    limiter.acquire(deadline=clock() + 10)
    with pytest.raises(Transient):
        limiter.acquire(deadline=clock() + 0.5)


def test_bulkhead_bounds_concurrency():
    bulkhead = Bulkhead("gw", 2)
    peak, inside, done, lock = [0], [0], [0], threading.Lock()
    release = threading.Event()

    def work():
        with bulkhead.slot(deadline=time.monotonic() + 30):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            release.wait(5)
            with lock:
                inside[0] -= 1
                done[0] += 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    while bulkhead.in_flight < 2:
        release.wait(0.01)
    release.set()
    for t in threads:
        t.join(10)
    assert peak[0] == 2 and done[0] == 6 and bulkhead.in_flight == 0
