"""The exactly-once loop: consume a batch, process it, and commit outputs and offsets together.

One transaction spans many records; it commits when `commit_interval_ms` has passed or
`max_batch_records` inputs were processed. Abortable errors abort and rewind to the first
offset of the transaction; fatal errors (fenced, unrecoverable) raise `FatalError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor.deadletter import Failure, dead_letter_headers
from processor.kafka import FatalError, kafka_error
from processor.metrics import Metrics
from processor.pipeline import Encoded, Pipeline, RetryLater
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


class Transaction:
    """What the open transaction holds: offsets to commit, where to rewind, what to count."""

    __slots__ = ("deadline", "inputs", "next_offsets", "first_offsets", "counts", "produced",
                 "dead_lettered")

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.inputs = 0
        self.next_offsets: dict[tuple[str, int], int] = {}
        self.first_offsets: dict[tuple[str, int], int] = {}
        self.counts: dict[tuple[str, int], int] = {}  # inputs per partition
        self.produced: Counter = Counter()
        self.dead_lettered: Counter = Counter()

    def track(self, msg: Message) -> None:
        offset = msg.offset()
        tp = (msg.topic(), msg.partition())
        count = self.counts.get(tp)
        if count is None:
            self.first_offsets[tp] = offset
            count = 0
        self.counts[tp] = count + 1
        self.next_offsets[tp] = offset + 1
        self.inputs += 1

    @property
    def consumed(self) -> Counter:
        by_topic: Counter = Counter()
        for (topic, _), count in self.counts.items():
            by_topic[topic] += count
        return by_topic


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
        self.seconds_until_probe = seconds_until_probe
        self.paused_until: float | None = None
        self.progressed = clock()  # when the loop last moved on: the watchdog reads it
        self.assigned: set[tuple[str, int]] = set()
        self._callback_error: BaseException | None = None
        self.ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def run(self, stopping: threading.Event) -> None:
        """Process until `stopping` is set, then settle the open transaction and leave the group."""
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
        if self.paused_until is not None and self.clock() >= self.paused_until:
            self._resume()
        if self.txn is None:
            wait, room = IDLE_POLL_SECONDS, self.consume_batch
        else:
            wait = min(max(self.txn.deadline - self.clock(), 0.0), IDLE_POLL_SECONDS)
            room = min(self.consume_batch, self.max_batch - self.txn.inputs)
        messages = self.consumer.consume(room, wait)
        self._raise_callback_error()
        self.reachability.errors.check()
        if messages:
            self.reachability.answered()
        elif self.reachability.probe_due(PROBE_SECONDS):
            self._probe()
        records = messages
        if any(msg.error() for msg in messages):  # rare: keep the loop below free of checks
            for msg in messages:
                if msg.error():
                    self._consumer_error(msg.error())
            records = [msg for msg in messages if not msg.error()]
        if self.executor:  # one deadline for the whole batch: it bounds the transaction too
            deadline = self.clock() + self.pipeline.record_deadline_s
            results = self.executor.map(partial(self.pipeline.process, deadline=deadline), records)
        else:  # lazily, one record at a time, so commits fall between records
            results = map(self.pipeline.process, records)
        uncommitted = 0  # records[uncommitted:] are not committed yet
        try:
            for i, (msg, result) in enumerate(zip(records, results)):
                self._process(msg, result)
                self.progressed = now = self.clock()
                if self.txn.inputs >= self.max_batch or now >= self.txn.deadline:
                    self._commit()
                    uncommitted = i + 1
            if self.txn is not None and self.clock() >= self.txn.deadline:
                self._commit()
        except RetryLaterError as exc:
            log.warning("aborting the transaction to retry its records later: %s", exc)
            self._abort(records[uncommitted:])
            self._pause(max(self.seconds_until_probe(), self.retry_backoff))
        except AbortTransaction as exc:
            log.warning("aborting the transaction and processing its records again: %s", exc)
            self._abort(records[uncommitted:])

    # -- per record ------------------------------------------------------------------------
    def _process(self, msg: Message, result: list[Encoded] | Failure | RetryLater) -> None:
        txn = self.txn
        if type(result) is list:  # the common case: outputs, often exactly one
            if txn is None:
                txn = self._begin()
            try:
                self._produce(result)
            except KafkaException as exc:  # refused before sending: deterministic for this record
                self._dead_letter(msg, Failure("produce", exc))
            else:
                for out in result:
                    txn.produced[out[0]] += 1
        elif isinstance(result, RetryLater):
            raise RetryLaterError(f"{type(result.error).__name__}: {result.error}")
        else:
            if txn is None:
                txn = self._begin()
            self._dead_letter(msg, result)
        txn.track(msg)

    def _begin(self) -> Transaction:
        self.txp.begin()
        self.txn = Transaction(self.clock() + self.commit_interval)
        return self.txn

    def _produce(self, outputs: list[Encoded]) -> None:
        produce = self.txp.producer.produce
        for topic, key, value, headers in outputs:
            while True:
                try:
                    produce(topic, value, key, headers=headers)
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
            self._produce([(self.dead_letter_topic, msg.key(), msg.value(), headers)])
        except KafkaException as exc:
            raise AbortTransaction(f"the dead-letter record could not be produced: {exc}") from exc
        self.txn.dead_lettered[(msg.topic(), failure.stage)] += 1

    # -- transaction boundaries ------------------------------------------------------------
    def _commit(self) -> None:
        txn = self.txn
        began = self.clock()
        offsets = [TopicPartition(t, p, o) for (t, p), o in txn.next_offsets.items()]
        self.txp.commit(offsets, self.consumer.consumer_group_metadata())
        self.txn = None
        self.metrics.committed(txn.consumed, txn.produced, txn.dead_lettered, txn.inputs,
                               self.clock() - began)
        for tp in offsets:  # watermarks cached from fetch responses: no request to the broker
            high = self.consumer.get_watermark_offsets(tp, cached=True)[1]
            if high >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    def _abort(self, batch: list[Message] | None = None) -> None:
        """Abort the open transaction; with `batch`, rewind to the first record that is not
        committed: the transaction's first, else the batch's first (records consumed but not
        yet in a transaction must be fetched again too)."""
        txn, self.txn = self.txn, None
        if txn is not None:
            self.txp.abort()
            self.metrics.aborted()
        if batch is None:
            return
        rewind: dict[tuple[str, int], int] = {}
        for msg in batch:
            rewind.setdefault((msg.topic(), msg.partition()), msg.offset())
        if txn is not None:
            rewind.update(txn.first_offsets)
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

    def _pause(self, seconds: float) -> None:
        """Stop fetching (the group membership holds: consume() goes on) for `seconds`."""
        self.consumer.pause(self._assigned_partitions())
        self.paused_until = self.clock() + seconds
        log.warning("consumption paused for %.1fs", seconds)

    def _resume(self) -> None:
        still_open = self.seconds_until_probe()
        if still_open > 0:
            self.paused_until = self.clock() + still_open
            return
        self.consumer.resume(self._assigned_partitions())
        self.paused_until = None
        log.info("consumption resumed")

    def _assigned_partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.assigned)]

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = {(tp.topic, tp.partition) for tp in partitions}
        if self.paused_until is not None:  # pauses outlive a rebalance
            consumer.assign(partitions)
            consumer.pause(partitions)
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
