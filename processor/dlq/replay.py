"""Sending dead letters back, exactly once and resumable.

A replay reads the dead-letter topic as consumer group `<app_id>.dlq-replay.<id>` and
writes each matching dead letter back to its origin topic and partition (or to `--to`) in
Kafka transactions (`transactional.id` `<app_id>-dlq-replay-<id>`) that also commit the
group's position: a replay killed with kill -9 and started again with the same id goes on
from its last commit, neither sending a letter twice nor skipping one (a second replay with
the same id fences the first). It ends at the end the topic had when it started.

A replayed record has its original key, value and headers, without the
`__processor.errors.*` ones, plus `__processor.replay.*` headers: where it was dead-lettered
from (`topic`, `partition`, `offset`), the dead letter (`dead_letter`), the replay `id`,
`time`, and `idempotency_key`, the original record's `record.idempotency_key`, which
`Record` gives the transform again (a service that saw the first attempt does not act twice).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processor.dlq.letters import TIMEOUT_S, Letter, letter_of
from processor.dlq.refused import RefusedLetters
from processor.dlq.select import Selection
from processor.kafka import kafka_error
from processor.refusals import REFUSED_AT_ONCE
from processor.state.timers import TIMERS_STORE
from processor.transform import REPLAY_PREFIX

COMMIT_EVERY_S = 0.5  # a replay is throughput, not latency: few, large transactions
COMMIT_EVERY_RECORDS = 50_000
REPLAY_KEY = REPLAY_PREFIX + "idempotency_key"
_DEAD_LETTER, _TOPIC = REPLAY_PREFIX + "dead_letter", REPLAY_PREFIX + "topic"
_PARTITION, _OFFSET = REPLAY_PREFIX + "partition", REPLAY_PREFIX + "offset"


class ReplayError(Exception):
    """The replay cannot go on (fenced by another replay with the same id, Kafka refusing)."""


@dataclass
class ReplaySummary:
    replay_id: str
    total: int = 0  # offsets from where the replay (re)started to the end (markers included)
    read: int = 0  # dead letters read
    replayed: int = 0
    unmatched: int = 0
    foreign: int = 0  # without the processor's headers: skipped (unless asked and --to)
    refused: int = 0  # refused by their target: skipped (left in the dead-letter topic)
    seconds: float = 0.0
    targets: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        rate = f" ({self.replayed / self.seconds:,.0f}/s)" if self.seconds and self.replayed else ""
        to = ", ".join(f"{n} to {topic}" for topic, n in sorted(self.targets.items())) or "none"
        return (f"replay {self.replay_id!r}: {self.read} dead letters read, {self.replayed} replayed "
                f"({to}) in {self.seconds:.1f}s{rate}; {self.unmatched} not matching, {self.foreign} "
                f"without the processor's headers skipped"
                + (f", {self.refused} refused by their target (left in the dead-letter topic)" if self.refused else ""))


def replayed_headers(letter: Letter, dead_letter_topic: str, context: list[tuple[str, bytes]]
                     ) -> list[tuple[str, bytes]]:
    """The letter's own headers (an earlier replay's replaced, its idempotency key kept), where
    it came from, and this replay's `context` (id, time)."""
    own, first_key = [], None
    for name, value in letter.own_headers:
        if not name.startswith(REPLAY_PREFIX):
            own.append((name, value))
        elif name == REPLAY_KEY:
            first_key = value
    errors = letter.raw_errors
    topic, partition, offset = errors["topic"], errors.get("partition", b"-1"), errors.get("offset", b"-1")
    return own + context + [
        (_DEAD_LETTER, place(dead_letter_topic, letter).encode()), (_TOPIC, topic), (_PARTITION, partition), (_OFFSET, offset),
        (REPLAY_KEY, first_key or b"%s:%s:%s:%s" % (errors.get("app_id", b""), topic, partition, offset))]


def place(dead_letter_topic: str, letter: Letter) -> str:
    return f"{dead_letter_topic} [{letter.partition}] @{letter.offset}"


def replay_context(replay_id: str) -> list[tuple[str, bytes]]:
    """The headers every record of one transaction of a replay shares."""
    return [(REPLAY_PREFIX + "id", replay_id.encode()), (REPLAY_PREFIX + "time", str(int(time.time() * 1000)).encode())]


@dataclass
class _Batch:
    """What one transaction of the replay holds (counted in the summary once it commits)."""

    context: list[tuple[str, bytes]]  # the headers its records share
    positions: dict[int, int] = field(default_factory=dict)  # next offset per partition
    read: int = 0
    replayed: int = 0
    unmatched: int = 0
    foreign: int = 0
    refused: int = 0
    targets: dict[str, int] = field(default_factory=dict)

    def add_to(self, summary: ReplaySummary) -> None:
        summary.read += self.read
        summary.refused += self.refused
        summary.replayed += self.replayed
        summary.unmatched += self.unmatched
        summary.foreign += self.foreign
        for topic, n in self.targets.items():
            summary.targets[topic] = summary.targets.get(topic, 0) + n


class Replay:
    def __init__(self, settings: dict, app_id: str, dead_letter_topic: str, replay_id: str,
                 selection: Selection, to: str | None = None, foreign: bool = False,
                 rate: float | None = None, progress: Callable[[int, int], None] | None = None):
        self.settings, self.topic, self.replay_id = settings, dead_letter_topic, replay_id
        self.selection, self.to, self.foreign, self.rate = selection, to, foreign, rate
        self.progress = progress or (lambda done, total: None)
        self.known_topics: set[str] = set()
        self.group = f"{app_id}.dlq-replay.{replay_id}"
        self.transactional_id = f"{app_id}-dlq-replay-{replay_id}"
        self.summary = ReplaySummary(replay_id)
        self.refusals = RefusedLetters()

    def target(self, letter: Letter) -> tuple[str, int | None] | None:
        """Where the letter goes (topic, partition or None for the partitioner), or None."""
        if letter.foreign:
            return (self.to, None) if self.to and self.foreign else None
        if not self.selection.matches(letter):
            return None
        if self.to:
            return self.to, None
        topic, partition, _ = letter.origin
        return topic, partition if partition >= 0 else None  # unknown: the key's partition

    def plan(self, letters: Iterable[Letter]) -> Iterator[tuple[Letter, tuple[str, int | None]]]:
        """What a dry run would send, and where, as the letters come."""
        chosen = 0
        for letter in letters:
            where = self.target(letter)
            if where is not None:
                yield letter, where
                chosen += 1
                if self.selection.limit is not None and chosen >= self.selection.limit:
                    return

    def run(self) -> ReplaySummary:
        began = time.monotonic()
        consumer = Consumer({**self.settings, "group.id": self.group, "enable.auto.commit": False,
                             "isolation.level": "read_committed", "enable.partition.eof": True})
        producer = Producer({**self.settings, "transactional.id": self.transactional_id,
                             "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                             "allow.auto.create.topics": False,  # a topic to check is never created
                             "delivery.report.only.error": True})
        try:
            ends = self._start(consumer)
            producer.init_transactions(TIMEOUT_S)
            self._copy(consumer, producer, ends)
        finally:
            consumer.close()
        self.summary.seconds = time.monotonic() - began
        return self.summary

    def _start(self, consumer: Consumer) -> dict[int, int]:
        """Assign every partition from the group's committed position; the ends to reach."""
        metadata = consumer.list_topics(self.topic, timeout=TIMEOUT_S).topics[self.topic]
        partitions = [TopicPartition(self.topic, p) for p in sorted(metadata.partitions)]
        starts = {tp.partition: tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                  for tp in consumer.committed(partitions, timeout=TIMEOUT_S)}
        ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)[1] for tp in partitions}
        lows = {tp.partition: consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)[0] for tp in partitions}
        self.summary.total = sum(max(ends[p] - max(starts[p], lows[p]), 0) for p in ends)
        consumer.assign([TopicPartition(self.topic, p, starts[p]) for p in ends])
        return {p: end for p, end in ends.items() if end > max(starts[p], lows[p])}

    def _copy(self, consumer: Consumer, producer: Producer, ends: dict[int, int]) -> None:
        """Transactions of what the letters read since the last one became, with the position."""
        began = time.monotonic()
        while ends and not self._limit_reached():
            before, batch = dict(ends), _Batch(replay_context(self.replay_id))
            producer.begin_transaction()
            self.refusals.began()
            per_transaction = self.refusals.per_transaction(COMMIT_EVERY_RECORDS)
            commit_at = time.monotonic() + COMMIT_EVERY_S
            while ends and time.monotonic() < commit_at and batch.replayed < per_transaction \
                    and not self._limit_reached(batch.replayed):
                # no more than the transaction may replay: a batch is never left half done
                for msg in consumer.consume(min(1000, per_transaction - batch.replayed), 0.2):
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            raise KafkaException(error)
                        ends.pop(msg.partition(), None)  # the end of what is committed
                        continue
                    partition, position = msg.partition(), msg.offset() + 1
                    batch.positions[partition] = position
                    if position >= ends.get(partition, 0):
                        ends.pop(partition, None)
                    if self._send(producer, letter_of(msg), batch) and self._limit_reached(batch.replayed):
                        break
                self._pace(self.summary.replayed + batch.replayed, began)
            offsets = [TopicPartition(self.topic, p, o) for p, o in batch.positions.items()]
            try:
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), TIMEOUT_S)
                producer.commit_transaction(TIMEOUT_S)
            except KafkaException as exc:
                self._failed(exc, consumer, producer)
                ends.clear()
                ends.update(before)  # read again from the last commit
                continue
            self.refusals.committed()
            batch.add_to(self.summary)
            self.progress(self.summary.read, self.summary.total)

    def _send(self, producer: Producer, letter: Letter, batch: _Batch) -> bool:
        """Replay `letter` if it is to be; whether it was."""
        batch.read += 1
        where = self.target(letter)
        if where is None:
            if letter.foreign:
                batch.foreign += 1
            else:
                batch.unmatched += 1
            return False
        topic, partition = where
        here = place(self.topic, letter)
        if self.refusals.skip(here):
            batch.refused += 1
            return False
        self._require(producer, topic, letter)
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, letter.value, letter.key, on_delivery=partial(self.refusals.delivered, here),
                                 headers=replayed_headers(letter, self.topic, batch.context), **extra)
                break
            except BufferError:  # the queue is full: let deliveries make room
                producer.poll(0.05)
            except KafkaException as exc:  # the client refuses it before sending
                error = kafka_error(exc)
                if error.code() not in REFUSED_AT_ONCE:
                    raise ReplayError(f"cannot replay dead letter {here}: {error.str()}") from exc
                self.refusals.refuse(here, f"{topic!r} refuses it: {error.str()}")
                batch.refused += 1
                return False
        self.refusals.sent.append(here)
        batch.replayed += 1
        batch.targets[topic] = batch.targets.get(topic, 0) + 1
        return True

    def _require(self, producer: Producer, topic: str, letter: Letter) -> None:
        """A topic to write to must exist (else every transaction would fail, for ever)."""
        if topic in self.known_topics:
            return
        if topic == TIMERS_STORE:
            raise ReplayError(f"dead letter {place(self.topic, letter)} is a timer's: a timer has no input "
                              f"topic to go back to: replay it with --to")
        found = producer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
        if found is None or found.error is not None:
            raise ReplayError(f"topic {topic!r} does not exist (dead letter {letter.partition}@{letter.offset}"
                              f"{' comes from it' if self.to is None else ''}): create it, or replay with --to")
        self.known_topics.add(topic)

    def _failed(self, exc: KafkaException, consumer: Consumer, producer: Producer) -> None:
        """Abort and go back to the last commit, or give up with one line."""
        error = kafka_error(exc)
        if not error.txn_requires_abort():
            raise ReplayError(f"the replay's transaction failed: {error.str()}") from exc
        producer.abort_transaction(TIMEOUT_S)
        producer.poll(0)  # the reports of the records Kafka refused
        if self.refusals.aborted():
            raise ReplayError(f"transactions fail again and again, no dead letter to blame: {error.str()}")
        partitions = consumer.assignment()
        for tp in consumer.committed(partitions, timeout=TIMEOUT_S):
            consumer.seek(TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING))
        print(f"aborted a transaction ({error.str()}): going on from the last commit", file=sys.stderr)

    def _limit_reached(self, pending: int = 0) -> bool:
        limit = self.selection.limit
        return limit is not None and self.summary.replayed + pending >= limit

    def _pace(self, replayed: int, began: float) -> None:
        if self.rate:
            ahead = replayed / self.rate - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(min(ahead, COMMIT_EVERY_S))
