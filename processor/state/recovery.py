"""Bringing a store partition up to date from its changelog before its records are processed.

The local database records up to which changelog offset it holds every change (its
checkpoint). Recovery reads the changelog from there to the end (read_committed), so a
crash anywhere (even between a commit and the local write) costs only the changes since the
last checkpoint. The store is wiped and rebuilt from the start of the changelog only when it
cannot be trusted: no checkpoint, a checkpoint outside the changelog, or one older than the
changelog's tombstones live (deletes may have been compacted away).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from processor.kafka import FatalError, kafka_error
from processor.state.store import StorePartition, wall_ms

log = logging.getLogger("processor.state")
BATCH = 10_000
TIMEOUT_S = 30.0
STALL_S = 120.0  # no progress towards the end for this long: something holds the changelog


def _watermarks(consumer: Consumer, tp: TopicPartition, store: StorePartition) -> tuple[int, int]:
    """The changelog partition's offsets, asked again while Kafka does not answer (a broker
    restarting), for up to `STALL_S`."""
    give_up = time.monotonic() + STALL_S
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
        except KafkaException as exc:
            if time.monotonic() > give_up:
                raise FatalError(f"recovering {store!r}: cannot read the end of {tp.topic} "
                                 f"[{tp.partition}]: {kafka_error(exc).str()}") from exc
            log.warning("recovering %r: %s; asking again", store, kafka_error(exc).str())
            time.sleep(1.0)  # Kafka is away: pace the questions


def start_offset(store: StorePartition, low: int, high: int, retention_ms: int) -> tuple[int, bool]:
    """Where recovery reads from, and whether the store was wiped (it cannot be trusted)."""
    saved = store.checkpoint()
    if saved is not None:
        offset, when = saved
        if not low <= offset <= high:
            why = f"its checkpoint {offset} is outside the changelog ({low}..{high})"
        elif wall_ms() - when >= retention_ms:
            why = f"its checkpoint is older than the changelog's delete.retention.ms ({retention_ms} ms)"
        else:
            return offset, False
    else:
        why = "it has no checkpoint"
    if saved is not None or store.backend.keys_between(b"", b"\xff", 1):
        log.warning("rebuilding %r from its changelog: %s", store, why)
    store.backend.wipe()
    return low, True


def recover(store: StorePartition, consumer: Consumer, topic: str, retention_ms: int,
            remaining: Callable[[int], None]) -> int:
    """Apply the changelog to `store` up to its end; returns how many changes were read.
    `remaining(n)` is told how many offsets are left as it goes. `consumer` reads
    read_committed with `enable.partition.eof`: the end is where it says so."""
    tp = TopicPartition(topic, store.partition)
    low, high = _watermarks(consumer, tp, store)
    start, rebuilding = start_offset(store, low, high, retention_ms)  # emptied: nothing to replace
    restored, end = 0, start
    if start < high:
        began = time.monotonic()
        consumer.assign([TopicPartition(topic, store.partition, start)])
        position, moved = start, time.monotonic()
        try:
            while True:
                remaining(max(high - position, 0))
                changes, eof = {}, None
                for msg in consumer.consume(BATCH, 0.5):
                    error = msg.error()
                    if error is None:
                        changes[msg.key()] = msg.value()
                        restored += 1
                    elif error.code() == KafkaError._PARTITION_EOF:
                        eof = msg.offset()
                    else:
                        log.warning("recovering %r: %s", store, error.str())
                if changes:
                    store.apply(changes, rebuilding)
                if eof is not None:
                    end = eof
                    break
                now_at = consumer.position([tp])[0].offset
                if now_at > position:
                    position, moved = now_at, time.monotonic()
                elif time.monotonic() - moved > STALL_S:
                    raise FatalError(f"recovering {store!r}: the changelog {topic} [{store.partition}] "
                                     f"did not move past {position} of {high} in {STALL_S:.0f}s")
        finally:
            consumer.unassign()
        log.info("recovered %r: %d changes in %.1fs", store, restored, time.monotonic() - began)
    remaining(0)
    store.save_checkpoint(max(end, start))
    return restored
