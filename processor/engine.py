"""The exactly-once loop: consume a batch, hand it to the pipeline, commit when due.

The open transaction and its boundaries belong to `Transactions` (transaction.py): this
module consumes, keeps the consumer's group membership and pauses, and decides nothing
about what a transaction holds. Abortable errors abort and rewind to the first offset that
no committed transaction holds; fatal errors (fenced, unrecoverable) raise `FatalError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor.kafka import (FENCED_BY, NO_CONSUMER_PROTOCOL, UNREACHABLE, FatalError, MemberFenced, is_fatal,
                             is_fenced, is_member_fenced, kafka_error, lacks_consumer_protocol)
from processor.offsetfetch import committed_starts, lost_offset_fetch
from processor.pausing import Pause
from processor.pipeline import Outcome, Pipeline, TransformExit
from processor.state.timergate import TimerGate
from processor.transaction import RetryLaterError, Transactions
from processor.txproducer import AbortTransaction

log = logging.getLogger("processor.engine")
CONSUME_BATCH = 1000
IDLE_POLL_SECONDS = 0.5
PROBE_SECONDS = 2.0
RECOVERY_SLICE_S = 0.5  # of recovery per loop turn while partitions are held back
STOP_SECONDS = 30.0  # from SIGTERM to exit, Kafka reachable or not (compose grace: 45 s)
REJOINS, REJOIN_WINDOW_S = 3, 600.0  # a static member fenced more often than this: give up
TIMER_BATCH = 1000  # due timers fired per loop turn at most (records get their turn too)


class Engine:
    def __init__(self, consumer: Consumer, transactions: Transactions, pipeline: Pipeline, *,
                 topics: list[str], concurrency: int = 1, retry_backoff_s: float = 1.0,
                 seconds_until_probe: Callable[[], float] = lambda: 0.0,
                 incremental: bool = False, new_consumer: Callable[[], Consumer] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.consumer, self.tx, self.pipeline = consumer, transactions, pipeline
        self.timers = pipeline.stores.timers if pipeline.stores is not None else None
        # timers fire after the records that came before their due time (timergate.py)
        self.gate = TimerGate(topics, self._cached_end) if self.timers is not None else None
        self.new_consumer = new_consumer  # a consumer like `consumer`, for a fenced static member
        self.rejoined: list[float] = []
        self.txp = transactions.txp
        self.reachability = self.txp.reachability
        self.topics = topics
        self.metrics = transactions.metrics
        self.clock = clock
        # records of a batch are transformed concurrently; outputs still go out in input order
        self.executor = ThreadPoolExecutor(concurrency, "transform") if concurrency > 1 else None
        self.consume_batch = min(CONSUME_BATCH, concurrency * 4) if self.executor else CONSUME_BATCH
        self.retry_backoff = retry_backoff_s
        self.pause = Pause(consumer, seconds_until_probe, clock, incremental)
        self.progressed = clock()  # when the loop last moved on: the watchdog reads it
        self._callback_error: BaseException | None = None
        self.restart_fetch = False  # the consumer lost its committed offsets (offsetfetch.py)
        self.ready = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def run(self, stopping: threading.Event) -> None:
        """Process until `stopping` is set, then settle the open transaction and leave the group."""
        self.tx.require_topics()
        self.txp.init()
        self.consumer.subscribe(self.topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)
        try:
            while not stopping.is_set():
                try:
                    self._step()
                except MemberFenced as fenced:
                    self._rejoin(fenced)
            log.info("stop requested: finishing the open transaction (giving up after %.0fs)",
                     STOP_SECONDS)
            self.tx.commit_or_abort()
        except TransformExit:
            self._abort_quietly()
            raise
        except BaseException:
            self.tx.open = None  # never commit after a failure: the broker aborts it
            raise
        finally:
            self.ready.clear()
            stop_by = self.reachability.stop_by or self.clock() + STOP_SECONDS
            closed = _bounded(self.consumer.close, max(stop_by - self.clock(), 1.0))
        if not closed:
            raise FatalError("gave up stopping cleanly: the consumer did not leave the group in time")

    def _abort_quietly(self) -> None:
        """Abort the open transaction on the way out, if Kafka lets us."""
        try:
            self.tx.abort()
        except Exception as exc:  # noqa: BLE001 - the broker aborts it at its timeout anyway
            log.warning("could not abort the open transaction: %s", exc)
            self.tx.open = None

    def _step(self) -> None:
        self.progressed = self.clock()
        held = self.tx.held()
        if held:  # the consumer polls on meanwhile: the group may rebalance, others go on
            self.pause.release(self.tx.catch_up(RECOVERY_SLICE_S))
        self.pause.resume_if_due(self._assigned_partitions())
        txn = self.tx.open
        if txn is None:
            self.tx.between()
        wait = 0.0 if held else IDLE_POLL_SECONDS if txn is None else min(
            max(txn.deadline - self.clock(), 0.0), IDLE_POLL_SECONDS)
        if self.timers is not None and self.pause.until is None:  # none fire during a pause
            wait = min(wait, self.timers.seconds_until_due(self.gate.horizon))
        room = min(self.consume_batch, self.tx.room())
        # what is there already, else the first record to come: consume(room, wait) would hold
        # the records that came back until `room` of them are there or `wait` is over
        messages = self.consumer.consume(room, 0) or self.consumer.consume(1, wait)
        self._raise_callback_error()
        self.reachability.errors.check()
        self.reachability.errors.check_member()
        if self.restart_fetch and self._restart_fetch():
            return  # this batch comes again, from the committed offsets
        if messages:
            self.reachability.answered()
        elif self.reachability.probe_due(PROBE_SECONDS):
            self._probe()
        records = messages
        if any(map(Message.error, messages)):  # rare: keep the loop below free of checks
            for msg in messages:
                if msg.error() and msg.error().code() != KafkaError._PARTITION_EOF:  # ends: for the gate
                    self._consumer_error(msg.error())
            records = [msg for msg in messages if not msg.error()]
        if self.executor:  # one deadline for the whole batch: it bounds the transaction too
            deadline = self.clock() + self.pipeline.record_deadline_s
            outcomes = self.executor.map(partial(self._process, deadline=deadline), records)
            fill = partial(self._fill_outcomes, outcomes)
        elif self.tx.refusals.culprits or self.tx.marks.hangs:  # records to dead-letter may be there
            fill = partial(self._fill_outcomes, map(self._process, records))
        else:  # the hot path, one record at a time, so commits fall between records
            fill = self._fill
        uncommitted = 0  # records[uncommitted:] are in no committed transaction
        try:
            while uncommitted < len(records):
                uncommitted = fill(records, uncommitted)
            if self.gate is not None:  # after the records: those before a timer's due time come first
                self.gate.consumed(messages)
                if self.pause.until is None and self.timers.seconds_until_due(self.gate.horizon) == 0.0:
                    self._fire_timers()
            # serve delivery reports as they come: librdkafka frees a sent record only then, and
            # left to the commit, tens of thousands pile up (measured: ~15% more CPU per record)
            self.txp.serve()
            if self.tx.due():
                self.tx.commit()
        except RetryLaterError as exc:
            log.warning("aborting the transaction to retry its records later: %s", exc)
            self._abort(records[uncommitted:])
            self.pause.start(max(self.pause.seconds_until_probe(), self.retry_backoff),
                             self._assigned_partitions())
        except AbortTransaction as exc:
            self._abort(records[uncommitted:], exc)

    # -- per record ------------------------------------------------------------------------
    def _fill(self, records: list[Message], start: int) -> int:
        """Process and produce records[start:] until the batch ends or the transaction is
        due, then commit if due; returns the index of the first record left."""
        txn = self.tx.open or self.tx.begin()
        fill, deadline, route = self.pipeline.fill, txn.deadline, self.tx.route
        produce = self.tx.checked_produce if self.tx.limits.tight(self.tx.output_topic) else self.txp.producer.produce
        i = start
        while i < len(records):
            i, outcome = fill(records, i, produce, deadline)
            if outcome is None:  # the batch ended or the transaction is due
                break
            route(records[i], outcome)
            i += 1
            if self.clock() >= deadline:
                break
        return self._added(records, start, i)

    def _fire_timers(self) -> None:
        """Fire due timers into the open transaction, until the batch or the transaction ends;
        after Kafka refused an output of a transaction with timers, one per transaction of
        its own (transaction.py finds the one at fault)."""
        alone = self.tx.timers_alone > 0
        if alone and self.tx.open is not None:
            self.tx.commit()
        txn = self.tx.open or self.tx.begin()
        for timer in self.timers.due(1 if alone else TIMER_BATCH, self.gate.horizon):
            self.tx.fire(timer, self.pipeline.fire(timer), self.timers.remove)
            if self.clock() >= txn.deadline:
                break
        if alone:
            self.tx.commit()
            self.tx.timers_alone -= 1

    def _process(self, msg: Message, deadline: float | None = None) -> Outcome:
        """One record's outcome apart from the hot path; one that hung too often is poison."""
        return self.tx.marks.failure(msg) or self.pipeline.process(msg, deadline)

    def _fill_outcomes(self, outcomes: Iterator[Outcome], records: list[Message], start: int) -> int:
        """As `_fill`, for outcomes processed apart (`outcomes` yields records[start:]'s)."""
        txn = self.tx.open or self.tx.begin()
        i = start
        for outcome in outcomes:
            self.tx.route(records[i], outcome)
            i += 1
            if self.clock() >= txn.deadline:
                break
        return self._added(records, start, i)

    def _added(self, records: list[Message], start: int, end: int) -> int:
        self.tx.add(records, start, end)
        if self.tx.due():
            self.tx.commit()
        return end

    # -- consumer events -------------------------------------------------------------------
    def _consumer_error(self, error: KafkaError) -> None:
        if is_member_fenced(error):
            raise MemberFenced(f"{FENCED_BY}: {error.str()}")
        if is_fenced(error):
            raise FatalError(f"{FENCED_BY}: {error.str()}")
        if lacks_consumer_protocol(error):
            raise FatalError(NO_CONSUMER_PROTOCOL)
        if is_fatal(error):
            raise FatalError(f"consumer failed fatally: {error.str()}")
        if error.code() in UNREACHABLE:
            self.reachability.failed(f"consumer: {error.str()}")
        if lost_offset_fetch(error):
            self.restart_fetch = True
        log.warning("consumer: %s", error.str())

    def _restart_fetch(self) -> bool:
        """After librdkafka issue 5586: commit what is open, then fetch every partition again
        from its committed offset; False while the coordinator does not tell them (asked
        again next turn)."""
        if self.tx.open is not None:
            try:
                self.tx.commit()
            except AbortTransaction as exc:  # rewound: consistent even if the fetch waits
                self._abort([], exc)
        partitions = [TopicPartition(t, p) for t, p in sorted(self.tx.assigned)]
        try:
            starts = committed_starts(self.consumer, partitions, self.tx.auto_offset_reset)
        except KafkaException as exc:
            log.warning("could not read the committed offsets yet: %s", kafka_error(exc).str())
            return False
        self.pause.restart(starts, self.tx.held())
        self._forget(starts)  # fetched again
        self.restart_fetch = False
        log.warning("fetching %s again from their committed offsets (librdkafka issue 5586)",
                    _names(starts))
        return True

    def _rejoin(self, fenced: MemberFenced) -> None:
        """A new consumer in place of a static member the broker fenced. A newer instance
        with this instance_id fenced the producer before it joined the group (transactions
        are initialised first), so the next commit ends this run then; a broker that fenced
        the member after its session timed out while the broker restarted gets it back.
        Fenced more than REJOINS times in REJOIN_WINDOW_S: the run ends."""
        now = self.clock()
        self.rejoined = [t for t in self.rejoined if now - t < REJOIN_WINDOW_S]
        if self.new_consumer is None or len(self.rejoined) >= REJOINS:
            raise FatalError(str(fenced))
        self.rejoined.append(now)
        log.warning("%s; joining the group again with a new consumer", fenced)
        self._on_lost(self.consumer, [TopicPartition(t, p) for t, p in sorted(self.tx.assigned)])
        self._raise_callback_error()
        self.tx.abort()  # whatever was open, its partitions are gone
        _bounded(self._close_fenced, STOP_SECONDS)
        self.reachability.errors.member_fenced = None  # what the fenced one said while closing
        self.consumer = self.pause.consumer = self.new_consumer()
        self.tx.use_consumer(self.consumer)
        self.consumer.subscribe(self.topics, on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _close_fenced(self) -> None:
        try:
            self.consumer.close()
        except KafkaException as exc:  # a fenced consumer's close may say so again
            log.debug("closing the fenced consumer: %s", kafka_error(exc).str())

    def _probe(self) -> None:
        """While Kafka seems away and no records flow, ask for metadata to learn it is back."""
        try:
            self.consumer.list_topics(self.topics[0], timeout=PROBE_SECONDS)
        except KafkaException as exc:
            self.reachability.failed(f"metadata request: {kafka_error(exc).str()}")
        else:
            self.reachability.answered()

    def _assigned_partitions(self) -> list[TopicPartition]:
        """Those ready for records (none held back)."""
        return [TopicPartition(t, p) for t, p in sorted(self.tx.assigned - self.tx.held())]

    def _abort(self, unadded: list[Message], reason: BaseException | None = None) -> None:
        """Abort the open transaction; the partitions rewound are fetched again."""
        self._forget(self.tx.abort(unadded, reason))

    def _cached_end(self, key: tuple[str, int]) -> int:
        """The end offset of a partition the consumer learnt from its last fetch (-1: none)."""
        try:
            return self.consumer.get_watermark_offsets(TopicPartition(*key), cached=True)[1]
        except KafkaException:
            return -1

    def _forget(self, partitions) -> None:
        if self.gate is not None:
            self.gate.forget(partitions)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self.tx.on_assign(partitions)
        self.pause.reapply(partitions, self.tx.held())
        self.metrics.rebalances.labels("assigned").inc()
        self.ready.set()
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoked").inc()
        log.info("revoked %s", _names(partitions))
        self._forget(partitions)
        self._guard(self.tx.on_revoke, partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("lost").inc()
        log.warning("lost %s: aborting the open transaction", _names(partitions))
        self._forget(partitions)
        self._guard(partial(self.tx.on_revoke, lost=True), partitions)

    def _guard(self, action: Callable[[list[TopicPartition]], None],
               partitions: list[TopicPartition]) -> None:
        """Run `action` inside a rebalance callback; its error is raised after consume returns."""
        try:
            action(partitions)
        except BaseException as exc:  # noqa: BLE001 - re-raised by _raise_callback_error
            self._callback_error = exc

    def _raise_callback_error(self) -> None:
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error


def _bounded(action: Callable[[], None], seconds: float) -> bool:
    """Run `action` but wait at most `seconds` for it (closing must not hang the exit);
    whether it finished."""
    thread = threading.Thread(target=action, name=action.__name__, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive()


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
