"""Dead-letter records as operators look at them: read back (read_committed) and parsed.

A dead letter written by the processor carries its input's coordinates and the error in
`__processor.errors.*` headers (deadletter.py). A record without them (written by
something else) is `foreign`: listed, counted, and replayed only when asked explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor.deadletter import HEADER_PREFIX

TIMEOUT_S = 30.0


class UnknownTopic(Exception):
    """The dead-letter topic does not exist (or this client may not describe it)."""


@dataclass(frozen=True, slots=True)
class Letter:
    partition: int  # where the dead letter is, in the dead-letter topic
    offset: int
    timestamp_ms: int  # when it was dead-lettered
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]  # the input's own, then the error context
    errors: dict[str, str]  # the `__processor.errors.*` headers, by name without the prefix

    @property
    def foreign(self) -> bool:
        """Not written by the processor: no origin to go back to."""
        return "topic" not in self.errors

    @property
    def origin(self) -> tuple[str, int, int] | None:
        if self.foreign:
            return None
        return self.errors["topic"], int(self.errors.get("partition", -1)), int(self.errors.get("offset", -1))

    def error(self, name: str) -> str:
        return self.errors.get(name, "")

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")

    @property
    def own_headers(self) -> list[tuple[str, bytes]]:
        """The input's headers, without the error context."""
        return [(name, value) for name, value in self.headers if not name.startswith(HEADER_PREFIX)]


def letter_of(msg: Message) -> Letter:
    headers = list(msg.headers() or [])
    errors = {name[len(HEADER_PREFIX):]: (value or b"").decode("utf-8", "replace")
              for name, value in headers if name.startswith(HEADER_PREFIX)}
    return Letter(msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value(), headers, errors)


def read_letters(settings: dict, topic: str) -> Iterator[Letter]:
    """Every committed record of `topic` up to its end when reading started, in partition
    order. Raises UnknownTopic."""
    consumer = Consumer({**settings, "group.id": f"processor-dlq-reader-{id(settings)}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    try:
        metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise UnknownTopic(f"topic {topic!r} does not exist (or this client may not describe it)")
        for partition in sorted(metadata.partitions):
            yield from _read_partition(consumer, TopicPartition(topic, partition, OFFSET_BEGINNING))
    finally:
        consumer.close()


def _read_partition(consumer: Consumer, tp: TopicPartition) -> Iterator[Letter]:
    high = consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)[1]
    if high == 0:
        return
    consumer.assign([tp])
    try:
        while True:
            for msg in consumer.consume(1000, 1.0):
                error = msg.error()
                if error is None:
                    yield letter_of(msg)
                    if msg.offset() + 1 >= high:
                        return
                elif error.code() == KafkaError._PARTITION_EOF:  # the end of what is committed
                    return
                else:
                    raise KafkaException(error)
    finally:
        consumer.unassign()
