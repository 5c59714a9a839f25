"""The error model of calls to external services."""

from __future__ import annotations


class Transient(Exception):
    """A failure that may pass: the record is retried later, never dead-lettered for it.

    Raise it (or a subclass) from a transform or a call; `retry_after` (seconds) is honoured,
    as from an HTTP 429 or 503 with Retry-After."""

    def __init__(self, message: str = "", retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class CircuitOpen(Transient):
    """The dependency's circuit breaker is open: no call was made."""


class RetriesExhausted(Transient):
    """A transient failure outlived the retry policy (attempts or the record's deadline)."""
