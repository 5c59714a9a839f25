"""The relay's progress topic: compacted, one partition, one record per Kafka transaction
holding the position it published up to (position.py). Read back read_committed at start,
after the relay's producer has fenced any older relay: what it reads is final."""

from __future__ import annotations

import time
from threading import Event

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.kafka import ask_until_answered
from processor.outbox.position import Position
from processor.state.changelog import PREPARE_S, TIMEOUT_S, ensure_changelogs, sorted_errors

KEY = b"position"


def ensure_progress_topic(admin: AdminClient, topic: str, replication_factor: int, stopping: Event) -> None:
    """Create it (compacted, one partition) unless it exists, asking again while Kafka is away."""
    what = f"cannot prepare the progress topic {topic!r}"
    ask_until_answered(sorted_errors(lambda: ensure_changelogs(
        admin, [topic], 1, replication_factor, "progress topic", check_partitions=False), what),
        PREPARE_S, what, stopping)


def read_position(settings: dict, topic: str, stopping: Event) -> Position | None:
    """The last committed position, or None when the relay never committed one."""
    what = f"cannot read the progress topic {topic!r}"
    return ask_until_answered(sorted_errors(lambda: _read(settings, topic), what), PREPARE_S, what, stopping)


def _read(settings: dict, topic: str) -> Position | None:
    consumer = Consumer({**settings, "group.id": f"{topic}-reader", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True})
    tp = TopicPartition(topic, 0, OFFSET_BEGINNING)
    try:
        high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)[1]
        if high == 0:
            return None
        consumer.assign([tp])
        last = None
        quiet_until = time.monotonic() + TIMEOUT_S
        while time.monotonic() < quiet_until:
            for msg in consumer.consume(1000, 1.0):
                quiet_until = time.monotonic() + TIMEOUT_S
                error = msg.error()
                if error is None:
                    if msg.key() == KEY and msg.value():
                        last = Position.decode(msg.value())
                elif error.code() == KafkaError._PARTITION_EOF:  # the end of what is committed
                    return last
                else:
                    raise KafkaException(error)
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no end of {topic!r} in {TIMEOUT_S:.0f}s"))
    finally:
        consumer.close()
