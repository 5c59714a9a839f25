"""Dead-letter records as operators look at them: read back (read_committed) and parsed.

A dead letter written by the processor carries its input's coordinates and the error in
`__processor.errors.*` headers (deadletter.py). A record without them (written by
something else) is `foreign`: listed, counted, and replayed only when asked explicitly.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor.deadletter import HEADER_PREFIX

TIMEOUT_S = 30.0
_PREFIX_LENGTH = len(HEADER_PREFIX)


class UnknownTopic(Exception):
    """The dead-letter topic does not exist (or this client may not describe it)."""


def _number(text: str) -> int:
    """A partition or offset header; -1 (unknown) when missing or damaged (not a number)."""
    try:
        return int(text)
    except ValueError:
        return -1


class Letter:
    """One record of the dead-letter topic. Its headers are split once: the input's own, and
    the error context (`raw_errors`, bytes by name without the prefix, decoded on demand):
    a replay handles tens of thousands a second."""

    __slots__ = ("partition", "offset", "timestamp_ms", "key", "value", "own_headers", "raw_errors")

    def __init__(self, partition: int, offset: int, timestamp_ms: int, key: bytes | None,
                 value: bytes | None, headers: list[tuple[str, bytes]] | None):
        self.partition, self.offset, self.timestamp_ms = partition, offset, timestamp_ms
        self.key, self.value = key, value
        self.own_headers: list[tuple[str, bytes]] = []  # the input's headers
        self.raw_errors: dict[str, bytes] = {}  # then the error context (one pass: measured faster)
        for name, data in headers or ():
            if name.startswith(HEADER_PREFIX):
                self.raw_errors[name[_PREFIX_LENGTH:]] = data or b""
            else:
                self.own_headers.append((name, data))

    @property
    def foreign(self) -> bool:
        """Not written by the processor: no origin to go back to."""
        return "topic" not in self.raw_errors

    @property
    def origin(self) -> tuple[str, int, int] | None:
        if self.foreign:
            return None
        return self.error("topic"), _number(self.error("partition")), _number(self.error("offset"))

    def error(self, name: str) -> str:
        return self.raw_errors.get(name, b"").decode("utf-8", "replace")

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")


def letter_of(msg: Message) -> Letter:
    return Letter(msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value(), msg.headers())


def topic_exists(settings: dict, topic: str) -> bool:
    consumer = Consumer({**settings, "group.id": "processor-dlq-describe"})
    try:
        found = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        return found is not None and found.error is None
    finally:
        consumer.close()


def read_letters(settings: dict, topic: str) -> Iterator[Letter]:
    """Every committed record of `topic` up to its end when reading started, in partition
    order. Raises UnknownTopic."""
    # partitions are read one after the other: a fetch that finds nothing returns at once, so
    # that the next partition's end offsets do not wait behind it (librdkafka waits 500 ms)
    consumer = Consumer({**settings, "group.id": f"processor-dlq-reader-{id(settings)}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True, "fetch.wait.max.ms": 10})
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
