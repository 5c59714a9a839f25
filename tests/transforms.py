"""Transforms that only the tests use (the processor imports them as `tests.transforms:NAME`)."""

from __future__ import annotations

import os

from processor.transform import Output

OVERSIZED_EVERY = 50  # orders whose number is a multiple of it get an output Kafka refuses


def two_outputs_one_oversized(record):
    """Two outputs per order; the second is over Kafka's 1 MB message limit for some orders."""
    order_id = record.value["order_id"]
    oversized = int(order_id.rsplit("-", 1)[1]) % OVERSIZED_EVERY == 0
    return [Output({"order_id": order_id, "part": 1}),
            Output({"order_id": order_id, "part": 2, "pad": "x" * (2_000_000 if oversized else 10)})]


def some_to_a_missing_topic(record):
    """Every OVERSIZED_EVERY-th order goes to the topic named by $MISSING_TOPIC (not created)."""
    order_id = record.value["order_id"]
    if int(order_id.rsplit("-", 1)[1]) % OVERSIZED_EVERY == 0:
        return Output({"order_id": order_id}, topic=os.environ["MISSING_TOPIC"])
    return {"order_id": order_id}
