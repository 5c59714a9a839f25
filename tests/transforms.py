"""Transforms that only the tests use (the processor imports them as `tests.transforms:NAME`)."""

from __future__ import annotations

import os

from processor.transform import Output


def singled_out(order_id: str) -> bool:
    """Every 50th order: the one these transforms treat specially."""
    return int(order_id.rsplit("-", 1)[1]) % 50 == 0


def two_outputs_one_oversized(record):
    """Two outputs per order; for singled-out orders the second is over Kafka's 1 MB limit."""
    order_id = record.value["order_id"]
    pad = "x" * (2_000_000 if singled_out(order_id) else 10)
    return [Output({"order_id": order_id, "part": 1}),
            Output({"order_id": order_id, "part": 2, "pad": pad})]


def some_to_a_missing_topic(record):
    """Singled-out orders go to the topic named by $MISSING_TOPIC (which is not created)."""
    order_id = record.value["order_id"]
    if singled_out(order_id):
        return Output({"order_id": order_id}, topic=os.environ["MISSING_TOPIC"])
    return {"order_id": order_id}
