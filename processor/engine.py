"""The exactly-once loop: consume a batch, process it, and commit outputs and offsets together.

One transaction spans many records; it commits when `commit_interval_ms` has passed or
`max_batch_records` inputs were processed. Abortable errors abort and rewind to the first
offset that no committed transaction holds; fatal errors (fenced, unrecoverable) raise
`FatalError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor.deadletter import Failure, dead_letter_headers
from processor.kafka import FatalError, kafka_error
from processor.metrics import Metrics
from processor.pausing import Pause
from processor.pipeline import Encoded, Outcome, Pipeline, RetryLater
from processor.topics import MissingTopic, Topics
from processor.transaction import Transaction
from processor.txproducer import AbortTransaction, TransactionalProducer

log = logging.getLogger("processor.engine")
CONSUME_BATCH = 1000
IDLE_POLL_SECONDS = 0.5
PROBE_SECONDS = 2.0
CLOSE_SECONDS = 30.0
_UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
                KafkaError._RESOLVE}


class RetryLaterError(AbortTransaction):
    """A record failed transiently: abort, rewind, and pause before trying again."""


class Engine:
    def __init__(self, consumer: Consumer, producer: TransactionalProducer, pipeline: Pipeline, *,
                 topics: list[str], dead_letter_topic: str, app_id: str,
                 commit_interval_ms: int, max_batch_records: int, stacktrace_max_bytes: int,
                 metrics: Metrics, concurrency: int = 1, retry_backoff_s: float = 1.0,
                 seconds_until_probe: Callable[[], float] = lambda: 0.0,
                 clock: Callable[[], float] = time.monotonic):
        self.consumer, self.txp, self.pipeline = consumer, producer, pipeline
        self.reachability = producer.reachability
        self.topics = topics
        self.dead_letter_topic = dead_letter_topic
        self.app_id = app_id
        self.commit_interval = commit_interval_ms / 1000
        self.max_batch = max_batch_records
        self.stacktrace_max_bytes = stacktrace_max_bytes
        self.metrics = metrics
        self.clock = clock
        self.txn: Transaction | None = None
        # records of a batch are transformed concurrently; outputs still go out in input order
        self.executor = ThreadPoolExecutor(concurrency, "transform") if concurrency > 1 else None
        self.consume_batch = min(CONSUME_BATCH, concurrency * 4) if self.executor else CONSUME_BATCH
        self.retry_backoff = retry_backoff_s
        self.pause = Pause(consumer, seconds_until_probe, clock)
        self.output_topics = Topics(consumer)
        self.progressed = clock()  # when the loop last moved on: the watchdog reads it
        self.assigned: set[tuple[str, int]] = set()
        self._callback_error: BaseException | None = None
        # records (topic, partition, offset) one of whose several outputs Kafka refused: when
        # processed again, they go to the dead-letter topic without outputs (until committed)
        self.refused: dict[tuple[str, int, int], Failure] = {}
        self.ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def run(self, stopping: threading.Event) -> None:
        """Process until `stopping` is set, then settle the open transaction and leave the group."""
        self._require_topics(self.pipeline.output_topic, self.dead_letter_topic)
        self.txp.init()
        self.consumer.subscribe(self.topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        try:
            while not stopping.is_set():
                self._step()
            if self.txn is not None:
                self._commit_or_abort()
        except BaseException:
            self.txn = None  # never commit after a failure: the broker aborts it
            raise
        finally:
            self.ready.clear()
            _bounded(self.consumer.close, CLOSE_SECONDS)

    def _step(self) -> None:
        self.progressed = self.clock()
        self.pause.resume_if_due(self._assigned_partitions())
        if self.txn is None:
            wait, room = IDLE_POLL_SECONDS, self.consume_batch
        else:
            wait = min(max(self.txn.deadline - self.clock(), 0.0), IDLE_POLL_SECONDS)
            room = min(self.consume_batch, self.max_batch - self.txn.inputs)
        # what is there already, else the first record to come: consume(room, wait) would hold
        # the records that came back until `room` of them are there or `wait` is over
        messages = self.consumer.consume(room, 0) or self.consumer.consume(1, wait)
        self._raise_callback_error()
        self.reachability.errors.check()
        if messages:
            self.reachability.answered()
        elif self.reachability.probe_due(PROBE_SECONDS):
            self._probe()
        records = messages
        if any(map(Message.error, messages)):  # rare: keep the loop below free of checks
            for msg in messages:
                if msg.error():
                    self._consumer_error(msg.error())
            records = [msg for msg in messages if not msg.error()]
        if self.executor:  # one deadline for the whole batch: it bounds the transaction too
            deadline = self.clock() + self.pipeline.record_deadline_s
            outcomes = self.executor.map(partial(self.pipeline.process, deadline=deadline), records)
            fill = partial(self._fill_outcomes, outcomes)
        else:  # one record at a time, so commits fall between records
            fill = self._fill
        uncommitted = 0  # records[uncommitted:] are in no committed transaction
        try:
            while uncommitted < len(records):
                uncommitted = fill(records, uncommitted)
            # serve delivery reports as they come: librdkafka frees a sent record only then, and
            # left to the commit, tens of thousands pile up (measured: ~15% more CPU per record)
            self.txp.producer.poll(0)
            if self.txn is not None and self.clock() >= self.txn.deadline:
                self._commit()
        except RetryLaterError as exc:
            log.warning("aborting the transaction to retry its records later: %s", exc)
            self._abort(records[uncommitted:])
            self.pause.start(max(self.pause.seconds_until_probe(), self.retry_backoff),
                             self._assigned_partitions())
        except AbortTransaction as exc:
            log.warning("aborting the transaction and processing its records again: %s", exc)
            self._abort(records[uncommitted:])

    # -- per record ------------------------------------------------------------------------
    def _fill(self, records: list[Message], start: int) -> int:
        """Process and produce records[start:] until the batch ends or the transaction is
        due, then commit if due; returns the index of the first record left."""
        txn = self.txn or self._begin()
        fill, produce, deadline = self.pipeline.fill, self.txp.producer.produce, txn.deadline
        i = start
        while i < len(records):
            i, outcome = fill(records, i, produce, deadline)
            if outcome is None:  # the batch ended or the transaction is due
                break
            self._other(records[i], outcome)
            i += 1
            if self.clock() >= deadline:
                break
        return self._added(txn, records, start, i)

    def _fill_outcomes(self, outcomes: Iterator[Outcome], records: list[Message], start: int) -> int:
        """As `_fill`, for outcomes processed concurrently (`outcomes` yields records[start:]'s)."""
        txn = self.txn or self._begin()
        i = start
        for outcome in outcomes:
            self._other(records[i], [outcome] if type(outcome) is tuple else outcome)
            i += 1
            if self.clock() >= txn.deadline:
                break
        return self._added(txn, records, start, i)

    def _added(self, txn: Transaction, records: list[Message], start: int, end: int) -> int:
        txn.add(records, start, end)
        if self.clock() >= txn.deadline or txn.inputs >= self.max_batch:
            self._commit()
        return end

    def _other(self, msg: Message, result: list[Encoded] | Failure | RetryLater) -> None:
        """A record with no output, several outputs (or one the full queue did not take yet),
        or a failure."""
        txn = self.txn
        txn.others += 1
        if type(result) is list:
            where = (msg.topic(), msg.partition(), msg.offset())
            # an output refused when the record was last processed, or a topic that is not there
            failure = self.refused.get(where) or self._missing_topic(result)
            if failure is not None:
                self._dead_letter(msg, failure)
                return
            for n, out in enumerate(result):
                try:
                    self._produce([out])
                except KafkaException as exc:  # refused before sending: deterministic for this record
                    if n == 0:
                        self._dead_letter(msg, Failure("produce", exc))
                        return
                    # outputs of the record are in the transaction already: process it again
                    # in a new one and dead-letter it alone
                    self.refused[where] = Failure("produce", exc)
                    raise AbortTransaction(f"output {n + 1} of {len(result)} of record "
                                           f"{where[0]} [{where[1]}] @{where[2]} was refused: "
                                           f"{kafka_error(exc).str()}") from exc
                txn.produced[out[0]] += 1
        elif isinstance(result, RetryLater):
            raise RetryLaterError(f"{type(result.error).__name__}: {result.error}")
        else:
            self._dead_letter(msg, result)

    def _missing_topic(self, outputs: list[Encoded]) -> Failure | None:
        """Why these outputs cannot go out, if one names a topic that does not exist."""
        try:
            missing = [topic for topic in {out[0] for out in outputs} if self.output_topics.missing(topic)]
        except KafkaException as exc:
            raise AbortTransaction(f"could not ask Kafka whether output topics exist: "
                                   f"{kafka_error(exc).str()}") from exc
        if missing:
            return Failure("produce", MissingTopic(f"output topic {missing[0]!r} does not exist"))
        return None

    def _require_topics(self, *topics: str) -> None:
        """Refuse to start without the topics every run writes to (unless Kafka does not
        answer yet: the reachability bound decides then)."""
        for topic in topics:
            try:
                missing = self.output_topics.missing(topic)
            except KafkaException as exc:
                log.warning("could not ask Kafka whether topic %r exists: %s", topic, kafka_error(exc).str())
                return
            if missing:
                raise FatalError(f"topic {topic!r} does not exist: create it (the processor does not)")

    def _begin(self) -> Transaction:
        self.txp.begin()
        self.txn = Transaction(self.clock() + self.commit_interval,
                               self.topics[0] if len(self.topics) == 1 else None)
        return self.txn

    def _produce(self, outputs: list[Encoded]) -> None:
        for topic, value, key, headers in outputs:
            while True:
                try:
                    self.txp.producer.produce(topic, value, key, headers=headers)
                    break
                except BufferError:  # the queue is full: wait for deliveries, within the bound
                    self.reachability.failed("the producer queue stays full")
                    self.txp.producer.poll(0.05)

    def _dead_letter(self, msg: Message, failure: Failure) -> None:
        log.warning("dead-lettering record at %s [%d] @%d: %s: %s", msg.topic(), msg.partition(),
                    msg.offset(), failure.stage, failure.error,
                    extra={"topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset()})
        headers = dead_letter_headers(msg, failure, self.app_id, self.stacktrace_max_bytes)
        try:
            self._produce([(self.dead_letter_topic, msg.value(), msg.key(), headers)])
        except KafkaException as exc:
            raise AbortTransaction(f"the dead-letter record could not be produced: {exc}") from exc
        self.txn.dead_lettered[(msg.topic(), failure.stage)] += 1

    # -- transaction boundaries ------------------------------------------------------------
    def _commit(self) -> None:
        txn = self.txn
        began = self.clock()
        offsets = txn.next_offsets()
        self.txp.commit(offsets, self.consumer.consumer_group_metadata())
        self.txn = None
        self.progressed = self.clock()
        if self.refused:  # the dead letters of those committed are in for good
            ends = {(tp.topic, tp.partition): tp.offset for tp in offsets}
            self.refused = {where: failure for where, failure in self.refused.items()
                            if where[2] >= ends.get(where[:2], 0)}
        self.metrics.committed(txn.consumed, txn.produced_by_topic(self.pipeline.output_topic),
                               txn.dead_lettered, txn.inputs, self.progressed - began)
        for tp in offsets:  # watermarks cached from fetch responses: no request to the broker
            high = self.consumer.get_watermark_offsets(tp, cached=True)[1]
            if high >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    def _abort(self, uncommitted: list[Message] | None = None) -> None:
        """Abort the open transaction; with `uncommitted` (the batch's records in no committed
        transaction), rewind every partition to its first record not committed."""
        txn, self.txn = self.txn, None
        if txn is not None:
            self.txp.abort()
            self.metrics.aborted()
        if uncommitted is None:
            return
        rewind = txn.first_offsets() if txn is not None else {}
        for msg in uncommitted:
            rewind.setdefault((msg.topic(), msg.partition()), msg.offset())
        for (topic, partition), offset in rewind.items():
            if (topic, partition) in self.assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def _commit_or_abort(self) -> None:
        try:
            self._commit()
        except AbortTransaction as exc:
            log.warning("could not commit, aborting: %s", exc)
            self._abort()

    # -- consumer events -------------------------------------------------------------------
    def _consumer_error(self, error: KafkaError) -> None:
        if error.fatal():
            raise FatalError(f"consumer failed fatally: {error.str()}")
        if error.code() in _UNREACHABLE:
            self.reachability.failed(f"consumer: {error.str()}")
        log.warning("consumer: %s", error.str())

    def _probe(self) -> None:
        """While Kafka seems away and no records flow, ask for metadata to learn it is back."""
        try:
            self.consumer.list_topics(self.topics[0], timeout=PROBE_SECONDS)
        except KafkaException as exc:
            self.reachability.failed(f"metadata request: {kafka_error(exc).str()}")
        else:
            self.reachability.answered()

    def _assigned_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = {(tp.topic, tp.partition) for tp in partitions}
        self.refused.clear()  # whoever processes them next finds out again
        self.pause.reapply(partitions)
        self.metrics.rebalances.labels("assigned").inc()
        self.ready.set()
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoked").inc()
        log.info("revoked %s", _names(partitions))
        self._guard(self._commit_or_abort)
        self.assigned = set()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        log.warning("lost %s: aborting the open transaction", _names(partitions))
        self.assigned = set()
        self._guard(self._abort)

    def _guard(self, action: Callable[[], None]) -> None:
        """Run `action` inside a rebalance callback; its error is raised after consume returns."""
        if self.txn is None:
            return
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - re-raised by _raise_callback_error
            self._callback_error = exc

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error


def _bounded(action: Callable[[], None], seconds: float) -> None:
    """Run `action` but wait at most `seconds` for it (closing must not hang the exit)."""
    thread = threading.Thread(target=action, name=action.__name__, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        log.warning("%s did not finish within %.0fs; exiting anyway", action.__name__, seconds)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
