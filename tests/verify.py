"""The independent check of the guarantee: read the topics back with read_committed and count."""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field

import fastavro

from examples.orders import SCHEMAS, Sample
from localkafka.clients import Read, read_all
from processor.codecs import load_schema

ENRICHED = load_schema(SCHEMAS / "order_enriched.avsc")


def order_id(read: Read) -> str:
    return fastavro.schemaless_reader(io.BytesIO(read.value), ENRICHED, None)["order_id"]


@dataclass
class Verdict:
    outputs: list[Read]
    dead_letters: list[Read]
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)

    def __str__(self) -> str:
        return (f"{len(self.outputs)} outputs, {len(self.dead_letters)} dead letters; "
                f"missing {len(self.missing)} {self.missing[:5]}, duplicated {len(self.duplicated)} "
                f"{self.duplicated[:5]}, unexpected {len(self.unexpected)} {self.unexpected[:5]}")


def verify(bootstrap: str, samples: list[Sample], output_topic: str, dead_letter_topic: str) -> Verdict:
    """Every good sample has exactly one output, every poison one exactly one dead letter."""
    outputs = read_all(bootstrap, output_topic)
    dead = read_all(bootstrap, dead_letter_topic)
    verdict = Verdict(outputs, dead)
    seen = {"output": Counter(order_id(r) for r in outputs),
            "dead": Counter(r.key.decode() for r in dead)}
    expected = {"output": {s.order_id for s in samples if s.stage is None},
                "dead": {s.order_id for s in samples if s.stage is not None}}
    for where in ("output", "dead"):
        verdict.missing += sorted(expected[where] - set(seen[where]))
        verdict.duplicated += sorted(k for k, n in seen[where].items() if n > 1)
        verdict.unexpected += sorted(set(seen[where]) - expected[where])
    return verdict

