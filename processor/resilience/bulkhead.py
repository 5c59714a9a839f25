"""A bulkhead: at most `max_concurrent` calls to one dependency at once; the rest wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from processor.resilience.errors import Transient


class Bulkhead:
    def __init__(self, name: str, max_concurrent: int, clock: Callable[[], float] = time.monotonic,
                 on_change: Callable[[str, int], None] = lambda name, n: None):
        self.name, self.clock, self.on_change = name, clock, on_change
        self.slots = threading.BoundedSemaphore(max_concurrent)
        self.in_flight = 0
        self.lock = threading.Lock()

    @contextmanager
    def slot(self, deadline: float) -> Iterator[None]:
        """Hold a slot for the call; waiting past `deadline` is a `Transient` failure."""
        if not self.slots.acquire(timeout=max(deadline - self.clock(), 0.0)):
            raise Transient(f"bulkhead {self.name} stayed full until the record's deadline")
        self._count(+1)
        try:
            yield
        finally:
            self._count(-1)
            self.slots.release()

    def _count(self, delta: int) -> None:
        with self.lock:
            self.in_flight += delta
            self.on_change(self.name, self.in_flight)
