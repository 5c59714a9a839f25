"""The transactional producer's calls, bounded in time and classified as librdkafka says.

librdkafka can block in `send_offsets_to_transaction` forever, past its timeout, when the
group coordinator's broker restarts (librdkafka issues 5456 and 5511). So every call runs in
a daemon thread while the caller waits and asks for metadata. If Kafka answers those but the
call stays stuck, the producer is replaced by a new one with the same `transactional.id`:
its `init_transactions` fences the stuck one and aborts its transaction, and the caller
processes the transaction's records again. If Kafka does not answer for the unreachable
bound, `FatalError` ends the process rather than hang silently.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import ClusterMetadata

from processor.kafka import FENCED_BY, ClientErrors, FatalError, MemberFenced, is_fenced, kafka_error

log = logging.getLogger("processor.txproducer")
NUDGE_SECONDS = 2.0
STUCK_SECONDS = 15.0
# offset commit errors of a member whose group moved on (KIP-848 epochs, classic generations):
# the transaction cannot commit, but the next one will, once the consumer has caught up
_GROUP_MOVED_ON = {KafkaError.ILLEGAL_GENERATION, KafkaError.STALE_MEMBER_EPOCH,
                   KafkaError.FENCED_MEMBER_EPOCH, KafkaError.UNKNOWN_MEMBER_ID,
                   KafkaError.REBALANCE_IN_PROGRESS}


class AbortTransaction(Exception):
    """The open transaction cannot commit: abort it and process its records again."""


class Reachability:
    """Since when Kafka has not answered; past the bound, processing gives up (exit 1).

    An idle consumer hears nothing either way, so when nothing came for a while a probe is
    due (a metadata request): silence alone never counts as reachable for long."""

    def __init__(self, bound_s: float, errors: ClientErrors,
                 clock: Callable[[], float] = time.monotonic):
        self.bound, self.errors, self.clock = bound_s, errors, clock
        self.since: float | None = None
        self.stop_by: float | None = None  # once stopping: give up waiting on Kafka then
        self.last_probe = self.last_answer = clock()

    def answered(self) -> None:
        self.last_answer = self.clock()
        if self.since is not None:
            log.info("Kafka answers again after %.1fs", self.clock() - self.since)
            self.since = None

    def stopping(self, within_s: float) -> None:
        """A stop was asked for: waiting on Kafka ends `within_s` from now, reachable or not."""
        self.stop_by = self.clock() + within_s

    def failed(self, what: str) -> None:
        self.errors.check()
        now = self.clock()
        if self.stop_by is not None and now > self.stop_by:
            raise FatalError(f"gave up stopping cleanly: Kafka did not answer in time ({what}); "
                             f"the open transaction is left for the broker to abort")
        if self.since is None:
            self.since = now
        elif now - self.since > self.bound:
            raise FatalError(f"Kafka unreachable for {now - self.since:.0f}s "
                             f"(bound {self.bound:.0f}s); last error: {what}")

    def probe_due(self, every_s: float) -> bool:
        now = self.clock()
        quiet = self.since is not None or now - self.last_answer >= every_s
        if not quiet or now - self.last_probe < every_s:
            return False
        self.last_probe = now
        return True


class _Call(threading.Thread):
    def __init__(self, fn: Callable, args: tuple):
        super().__init__(name=f"kafka-{fn.__name__}", daemon=True)
        self.fn, self.args = fn, args
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
            self.error = exc


class TransactionalProducer:
    """`new_producer(settings)` builds a producer with these extra settings. Records Kafka
    failed to deliver are kept (`delivery_errors`) to tell why a transaction cannot commit;
    `watch` sees the cluster metadata fetched while a call is slow."""

    def __init__(self, new_producer: Callable[[dict], Producer], call_timeout_s: float,
                 reachability: Reachability):
        self.new_producer = new_producer
        self.delivery_errors: list[tuple[KafkaError, str]] = []  # (error, topic)
        self.timeout = call_timeout_s
        self.reachability = reachability
        self.stuck: list[Producer] = []  # replaced producers: destroying one would block too
        self.producer = self._new()
        self.in_transaction = False
        self.watch: Callable[[ClusterMetadata], None] = lambda metadata: None

    def _new(self) -> Producer:
        """Reports only for records that failed: nothing per delivered record on the hot path.
        Client errors of a producer replaced since are not ours: the replacement fenced it."""
        generation = len(self.stuck)

        def on_error(error: KafkaError) -> None:
            if generation == len(self.stuck):
                self.reachability.errors(error)
            else:
                log.debug("a replaced producer: %s", error.str())

        return self.new_producer({"on_delivery": self._delivered, "delivery.report.only.error": True,
                                  "error_cb": on_error})

    def _delivered(self, error: KafkaError | None, msg: Message) -> None:
        if error is not None:
            self.delivery_errors.append((error, msg.topic()))

    def init(self) -> None:
        self._call(self.producer.init_transactions, self.timeout)

    def begin(self) -> None:
        self.delivery_errors.clear()
        self._call(self.producer.begin_transaction)
        self.in_transaction = True

    def commit(self, offsets=None, group_metadata=None) -> None:
        """Commit, with the consumer's offsets when given (the outbox relay has none)."""
        # two calls, each bound to this producer: a call left stuck behind a replaced producer
        # must never reach the new one (it would commit the new one's open transaction)
        if offsets is not None:
            self._call(self.producer.send_offsets_to_transaction, offsets, group_metadata, self.timeout)
        self._call(self.producer.commit_transaction, self.timeout)
        self.in_transaction = False

    def abort(self) -> None:
        if self.in_transaction:
            self._call(self.producer.abort_transaction, self.timeout, abortable=False)
            self.in_transaction = False

    def serve(self) -> None:
        """Serve delivery reports and logs. librdkafka raises its fatal error here too: fenced
        ends the run, another fatal error replaces the producer and aborts the transaction."""
        try:
            self.producer.poll(0)
        except KafkaException as exc:
            error = kafka_error(exc)
            if is_fenced(error):
                raise FatalError(f"{FENCED_BY}: {error.str()}") from exc
            if not error.fatal():
                raise
            self._replace(f"the producer failed fatally ({error.str()})")
            raise AbortTransaction(f"{error.str()}; the producer was replaced") from exc

    def _call(self, fn: Callable, *args, abortable: bool = True) -> Any:
        name = fn.__name__
        while True:
            call = _Call(fn, args)
            call.start()
            call.join(NUDGE_SECONDS)
            stuck_at = self.reachability.clock() + STUCK_SECONDS
            while call.is_alive():
                if self._nudge() and self.reachability.clock() > stuck_at:
                    self._replace(f"{name} is stuck although Kafka answers (librdkafka issue 5511)")
                    if not abortable:
                        return None  # the replacement's init_transactions aborted the transaction
                    raise AbortTransaction(f"{name} was stuck; the producer was replaced")
                self.reachability.failed(f"{name} has not returned")
                call.join(NUDGE_SECONDS)
            if call.error is None:
                self.reachability.answered()
                return call.result
            if not isinstance(call.error, KafkaException):
                raise call.error
            error = kafka_error(call.error)
            if error.code() == KafkaError.FENCED_INSTANCE_ID:  # the consumer's member, not this producer
                raise MemberFenced(f"{name}: {FENCED_BY}: {error.str()}") from call.error
            if is_fenced(error):
                raise FatalError(f"{name}: {FENCED_BY}: {error.str()}") from call.error
            if error.fatal() and name == "init_transactions":
                raise FatalError(f"{name} failed fatally: {error.str()}") from call.error
            if error.fatal():  # this producer is done for, but no newer instance took over
                self._replace(f"{name} failed fatally ({error.str()})")
                if not abortable:
                    return None  # the replacement's init_transactions aborted the transaction
                raise AbortTransaction(f"{name}: {error.str()}; the producer was replaced")
            if error.retriable():
                self.reachability.failed(f"{name}: {error.str()}")
                log.warning("%s: %s; retrying", name, error.str())
                continue
            if (error.txn_requires_abort() or error.code() in _GROUP_MOVED_ON) and abortable:
                raise AbortTransaction(f"{name}: {error.str()}") from call.error
            raise FatalError(f"{name} failed: {error.str()}") from call.error

    def _nudge(self) -> bool:
        """A metadata request (it refreshes librdkafka's view of the brokers); True if answered."""
        try:
            self.producer.poll(0)  # delivery reports and logs meanwhile
        except KafkaException:
            pass  # the call in progress reports the producer's failure
        try:
            metadata = self.producer.list_topics(timeout=NUDGE_SECONDS)
        except KafkaException:
            return False
        self.reachability.answered()
        self.watch(metadata)
        return True

    def _replace(self, why: str) -> None:
        log.warning("%s: replacing the producer", why)
        self.stuck.append(self.producer)
        self.producer = self._new()
        self.in_transaction = False
        self.init()  # fences the stuck producer and aborts its transaction
