"""Resilience for transforms that call external services: retries, breakers, bulkheads,
rate limits. Import from here in a transform."""

from processor.resilience.dependency import dependency
from processor.resilience.errors import CircuitOpen, RetriesExhausted, Transient

__all__ = ["CircuitOpen", "RetriesExhausted", "Transient", "dependency"]
