"""The transaction lifecycle: begin, fill with outputs and dead letters, commit, or abort and
rewind; and what must happen at those boundaries and at rebalances.

The loop (engine.py) consumes and hands records over; this object owns the open
transaction. `Hooks` are told of every boundary (state stores attach there). Records Kafka
refuses are tracked down and dead-lettered (refusals.py), and so are records that hung the
processor again and again (hangmarks.py); a run of aborts without a commit
is logged once and reported to /healthz (streak.py). An output or dead-letter topic that
disappears while running ends the run, as it would at start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import ClusterMetadata

from processor.contents import TxnContents
from processor.deadletter import DROPPED, Failure, dead_letter
from processor.hangmarks import HangMarks
from processor.hooks import Hooks
from processor.kafka import FatalError, kafka_error
from processor.metrics import Metrics
from processor.pipeline import Encoded, Outcome, Outputs, RetryLater
from processor.refusals import REFUSED, REFUSED_AT_ONCE, Refusals
from processor.state.timers import TimerMessage
from processor.streak import AbortStreak
from processor.topiclimits import TopicLimits
from processor.topics import MissingTopic, Topics
from processor.transform import Timer
from processor.txproducer import AbortTransaction, TransactionalProducer

log = logging.getLogger("processor.transactions")
_NO_TOPIC = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}


class RetryLaterError(AbortTransaction):
    """A record failed transiently: abort, rewind, and pause before trying again."""


class Transactions:
    def __init__(self, consumer: Consumer, producer: TransactionalProducer, *, input_topics: list[str],
                 output_topic: str, dead_letter_topic: str, app_id: str, commit_interval_s: float,
                 max_batch_records: int, stacktrace_max_bytes: int, metrics: Metrics,
                 auto_offset_reset: str = "earliest", hooks: Iterable[Hooks] = (),
                 limits: TopicLimits | None = None, changelogs: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.consumer, self.txp = consumer, producer
        self.single_topic = input_topics[0] if len(input_topics) == 1 else None
        self.output_topic, self.dead_letter_topic = output_topic, dead_letter_topic
        # topics every run writes to, and what to do when one is deleted: without them every
        # record would be dead-lettered, or none could be, or a commit would wait for ever
        self.required = {topic: "create it again (the processor does not)" for topic in (output_topic, dead_letter_topic)}
        self.required |= {topic: f"it was store {name!r}'s changelog: the next start creates it again, empty "
                                 f"(the store's state is gone with it)" for name, topic in (changelogs or {}).items()}
        self.app_id, self.stacktrace_max_bytes = app_id, stacktrace_max_bytes
        self.commit_interval, self.max_batch = commit_interval_s, max_batch_records
        self.metrics, self.clock = metrics, clock
        self.limits = limits or TopicLimits(None)  # records over a topic's limit: refused before sending
        self.hooks = list(hooks)
        self.open: TxnContents | None = None
        self.topics = Topics(consumer)
        self.refusals = Refusals()
        self.auto_offset_reset = auto_offset_reset
        self.marks = HangMarks(consumer, auto_offset_reset)
        self.streak = AbortStreak(clock=clock)
        self.assigned: set[tuple[str, int]] = set()
        # Kafka refused a record of a transaction that fired timers: its inputs are not to
        # blame (refusals.py); the timers fire one per transaction, this many more times, and
        # one refused alone is a culprit, dead-lettered when it fires again
        self.timers_alone = 0
        self.timer_culprits: dict[tuple, Failure] = {}
        producer.watch = self._watch

    # -- size ------------------------------------------------------------------------------
    def room(self) -> int:
        """How many more inputs the open (or next) transaction takes."""
        return self.refusals.limit(self.max_batch) - (self.open.inputs if self.open else 0)

    def due(self) -> bool:
        txn = self.open
        return txn is not None and (self.clock() >= txn.deadline
                                    or txn.inputs >= self.refusals.limit(self.max_batch))

    # -- filling ---------------------------------------------------------------------------
    def begin(self) -> TxnContents:
        self.txp.begin()
        self.open = TxnContents(self.clock() + self.commit_interval, self.single_topic)
        for hook in self.hooks:
            hook.begun()
        return self.open

    def add(self, records: list[Message], start: int, end: int) -> None:
        """records[start:end] were processed into the open transaction."""
        self.open.add(records, start, end)

    def route(self, msg: Message, outcome: Outcome) -> None:
        """Put into the open transaction what the hot path left to do for one record."""
        self.open.others += 1
        match outcome:
            case Outputs(records=outputs):
                self._produce_outputs(msg, outputs)
            case RetryLater(error=error):
                raise RetryLaterError(f"{type(error).__name__}: {error}")
            case Failure(stage="produce", error=KafkaException() as exc):  # from the hot path
                self._refused_at_once(msg, exc, self.output_topic)
            case Failure():
                self.dead_letter(msg, outcome)
        for hook in self.hooks:
            hook.record_ended(kept=True)  # after a dead letter, nothing is left to keep

    def fire(self, timer: Timer, outcome: Outcome, remove: Callable[[Timer], None]) -> None:
        """Put a fired timer's outcome into the open transaction. Its removal is among its
        writes; a timer that fails is dead-lettered and removed all the same (it fires once)."""
        identity = timer_identity(timer)
        self.open.timers.append(identity)
        outcome = self.timer_culprits.pop(identity, outcome)
        if isinstance(outcome, Outputs):
            for n, out in enumerate(outcome.records):
                try:
                    self.produce(out)
                except KafkaException as exc:
                    error = kafka_error(exc)
                    self._require_topic_of(out[0], error)
                    if n or error.code() not in REFUSED_AT_ONCE:
                        raise AbortTransaction(f"producing failed: {error.str()}") from exc
                    outcome = Failure("produce", exc)
                    break
                self.open.produced[out[0]] += 1
        elif isinstance(outcome, RetryLater):
            raise RetryLaterError(f"{type(outcome.error).__name__}: {outcome.error}")
        if isinstance(outcome, Failure):
            self.dead_letter(TimerMessage(timer), outcome)  # drops the call's writes
            remove(timer)
        for hook in self.hooks:
            hook.record_ended(kept=True)

    def _produce_outputs(self, msg: Message, outputs: list[Encoded]) -> None:
        where = (msg.topic(), msg.partition(), msg.offset())
        # a record Kafka refused when last processed, or an output to a topic that is not there
        failure = self.refusals.culprits.get(where) or self._missing_topic(outputs)
        if failure is not None:
            self.dead_letter(msg, failure)
            return
        for n, out in enumerate(outputs):
            try:
                self.produce(out)
            except KafkaException as exc:
                if n == 0:
                    self._refused_at_once(msg, exc, out[0])
                    return
                error = kafka_error(exc)
                self._require_topic_of(out[0], error)
                if error.code() not in REFUSED_AT_ONCE:
                    raise AbortTransaction(f"producing failed: {error.str()}") from exc
                # outputs of the record are in the transaction already: process it again in a
                # new one and dead-letter it alone
                self.refusals.refused_at_once(where, error)
                raise AbortTransaction(f"output {n + 1} of {len(outputs)} of record {where[0]} "
                                       f"[{where[1]}] @{where[2]} was refused: {error.str()}") from exc
            self.open.produced[out[0]] += 1

    def _refused_at_once(self, msg: Message, exc: KafkaException, topic: str) -> None:
        """`produce()` raised for the record's first output: dead-letter it if the client
        refused that record, abort if the transaction is what failed (e.g. `_STATE` after
        the broker refused an earlier record)."""
        error = kafka_error(exc)
        self._require_topic_of(topic, error)
        if error.code() not in REFUSED_AT_ONCE:
            raise AbortTransaction(f"producing failed: {error.str()}") from exc
        self.dead_letter(msg, Failure("produce", exc))

    def _missing_topic(self, outputs: list[Encoded]) -> Failure | None:
        """Why these outputs cannot go out, if one names a topic that does not exist."""
        try:
            missing = [topic for topic in {out[0] for out in outputs} if self.topics.missing(topic)]
        except KafkaException as exc:
            raise AbortTransaction(f"could not ask Kafka whether output topics exist: "
                                   f"{kafka_error(exc).str()}") from exc
        if not missing:
            return None
        self._require_topic_of(missing[0], KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        return Failure("produce", MissingTopic(f"output topic {missing[0]!r} does not exist"))

    def checked_produce(self, topic: str, value: bytes | None, key: bytes | None, headers=None) -> None:
        """The hot path's produce for a topic with a limit below the client's own."""
        self.limits.check(topic, value, key, headers)
        self.txp.producer.produce(topic, value, key, headers=headers)

    def produce(self, out: Encoded, **partition) -> None:
        """Produce `out` (to `partition=N` if given), waiting while the queue is full; a
        record over its topic's limit raises KafkaException (MSG_SIZE_TOO_LARGE) at once."""
        topic, value, key, headers = out
        self.limits.check(topic, value, key, headers)
        while True:
            try:
                self.txp.producer.produce(topic, value, key, headers=headers, **partition)
                return
            except BufferError:  # the queue is full: wait for deliveries, within the bound
                self.txp.reachability.failed("the producer queue stays full")
                self.txp.producer.poll(0.05)

    def produce_to(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        """Produce a record of the processor's own (a changelog's) to one partition."""
        try:
            self.produce((topic, value, key, None), partition=partition)
        except KafkaException as exc:
            raise FatalError(f"a record to {topic!r} [{partition}] was refused: "
                             f"{kafka_error(exc).str()}") from exc

    def dead_letter(self, msg: Message, failure: Failure) -> None:
        for hook in self.hooks:
            hook.record_ended(kept=False)
        where = (msg.topic(), msg.partition(), msg.offset())
        log.warning("dead-lettering record at %s [%d] @%d: %s: %s", *where, failure.stage,
                    failure.error, extra={"topic": where[0], "partition": where[1], "offset": where[2]})
        shrink = self.refusals.shrink.get(where, 0)
        while True:
            letter = dead_letter(msg, failure, self.app_id, self.stacktrace_max_bytes, shrink)
            try:
                self.produce((self.dead_letter_topic, letter.value, letter.key, letter.headers))
                break
            except KafkaException as exc:
                error = kafka_error(exc)
                self._require_topic_of(self.dead_letter_topic, error)
                if error.code() not in REFUSED_AT_ONCE:
                    raise AbortTransaction(f"the dead-letter record could not be produced: "
                                           f"{error.str()}") from exc
                if shrink + 1 == len(DROPPED):
                    raise FatalError(f"Kafka refuses even the smallest dead letter of {where[0]} "
                                     f"[{where[1]}] @{where[2]}: {error.str()}") from exc
                shrink += 1
                log.warning("the dead letter of %s [%d] @%d was refused (%s): writing it without %s",
                            *where, error.str(), DROPPED[shrink].replace(",", ", "))
        self.open.dead_lettered[(msg.topic(), failure.stage)] += 1

    # -- boundaries ------------------------------------------------------------------------
    def commit(self) -> None:
        txn = self.open
        began = self.clock()
        offsets = self.marks.carry(txn.next_offsets())
        for hook in self.hooks:
            hook.before_commit(offsets)
        self.txp.commit(offsets, self.consumer.consumer_group_metadata())
        self.open = None
        self.refusals.committed({(tp.topic, tp.partition): tp.offset for tp in offsets})
        self.marks.committed(offsets)
        self.streak.committed()
        for hook in self.hooks:
            hook.after_commit(offsets)
        self.metrics.committed(txn.consumed, txn.produced_by_topic(self.output_topic),
                               txn.dead_lettered, txn.inputs, self.clock() - began)
        for tp in offsets:  # watermarks cached from fetch responses: no request to the broker
            high = self.consumer.get_watermark_offsets(tp, cached=True)[1]
            if high >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - tp.offset, 0))

    def abort(self, unadded: list[Message] | None = None,
              reason: BaseException | None = None) -> set[tuple[str, int]]:
        """Abort the open transaction. With `unadded` (the batch's records handed to the
        pipeline but in no committed transaction), rewind every partition to its first
        record not committed; returns those rewound. A `reason` counts towards the abort
        streak (a pause does not)."""
        txn, self.open = self.open, None
        refused = self._refused_delivery()
        if txn is not None:
            self.txp.abort()
            self.metrics.aborted()
            for hook in self.hooks:
                hook.aborted()
        if reason is not None:
            self.streak.aborted(str(reason))
        if refused is not None and txn is not None:
            error, topic = refused
            if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                self.limits.forget(topic)  # its max.message.bytes changed since it was read
            if txn.timers:
                self._timer_refused(txn, error, topic)
            else:
                suspects, inputs = txn.suspects(unadded or [])
                self.refusals.refused(error, suspects, inputs, topic == self.dead_letter_topic)
        if unadded is None:
            return set()
        rewind = txn.first_offsets() if txn is not None else {}
        for msg in unadded:
            rewind.setdefault((msg.topic(), msg.partition()), msg.offset())
        for (topic, partition), offset in rewind.items():
            if (topic, partition) in self.assigned:
                self.consumer.seek(TopicPartition(topic, partition, offset))
        return set(rewind)

    def _timer_refused(self, txn: TxnContents, error: KafkaError, topic: str) -> None:
        if len(txn.timers) == 1 and txn.inputs == 0 and topic != self.dead_letter_topic:
            self.timer_culprits[txn.timers[0]] = Failure("produce", KafkaException(error))
            log.warning("Kafka refused an output of the timer %s: %s", txn.timers[0], error.str())
        self.timers_alone = max(self.timers_alone, len(txn.timers))

    def commit_or_abort(self) -> None:
        if self.open is None:
            return
        try:
            self.commit()
        except AbortTransaction as exc:
            log.warning("could not commit, aborting: %s", exc)
            self.abort()

    def _refused_delivery(self) -> tuple[KafkaError, str] | None:
        """The first record Kafka refused in this transaction (error, topic), if any."""
        try:
            self.txp.serve()  # the reports of failed records may wait to be served
        except AbortTransaction:
            pass  # the producer was replaced, which aborted its transaction
        errors, self.txp.delivery_errors = self.txp.delivery_errors, []
        for error, topic in errors:
            if error.code() in REFUSED:
                self._require_topic_of(topic, error)
                return error, topic
        return None

    # -- topics that must exist ------------------------------------------------------------
    def require_topics(self) -> None:
        """Refuse to start without the topics every run writes to (unless Kafka does not
        answer yet: the reachability bound decides then)."""
        for topic in (self.output_topic, self.dead_letter_topic):
            try:
                missing = self.topics.missing(topic)
            except KafkaException as exc:
                log.warning("could not ask Kafka whether topic %r exists: %s", topic, kafka_error(exc).str())
                return
            if missing:
                raise FatalError(f"topic {topic!r} does not exist: create it (the processor does not)")

    def _require_topic_of(self, topic: str, error: KafkaError) -> None:
        """After `error` producing to `topic`: if it is the output or dead-letter topic and
        is gone, end the run (every record would be dead-lettered, or none could be)."""
        if error.code() not in _NO_TOPIC:
            return
        try:
            gone = self.topics.missing(topic, fresh=True)
        except KafkaException:
            return  # Kafka does not answer: the reachability bound decides
        if gone and topic in self.required:
            raise FatalError(f"topic {topic!r} does not exist any more: {self.required[topic]}")

    def _watch(self, metadata: ClusterMetadata) -> None:
        """While a commit waits on records to a topic that was deleted, librdkafka holds them
        until they time out: learn it from the metadata instead."""
        produced = set(self.open.produced) if self.open is not None else set()
        for topic in produced | set(self.required):
            if topic not in metadata.topics:
                self._require_topic_of(topic, KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))

    # -- rebalances (called from the consumer's callbacks) ---------------------------------
    # the classic protocol assigns and revokes everything at once, the consumer protocol
    # (KIP-848) by increments: both are unions and differences
    def on_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {(tp.topic, tp.partition) for tp in partitions}
        self.refusals.forget()  # whoever processes them next finds out again
        self.marks.assigned(partitions)
        for hook in self.hooks:
            hook.assigned(partitions)

    def use_consumer(self, consumer: Consumer) -> None:
        """From now on `consumer` (a new one in place of a fenced one) holds the partitions."""
        self.consumer = self.topics.consumer = self.marks.consumer = consumer

    def held(self) -> set[tuple[str, int]]:
        """Assigned partitions whose records must wait (a hook is not ready for them)."""
        return set().union(*(hook.held() for hook in self.hooks)) if self.hooks else set()

    def between(self) -> None:
        """A loop turn without an open transaction: the hooks may look at committed state."""
        for hook in self.hooks:
            hook.between()

    def catch_up(self, seconds: float) -> list[TopicPartition]:
        """Let the hooks work on held partitions; returns those no hook holds any more."""
        ready = {tp for hook in self.hooks for tp in hook.catch_up(seconds)} - self.held()
        return [TopicPartition(topic, partition) for topic, partition in sorted(ready)]

    def on_revoke(self, partitions: list[TopicPartition], lost: bool = False) -> None:
        """Settle the open transaction before the partitions go: commit it, or abort it if
        they were lost (another member may hold them already)."""
        try:
            if lost:
                self.abort()
            else:
                self.commit_or_abort()
        finally:
            self.assigned -= {(tp.topic, tp.partition) for tp in partitions}
            self.marks.revoked(partitions)
            for hook in self.hooks:
                hook.revoked(partitions, lost)


def timer_identity(timer: Timer) -> tuple:
    return timer.partition, timer.name, repr(timer.key), timer.due_ms
