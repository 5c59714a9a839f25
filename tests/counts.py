"""Per-key running counts under test: keyed inputs, and the check of the counts read back
with read_committed (tests.transforms:count_per_key outputs `{"key", "n", "seq"}`)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

from localkafka.clients import produce, read_all

KEYS = 60


def keyed(start: int, n: int, keys: int = KEYS) -> list[SimpleNamespace]:
    """Inputs `start` to `start + n - 1`: key `k<i % keys>`, JSON value `{"seq": i}`."""
    return [SimpleNamespace(key=f"k{i % keys}".encode(), value=json.dumps({"seq": i}).encode())
            for i in range(start, start + n)]


def feed(bootstrap: str, topic: str, start: int, n: int) -> None:
    """Produce `keyed(start, n)` at once."""
    produce(bootstrap, topic, [(r.key, r.value) for r in keyed(start, n)])


def expected_counts(fed: int, keys: int = KEYS) -> Counter:
    return Counter(f"k{i % keys}" for i in range(fed))


@dataclass
class CountVerdict:
    """Per-key running counts (outputs `{"key", "n"}`): each key's must read 1, 2, 3, ... to
    its number of inputs, in order."""

    outputs: int
    missing: list[str] = field(default_factory=list)  # keys with a count never output (lost)
    duplicated: list[str] = field(default_factory=list)  # keys with a count output twice
    unexpected: list[str] = field(default_factory=list)  # keys not fed, or counts out of order

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)


def verify_counts(bootstrap: str, output_topic: str, expected: Counter) -> CountVerdict:
    counts: dict[str, list[int]] = {}
    outputs = read_all(bootstrap, output_topic)
    for read in outputs:
        out = json.loads(read.value)
        counts.setdefault(out["key"], []).append(out["n"])
    verdict = CountVerdict(len(outputs))
    for key in sorted(set(counts) | set(expected)):
        ns, want = counts.get(key, []), list(range(1, expected.get(key, 0) + 1))
        if not want:
            verdict.unexpected.append(key)
        elif len(set(ns)) < len(ns):
            verdict.duplicated.append(key)
        elif set(ns) != set(want):
            verdict.missing.append(key)
        elif ns != want:
            verdict.unexpected.append(key)
    return verdict
