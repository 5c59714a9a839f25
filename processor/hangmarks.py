"""Records that hung the processor, remembered in Kafka so that the next instance knows.

When a record hangs the pipeline, the process exits (hangwatch.py); without a memory, the
next instance would hang on the same record, and the next: a crash loop. So the exit leaves
a mark in the group's committed offset of the record's partition, as offset metadata: the
offset stays where the last commit left it and the metadata names the hung record and how
many times it hung. Every instance reads the marks of the partitions it is assigned; once a
record hung `HANGS_BEFORE_DEAD_LETTER` times, it is dead-lettered instead of transformed.
Commits carry a mark forward until they pass its record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, Message, Producer, TopicPartition

from processor.deadletter import Failure
from processor.kafka import kafka_error

log = logging.getLogger("processor.hangs")
HANGS_BEFORE_DEAD_LETTER = 2
REQUEST_TIMEOUT_S = 10.0
_KEY = "processor.hung"  # in the offset metadata: {"processor.hung": [offset, times]}


class RecordHung(TimeoutError):
    """The dead-letter exception of a record that hung the processor again and again."""


@dataclass(frozen=True, slots=True)
class Hang:
    offset: int
    times: int

    def metadata(self) -> str:
        return json.dumps({_KEY: [self.offset, self.times]})

    @staticmethod
    def parse(metadata: str | None) -> Hang | None:
        try:
            offset, times = json.loads(metadata or "{}")[_KEY]
            return Hang(int(offset), int(times))
        except (ValueError, TypeError, KeyError):  # not ours, or no mark
            return None


class HangMarks:
    """Per assigned partition: where the group's committed offset stands, and the record
    that hung there, if any."""

    def __init__(self, consumer: Consumer, auto_offset_reset: str):
        self.consumer = consumer
        self.from_latest = auto_offset_reset == "latest"
        self.positions: dict[tuple[str, int], int] = {}
        self.hangs: dict[tuple[str, int], Hang] = {}

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Read the group's committed offsets and marks (one request, in the rebalance)."""
        try:
            committed = self.consumer.committed(partitions, timeout=REQUEST_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("could not read the committed offsets of %d partitions (%s): a record "
                        "that hung an earlier instance is not known", len(partitions),
                        kafka_error(exc).str())
            return
        for tp in committed:
            key = (tp.topic, tp.partition)
            if tp.offset >= 0:
                self.positions[key] = tp.offset
            elif self.from_latest:  # where the consumer starts, or just before: never after
                self._position_at_end(key)
            hang = Hang.parse(tp.metadata)
            if hang is not None and hang.offset >= tp.offset:
                self.hangs[key] = hang
                log.warning("record %s [%d] @%d hung the processor %d time(s) before; %s",
                            *key, hang.offset, hang.times,
                            "dead-lettering it" if hang.times >= HANGS_BEFORE_DEAD_LETTER
                            else "trying it again")

    def revoked(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.positions.pop((tp.topic, tp.partition), None)
            self.hangs.pop((tp.topic, tp.partition), None)

    def carry(self, offsets: list[TopicPartition]) -> list[TopicPartition]:
        """The offsets to commit, with the marks of records they do not pass yet."""
        if not self.hangs:
            return offsets
        return [TopicPartition(tp.topic, tp.partition, tp.offset, metadata=hang.metadata())
                if (hang := self.hangs.get((tp.topic, tp.partition))) and tp.offset <= hang.offset
                else tp for tp in offsets]

    def committed(self, offsets: list[TopicPartition]) -> None:
        for tp in offsets:
            key = (tp.topic, tp.partition)
            self.positions[key] = tp.offset
            if key in self.hangs and tp.offset > self.hangs[key].offset:
                del self.hangs[key]

    def failure(self, msg: Message) -> Failure | None:
        """The dead-letter failure of a record that hung too often, else None."""
        hang = self.hangs.get((msg.topic(), msg.partition()))
        if hang is None or hang.offset != msg.offset() or hang.times < HANGS_BEFORE_DEAD_LETTER:
            return None
        return Failure("transform", RecordHung(
            f"the record hung the processor {hang.times} times (past processing.record_deadline_ms, "
            f"then exit 1); dead-lettered without calling the transform again"), hang.times)

    def next_hang(self, msg: Message) -> tuple[TopicPartition, Hang]:
        """The mark to commit for `msg` hanging now: the partition's committed offset (or,
        before its first commit, where the consumer started) with the count so far plus one."""
        key = (msg.topic(), msg.partition())
        earlier = self.hangs.get(key)
        times = earlier.times + 1 if earlier is not None and earlier.offset == msg.offset() else 1
        position = self.positions.get(key)
        if position is None:  # nothing committed yet, from the earliest record on
            position = self.consumer.get_watermark_offsets(TopicPartition(*key),
                                                           timeout=REQUEST_TIMEOUT_S)[0]
        return TopicPartition(*key, min(position, msg.offset())), Hang(msg.offset(), times)

    def mark(self, msg: Message, new_producer: Callable[[dict], Producer]) -> str:
        """Commit the mark of `msg` hanging now (see `commit_mark`); what comes of it next."""
        where, hang = self.next_hang(msg)
        commit_mark(new_producer, self.consumer, where, hang)
        return f"marked in Kafka: {hang_note(hang.times)}"

    def _position_at_end(self, key: tuple[str, int]) -> None:
        try:
            watermarks = self.consumer.get_watermark_offsets(TopicPartition(*key),
                                                             timeout=REQUEST_TIMEOUT_S)
        except KafkaException as exc:
            log.warning("could not read the end offset of %s [%d]: %s", *key, kafka_error(exc).str())
            return
        self.positions[key] = watermarks[1]


def hang_note(times: int) -> str:
    """What happens next to a record that hung `times` times."""
    if times >= HANGS_BEFORE_DEAD_LETTER:
        return f"it hung {times} times: the next instance dead-letters it"
    return (f"it hung {times} time(s): the next instance tries it again, and dead-letters it "
            f"once it hung {HANGS_BEFORE_DEAD_LETTER} times")


def commit_mark(new_producer: Callable[[dict], Producer], consumer: Consumer,
                where: TopicPartition, hang: Hang) -> None:
    """Commit `hang` at `where` in a transaction of a new producer with the processor's
    `transactional.id`: its `init_transactions` fences the hung one and aborts its open
    transaction, so nothing the hung record's batch produced is committed."""
    producer = new_producer({})
    producer.init_transactions(REQUEST_TIMEOUT_S)
    producer.begin_transaction()
    marked = TopicPartition(where.topic, where.partition, where.offset, metadata=hang.metadata())
    producer.send_offsets_to_transaction([marked], consumer.consumer_group_metadata(),
                                         REQUEST_TIMEOUT_S)
    producer.commit_transaction(REQUEST_TIMEOUT_S)
