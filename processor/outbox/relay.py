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
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from threading import Event

from confluent_kafka import KafkaError, KafkaException

from processor.kafka import FENCED_BY, FatalError, Stopped, kafka_error
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
                 route: str, batch_rows: int, poll_s: float, metrics: RelayMetrics):
        self.table, self.txp, self.progress_topic = table, txp, progress_topic
        self.reader, self.deleter = table.twin(), table.twin()  # connections of their own
        self.route = string.Template(route)
        self.batch_rows, self.poll_s, self.metrics = batch_rows, poll_s, metrics
        self.ready = Event()
        self.topics: dict[str, str] = {}  # by aggregatetype
        # Kafka refuses a whole request for one record in it: rows of a refused transaction
        # go again `cap` at a time (halved at each refusal) up to the last of them, until the
        # refused row is alone
        self.suspects_until: int | None = None
        self.cap = batch_rows
        self.refused_at: tuple[int, KafkaError] | None = None  # a row the client refused at once
        self.position: Position | None = None  # the last committed, for the backlog's measure

    def run(self, stopping: Event, consumer_settings: dict) -> None:
        try:
            self._run(stopping, consumer_settings)
        except FatalError as exc:
            if FENCED_BY in str(exc):
                raise FatalError(f"another relay of this outbox took over (it has the same "
                                 f"transactional.id): {exc}") from exc
            raise

    def _run(self, stopping: Event, consumer_settings: dict) -> None:
        position = self._start(consumer_settings, stopping)
        self.position = position
        self.ready.set()
        threading.Thread(target=self.measure_backlog, args=(stopping,), name="outbox-backlog", daemon=True).start()
        reads, deletes = ThreadPoolExecutor(1, "outbox-read"), ThreadPoolExecutor(1, "outbox-delete")
        try:
            position = self._loop(stopping, position, reads, deletes)
        finally:
            reads.shutdown(wait=False, cancel_futures=True)
            deletes.shutdown(wait=False, cancel_futures=True)
            self.reader.close()
            self.deleter.close()
        log.info("stopping: %d rows published by this outbox in all", position.published)

    def _loop(self, stopping: Event, position: Position, reads: ThreadPoolExecutor,
              deletes: ThreadPoolExecutor) -> Position:
        """While a batch commits, the next one is read (on a connection of its own), and the
        one before is deleted (on a third)."""
        idle = False
        ahead: Future | None = None  # the rows after the batch committing
        deleting: Future = deletes.submit(lambda: None)
        while not stopping.is_set():
            self.txp.serve()
            self.position = position
            rows = ahead.result() if ahead is not None else self.table.batch(position, self._limit(position))
            ahead = None
            if not rows:  # this batch is done: on to what ended since
                if idle and stopping.wait(self.poll_s):
                    break
                position, idle = position.next(self.table.snapshot()), True
                self.suspects_until = None  # none is left in the batch done
                continue
            idle = False
            after = position.after(rows[-1].seq, len(rows))
            if len(rows) == self.batch_rows:  # more are likely
                ahead = reads.submit(self.reader.batch, after, self._limit(after))
            if self._publish(rows, after):
                position = after
                deleting.result()  # one delete at a time: they never fall behind by more
                deleting = deletes.submit(self._delete, [row.id for row in rows])
                continue
            if ahead is not None:  # read for a commit that did not happen
                ahead.result()
                ahead = None
            if stopping.wait(RETRY_S):
                break
        deleting.result()
        return position

    def _delete(self, ids: list[str]) -> None:
        self.metrics.deleted.inc(self.deleter.delete(ids))

    def database_down_since(self) -> float | None:
        """Since when a connection has not had an answer (None: they all have)."""
        times = [t.down_since for t in (self.table, self.reader, self.deleter) if t.down_since is not None]
        return min(times, default=None)

    def _limit(self, position: Position) -> int:
        suspected = self.suspects_until is not None and position.seq < self.suspects_until
        return self.cap if suspected else self.batch_rows

    def _start(self, consumer_settings: dict, stopping: Event) -> Position:
        self.txp.init()  # fences any older relay and aborts its open transaction
        committed = read_position(consumer_settings, self.progress_topic, stopping)
        if committed is None:
            log.info("no position in %s: publishing every row of the table", self.progress_topic)
            return Position(None, self.table.snapshot())
        swept = self.table.sweep(committed)
        log.info("resuming after %d rows published (%d published rows left by a crash deleted)",
                 committed.published, swept)
        self.metrics.deleted.inc(swept)
        return committed

    def topic(self, aggregatetype: str) -> str:
        topic = self.topics.get(aggregatetype)
        if topic is None:
            topic = self.topics[aggregatetype] = self.route.substitute(aggregatetype=aggregatetype)
        return topic

    def _publish(self, rows: list[Row], after: Position) -> bool:
        """One Kafka transaction: the rows, then the position after them. False if aborted."""
        self.refused_at = None
        try:
            self.txp.begin()
            produce, topics = self.txp.producer.produce, self.topics
            for i, row in enumerate(rows):  # the hot path: str for bytes (the client encodes them)
                topic = topics.get(row.aggregatetype) or self.topic(row.aggregatetype)
                headers = [("id", row.id), ("type", row.type)]
                # an empty key is spread over the partitions by librdkafka's default
                # partitioner: the rows of aggregate '' keep their order in partition 0
                partition = -1 if row.aggregateid else 0
                try:
                    produce(topic, row.payload, row.aggregateid, headers=headers, partition=partition)
                except (BufferError, KafkaException):
                    self._produce(topic, row.payload, row.aggregateid, headers, i, partition)
            self._produce(self.progress_topic, after.encode(), KEY, None, None, partition=0)
            began = time.monotonic()
            self.txp.commit()
        except AbortTransaction as exc:
            self._abort(exc, rows)
            return False
        self.metrics.commit_seconds.observe(time.monotonic() - began)
        self.metrics.transactions.labels("committed").inc()
        for aggregatetype, n in Counter(row.aggregatetype for row in rows).items():
            self.metrics.published.labels(self.topic(aggregatetype)).inc(n)
        self.metrics.lag_seconds.set(max(0.0, time.time() - rows[-1].created_at))
        return True

    def _produce(self, topic: str, value, key, headers, row: int | None, partition: int = -1) -> None:
        """Produce, waiting while the client's queue is full; the row it refuses at once (the
        `row`-th of the transaction) aborts the transaction and is found like one the broker
        refused."""
        while True:
            try:
                self.txp.producer.produce(topic, value, key, partition=partition, headers=headers)
                return
            except BufferError:
                self.txp.producer.poll(0.1)
            except KafkaException as exc:
                error = kafka_error(exc)
                if row is None or error.code() not in REFUSED_AT_ONCE:
                    # the transaction failed (fenced, say): its abort tells why, as a commit would
                    raise AbortTransaction(f"producing failed: {error.str()}") from exc
                self.refused_at = (row, error)
                raise AbortTransaction(f"Kafka refuses a row: {error.str()}") from exc

    def _abort(self, exc: AbortTransaction, rows: list[Row]) -> None:
        log.warning("aborting the transaction: %s", exc)
        refused = [error for error, topic in self.txp.delivery_errors
                   if error.code() in REFUSED and topic != self.progress_topic]
        self.txp.abort()
        self.metrics.transactions.labels("aborted").inc()
        if self.refused_at is not None:  # the client named the row: the ones before it go first
            index, error = self.refused_at
            if index == 0:
                raise self._refused(rows[0], error)
            self._suspect(rows, index)
        elif refused:
            if len(rows) == 1:
                raise self._refused(rows[0], refused[0])
            self._suspect(rows, len(rows) // 2)

    def _suspect(self, rows: list[Row], cap: int) -> None:
        self.suspects_until, self.cap = rows[-1].seq, cap
        log.warning("Kafka refuses a row of these %d: again %d per transaction to find it", len(rows), cap)

    def _refused(self, row: Row, error: KafkaError) -> FatalError:
        return FatalError(f"Kafka refuses outbox row {row.id} (aggregate {row.aggregatetype} "
                          f"{row.aggregateid}, topic {self.topic(row.aggregatetype)!r}): {error.str()}; "
                          f"nothing from it on was published: fix the cause (create the topic, raise "
                          f"its max.message.bytes) or take the row out of the table, then start again")

    def measure_backlog(self, stopping: Event) -> None:
        """Every few seconds, on a connection of its own (a count over a large backlog takes
        a while): the rows not published yet and the oldest one's age."""
        table = self.table.twin()
        try:
            while not stopping.wait(BACKLOG_EVERY_S):
                if self.position is not None:
                    rows, age = table.backlog(self.position)
                    self.metrics.lag_rows.set(rows)
                    self.metrics.oldest_unpublished.set(age or 0.0)
        except (FatalError, Stopped) as exc:  # the loop meets the database's absence too, and says so
            log.debug("backlog not measured: %s", exc)
        finally:
            table.close()
