"""The per-key count of the state benchmark (bench/state.py): JSON in, JSON out."""

from __future__ import annotations

from processor import Record


def transform(record: Record) -> dict:
    counts = record.state("counts")
    n = counts.get(record.key, 0) + 1
    counts.set(record.key, n)
    return {"key": record.key, "count": n}
