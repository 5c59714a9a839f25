"""The relay loop: read a batch of outbox rows, publish them and the position after them in
one Kafka transaction, then delete them from the table.

Exactly once: the position is committed with the rows (a crash before the commit publishes
nothing of the batch, the next relay starts from the last committed position); rows are
deleted only after Kafka committed them, and whatever a crash left behind is deleted at the
next start (`OutboxTable.sweep`). One relay at a time: each one initialises the same
`transactional.id`, which fences the one before, and only then reads the position.
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Callable
from threading import Event

from confluent_kafka import KafkaError, KafkaException

from processor.kafka import FENCED_BY, FatalError, kafka_error
from processor.outbox.gauges import RelayMetrics
from processor.outbox.position import Position
from processor.outbox.progress import KEY, read_position
from processor.outbox.table import OutboxTable, Row
from processor.refusals import REFUSED, REFUSED_AT_ONCE
from processor.txproducer import AbortTransaction, TransactionalProducer

log = logging.getLogger("processor.outbox")
BACKLOG_EVERY_S = 5.0
RETRY_S = 1.0



class Relay:
    def __init__(self, table: OutboxTable, txp: TransactionalProducer, progress_topic: str,
                 route: str, batch_rows: int, poll_s: float, metrics: RelayMetrics,
                 delete_published: bool = True):
        self.table, self.txp, self.progress_topic = table, txp, progress_topic
        self.route = string.Template(route)
        self.batch_rows, self.poll_s, self.metrics = batch_rows, poll_s, metrics
        self.delete_published = delete_published
        self.ready = Event()
        self.refusals: list[tuple[KafkaError, Row, str]] = []
        # Kafka refuses a whole request for one record in it: until the position passes the
        # rows refused with it, one row per transaction, so that the refused one is alone
        self.suspects_until: int | None = None
        self.measured_at = 0.0

    def run(self, stopping: Event, consumer_settings: dict) -> None:
        try:
            self._run(stopping, consumer_settings)
        except FatalError as exc:
            if FENCED_BY in str(exc):
                raise FatalError(f"another relay of this outbox took over (it has the same "
                                 f"transactional.id): {exc}") from exc
            raise

    def _run(self, stopping: Event, consumer_settings: dict) -> None:
        position = self._start(consumer_settings)
        self.ready.set()
        idle = False
        while not stopping.is_set():
            self.txp.serve()
            self._measure(position)
            suspected = self.suspects_until is not None and position.seq < self.suspects_until
            rows = self.table.batch(position, 1 if suspected else self.batch_rows)
            if not rows:  # this batch is done: on to what ended since
                if idle and stopping.wait(self.poll_s):
                    break
                position, idle = position.next(self.table.snapshot()), True
                self.suspects_until = None  # none is left in the batch done
                continue
            idle = False
            after = position.after(rows[-1].seq, len(rows))
            if self._publish(rows, after):
                position = after
                if self.delete_published:
                    self.metrics.deleted.inc(self.table.delete([row.id for row in rows]))
            elif stopping.wait(RETRY_S):
                break
        log.info("stopping: %d rows published by this outbox in all", position.published)

    def _start(self, consumer_settings: dict) -> Position:
        self.txp.init()  # fences any older relay and aborts its open transaction
        committed = read_position(consumer_settings, self.progress_topic)
        if committed is None:
            log.info("no position in %s: publishing every row of the table", self.progress_topic)
            return Position(None, self.table.snapshot())
        swept = self.table.sweep(committed) if self.delete_published else 0
        log.info("resuming after %d rows published (%d published rows left by a crash deleted)",
                 committed.published, swept)
        self.metrics.deleted.inc(swept)
        return committed

    def topic(self, row: Row) -> str:
        return self.route.substitute(aggregatetype=row.aggregatetype)

    def _publish(self, rows: list[Row], after: Position) -> bool:
        """One Kafka transaction: the rows, then the position after them. False if aborted."""
        self.refusals.clear()
        produced: dict[str, int] = {}
        try:
            self.txp.begin()
            for row in rows:
                topic = self.topic(row)
                self._produce(topic, row.aggregateid.encode(), row.payload.encode() if row.payload is not None else None,
                              [("id", row.id.encode()), ("type", row.type.encode())], self._on_refused(row, topic))
                produced[topic] = produced.get(topic, 0) + 1
            self._produce(self.progress_topic, KEY, after.encode(), None, None, partition=0)
            began = time.monotonic()
            self.txp.commit()
        except AbortTransaction as exc:
            self._abort(exc, rows)
            return False
        self.metrics.commit_seconds.observe(time.monotonic() - began)
        self.metrics.transactions.labels("committed").inc()
        for topic, n in produced.items():
            self.metrics.published.labels(topic).inc(n)
        self.metrics.lag_seconds.set(max(0.0, time.time() - rows[-1].created_at))
        return True

    def _produce(self, topic: str, key: bytes, value: bytes | None, headers, on_refused, partition: int = -1) -> None:
        while True:
            try:
                self.txp.producer.produce(topic, value, key, partition=partition, headers=headers,
                                          on_delivery=on_refused)
                return
            except BufferError:  # the local queue is full: let it drain
                self.txp.producer.poll(0.1)
            except KafkaException as exc:  # refused before sending: as if refused by the broker
                error = kafka_error(exc)
                if on_refused is None or error.code() not in REFUSED_AT_ONCE:
                    raise
                on_refused(error, None)
                raise AbortTransaction(f"Kafka refuses a row: {error.str()}") from exc

    def _on_refused(self, row: Row, topic: str) -> Callable:
        def refused(error: KafkaError | None, _msg) -> None:
            if error is not None:
                self.refusals.append((error, row, topic))
        return refused

    def _abort(self, exc: AbortTransaction, rows: list[Row]) -> None:
        log.warning("aborting the transaction: %s", exc)
        self.txp.abort()
        self.metrics.transactions.labels("aborted").inc()
        refused = [(error, row, topic) for error, row, topic in self.refusals
                   if error.code() in REFUSED | REFUSED_AT_ONCE]
        if len(refused) == 1 and len(rows) == 1:
            error, row, topic = refused[0]
            raise FatalError(f"Kafka refuses outbox row {row.id} (aggregate {row.aggregatetype} "
                             f"{row.aggregateid}, topic {topic!r}): {error.str()}; nothing after it "
                             f"was published: fix the cause (create the topic, raise its "
                             f"max.message.bytes) or take the row out of the table, then start again")
        if refused:
            self.suspects_until = max(row.seq for _, row, _ in refused)
            log.warning("Kafka refuses one of %d rows: publishing them one per transaction to find it",
                        len(refused))

    def _measure(self, position: Position) -> None:
        now = time.monotonic()
        if now - self.measured_at < BACKLOG_EVERY_S:
            return
        self.measured_at = now
        rows, age = self.table.backlog(position)
        self.metrics.lag_rows.set(rows)
        self.metrics.oldest_unpublished.set(age or 0.0)
