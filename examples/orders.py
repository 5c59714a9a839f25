"""Sample orders for the demo and the tests, with poison of every kind mixed in.

Each sample knows what should become of it: an output (`good`) or a dead-letter record at a
given stage (tests/unit/test_samples.py runs every kind through the real pipeline offline).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

import fastavro

from processor.codecs import load_schema

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
ORDER = load_schema(SCHEMAS / "order.avsc")
REFUND = fastavro.parse_schema({
    "type": "record", "name": "Refund", "namespace": "com.example.other",
    "fields": [{"name": "refund_id", "type": "long"}, {"name": "approved", "type": "boolean"},
               {"name": "ratio", "type": "double"}],
})
# kind -> the dead-letter stage it must reach (None: it must be output)
KINDS = {"good": None, "garbage": "deserialize", "wrong_schema": "deserialize",
         "refused": "transform", "overflow": "serialize"}
MAX_LONG = 2**63 - 1


@dataclass(frozen=True)
class Sample:
    order_id: str
    kind: str
    key: bytes
    value: bytes

    @property
    def stage(self) -> str | None:
        return KINDS[self.kind]


def _avro(schema: dict, record: dict) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, schema, record)
    return buffer.getvalue()


def _order(order_id: str, rng: random.Random, amount: int | None = None) -> dict:
    return {"order_id": order_id, "customer_id": f"c-{rng.randrange(1000):03d}",
            "amount_cents": amount if amount is not None else rng.randrange(100, 200_000),
            "currency": rng.choice(["EUR", "GBP", "USD"]), "created_at": 1_790_000_000_000 + rng.randrange(10**9)}


def _value(kind: str, order_id: str, rng: random.Random) -> bytes:
    if kind == "good":
        return _avro(ORDER, _order(order_id, rng))
    if kind == "garbage":
        return b"\xff\xfe not avro " + order_id.encode() + bytes(rng.randrange(256) for _ in range(8))
    if kind == "wrong_schema":  # a Refund: its long reads as a huge string length
        return _avro(REFUND, {"refund_id": 2**40 + rng.randrange(2**20), "approved": True,
                              "ratio": rng.random()})
    if kind == "refused":  # the example transform raises Poison for a non-positive amount
        return _avro(ORDER, _order(order_id, rng, amount=-rng.randrange(1, 500)))
    if kind == "overflow":  # amount + tax exceeds a long: the enriched order cannot be encoded
        return _avro(ORDER, _order(order_id, rng, amount=MAX_LONG - rng.randrange(1000)))
    raise ValueError(kind)


def make_samples(count: int, poison_per_kind: float, seed: int = 7) -> list[Sample]:
    """`count` samples; each poison kind makes up about `poison_per_kind` of them."""
    rng = random.Random(seed)
    poison = [k for k in KINDS if k != "good"]
    samples = []
    for i in range(count):
        index = int(rng.random() / poison_per_kind) if poison_per_kind > 0 else len(poison)
        kind = poison[index] if index < len(poison) else "good"
        order_id = f"o-{seed}-{i:07d}"
        samples.append(Sample(order_id, kind, order_id.encode(), _value(kind, order_id, rng)))
    return samples
