"""Transactions that abort again and again without a commit: a loop that goes nowhere.

The log says why once (the first abort of a streak, at WARNING; the others at DEBUG), and
past `bound_s` without a commit it says so at ERROR and `/healthz` answers 503 with the
reason, so an orchestrator sees it. Aborts to wait for a failing dependency (a pause) do not count: the
circuit breaker's metrics report those.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("processor.transactions")
STALLED_AFTER_S = 60.0


class AbortStreak:
    def __init__(self, bound_s: float = STALLED_AFTER_S, clock: Callable[[], float] = time.monotonic):
        self.bound, self.clock = bound_s, clock
        self.aborts = 0
        self.since: float | None = None  # the first abort of the streak
        self.reason = ""
        self.reported = False

    def aborted(self, reason: str) -> None:
        now = self.clock()
        if self.since is None:
            self.since = now
        self.aborts += 1
        if self.aborts == 1:
            log.warning("aborting the transaction and processing its records again: %s", reason)
        else:
            log.debug("aborting the transaction again: %s", reason)
        self.reason = reason
        if not self.reported and now - self.since >= self.bound:
            self.reported = True
            log.error("no transaction committed for %.0fs (%d aborted): %s; /healthz reports it",
                      now - self.since, self.aborts, reason)

    def committed(self) -> None:
        if self.since is None:
            return
        if self.aborts > 1:
            log.info("committed again after %d aborted transactions in %.1fs", self.aborts,
                     self.clock() - self.since)
        self.aborts, self.since, self.reason, self.reported = 0, None, "", False

    def problem(self) -> str | None:
        """Why the loop is not healthy, or None."""
        if self.since is None or self.clock() - self.since < self.bound:
            return None
        return (f"{self.aborts} transactions aborted and none committed in "
                f"{self.clock() - self.since:.0f}s; last reason: {self.reason}")
