"""Transforms that only the tests use (the processor imports them as `tests.transforms:NAME`)."""

from __future__ import annotations

import os
import time

from examples.enrich import transform as enrich
from processor.transform import Output, Poison, Timer


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


def refused_by_the_broker(record):
    """Every 150th order gets an output over the output topic's max.message.bytes (10,000);
    every 150th from the 75th sends one with a null key to the compacted topic named by
    $COMPACTED_TOPIC. The broker refuses both; the other orders pass."""
    order_id = record.value["order_id"]
    n = int(order_id.rsplit("-", 1)[1])
    if n % 150 == 0:
        return {"order_id": order_id, "pad": "x" * 20_000}
    if n % 150 == 75:
        return Output({"order_id": order_id}, key=None, topic=os.environ["COMPACTED_TOPIC"])
    return {"order_id": order_id}


def pass_or_poison_huge(record):
    """Bytes in, bytes out; with $POISON_HUGE set, inputs over 100,000 bytes are poison."""
    if os.environ.get("POISON_HUGE") and len(record.value) > 100_000:
        raise Poison("too big to process")
    return record.value


def exits_on_the_first_singled_out(record):
    """Raises the BaseException named by $EXIT_WITH (SystemExit or KeyboardInterrupt) on the
    order numbered 50; passes the others through."""
    if record.value["order_id"].endswith("-0000050"):
        raise {"SystemExit": SystemExit(0), "KeyboardInterrupt": KeyboardInterrupt()}[os.environ["EXIT_WITH"]]
    return {"order_id": record.value["order_id"]}


def hangs_on_the_first_singled_out(record):
    """Sleeps for good on the order numbered 50 (no dependency call: nothing bounds it);
    passes the others through."""
    if record.value["order_id"].endswith("-0000050"):
        time.sleep(10**6)
    return {"order_id": record.value["order_id"]}


def busy(record):
    """About 0.2 ms of pure Python work per order, so that a loop slowed by other threads
    (holding the GIL) shows it, and 300,000 orders outlast the measurement."""
    total = sum(i * i for i in range(4000))
    return {"order_id": record.value["order_id"], "n": total % 7}


def count_per_key(record):
    """A running count per key in the store `counts` (string keys, JSON values {"seq": n})."""
    counts = record.state("counts")
    n = counts.get(record.key, 0) + 1
    counts.set(record.key, n)
    return {"key": record.key, "n": n, "seq": record.value["seq"]}


def store_padded(record):
    """Stores a value of `pad` characters under the record's key `key` (JSON {"key", "pad"})."""
    record.state("counts").set(record.value["key"], "x" * record.value["pad"])
    return {"key": record.value["key"], "stored": record.value["pad"]}


REMIND_AFTER_MS = 1500


def remind_later(call):
    """Each input `{"seq": i}` schedules a reminder REMIND_AFTER_MS later under key `r<i>`;
    the reminder becomes `{"seq": i, "due_ms", "fired_ms", "fired_by"}` (the instance id; the
    input itself outputs nothing)."""
    if isinstance(call, Timer):
        return Output({"seq": call.payload, "due_ms": call.due_ms, "fired_ms": int(time.time() * 1000),
                       "fired_by": os.environ.get("PROCESSOR__INSTANCE_ID")})
    seq = call.value["seq"]
    call.timers.schedule("remind", after_ms=REMIND_AFTER_MS, key=f"r{seq}", payload=seq)
    return None


def fragile(record):
    """Fails every tenth `{"seq": i}` (ValueError) until FRAGILE_FIXED=1; outputs the seq with
    the record's idempotency key (a replayed dead letter must bring its first one)."""
    seq = record.value["seq"]
    if os.environ.get("FRAGILE_FIXED") != "1" and seq % 10 == 0:
        raise ValueError(f"seq {seq} is not handled yet")
    return {"seq": seq, "idempotency_key": record.idempotency_key}


def padded_every_100th(record):
    """`{"seq": i}` out as it came, but every 100th with 3,000 bytes of padding."""
    seq = record.value["seq"]
    return {"seq": seq, "pad": "x" * 3_000} if seq % 100 == 0 else {"seq": seq}


def oversized_sometimes(record):
    """examples.enrich, but a singled-out good order's output is over Kafka's 1 MB limit: with
    the samples' poison, dead letters of every stage (the broker refuses those: `produce`)."""
    out = enrich(record)
    if singled_out(out["order_id"]):
        out["customer_id"] = "x" * 2_000_000
    return out
