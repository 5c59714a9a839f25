"""Bringing store partitions up to date from their changelogs before their records are processed.

The local database records up to which changelog offset it holds every change (its
checkpoint). Recovery reads the changelog from there to the end (read_committed), so a
crash anywhere (even between a commit and the local write) costs only the changes since the
last checkpoint. The store is wiped and rebuilt from the start of the changelog only when it
cannot be trusted: no checkpoint, a checkpoint outside the changelog, or one older than the
changelog's tombstones live (deletes may have been compacted away).

Recovery runs in the processing loop, a slice at a time, never inside a rebalance callback:
the consumer keeps polling, so the group can rebalance meanwhile (a long recovery does not
stall every member) and the partitions already recovered are processed. One consumer reads
every changelog partition being recovered at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from processor.kafka import FatalError, KafkaAway, ask_until_answered, kafka_error
from processor.state.store import StorePartition, wall_ms

log = logging.getLogger("processor.state")
BATCH = 10_000
TIMEOUT_S = 30.0
STALL_S = 120.0  # no progress towards the end for this long: something holds the changelog
# the changelog reader's settings; fetches of 10 MiB per partition read ~1.8x as fast as the
# default 1 MiB (bench/restore.py); a fetch that finds nothing new returns after 10 ms, not
# librdkafka's 500: the broker answers a connection's requests in turn, so the end offsets
# asked for the next partition to recover would wait behind it (0.5 s per store partition)
CONSUMER_SETTINGS = {"isolation.level": "read_committed", "enable.auto.commit": False,
                     "enable.partition.eof": True, "auto.offset.reset": "earliest",
                     "max.partition.fetch.bytes": 10 * 1024 * 1024, "fetch.wait.max.ms": 10}


def _watermarks(consumer: Consumer, tp: TopicPartition, store: StorePartition) -> tuple[int, int]:
    """The changelog partition's offsets, asked again while Kafka does not answer (a broker
    restarting), for up to `STALL_S`."""
    def ask() -> tuple[int, int]:
        try:
            return consumer.get_watermark_offsets(tp, timeout=TIMEOUT_S)
        except KafkaException as exc:
            raise KafkaAway(kafka_error(exc).str()) from exc

    return ask_until_answered(ask, STALL_S, f"recovering {store!r}: cannot read the end of "
                                            f"{tp.topic} [{tp.partition}]")


def start_offset(store: StorePartition, low: int, high: int, retention_ms: int) -> tuple[int, bool]:
    """Where recovery reads from, and whether the store was wiped (it cannot be trusted)."""
    saved = store.checkpoint()
    if saved is not None:
        offset, when = saved
        if not low <= offset <= high:
            why = f"its checkpoint {offset} is outside the changelog ({low}..{high})"
        elif wall_ms() - when >= retention_ms:
            why = f"its checkpoint is older than the changelog's delete.retention.ms ({retention_ms} ms)"
        else:
            return offset, False
    else:
        why = "it has no checkpoint"
    if saved is not None or store.backend.keys_between(b"", b"\xff", 1):
        log.warning("rebuilding %r from its changelog: %s", store, why)
    store.backend.wipe()
    return low, True


@dataclass(eq=False)
class _Job:
    store: StorePartition
    changelog: TopicPartition
    retention_ms: int
    remaining: Callable[[int], None]  # told how many offsets are left as it goes
    high: int = -1  # the changelog's end when recovery started; -1: not asked yet
    rebuilding: bool = False
    reading: bool = False  # its changelog partition is assigned to the consumer
    restored: int = 0
    began: float = 0.0


class Recovery:
    """The store partitions being recovered. `consumer` reads read_committed with
    `enable.partition.eof`: a partition's end is where it says so."""

    def __init__(self, consumer: Consumer, clock: Callable[[], float] = time.monotonic):
        self.consumer, self.clock = consumer, clock
        self.jobs: dict[tuple[str, int], _Job] = {}  # by changelog (topic, partition)
        self.moved = clock()  # when a recovery last moved on

    def add(self, store: StorePartition, topic: str, retention_ms: int,
            remaining: Callable[[int], None]) -> None:
        """Recover `store` from its changelog `topic`; nothing is asked of Kafka yet."""
        if not self.jobs:
            self.moved = self.clock()
        self.jobs[(topic, store.partition)] = _Job(store, TopicPartition(topic, store.partition),
                                                   retention_ms, remaining)

    def drop(self, stores: list[StorePartition]) -> None:
        """Stop recovering `stores` (their partitions went). What they applied stays: their
        checkpoint is not moved, so a later recovery applies it again, to the same result."""
        for key, job in list(self.jobs.items()):
            if job.store in stores:
                del self.jobs[key]
                if job.reading:
                    self.consumer.incremental_unassign([job.changelog])

    def step(self, seconds: float) -> list[_Job]:
        """Recover for about `seconds`; returns the jobs that reached their changelog's end."""
        starting = [job for job in list(self.jobs.values()) if job.high < 0]
        done = [job for job in starting if self._begin(job)]  # every end asked before any fetch
        reading = [job for job in starting if job not in done]
        if reading:
            self.consumer.incremental_assign([TopicPartition(job.changelog.topic, job.changelog.partition,
                                                             job.changelog.offset) for job in reading])
            for job in reading:
                job.reading = True
        until = self.clock() + seconds
        while len(done) < len(self.jobs):
            done += self._read(max(until - self.clock(), 0.0))
            if self.clock() >= until:
                break
        for job in done:
            self._finish(job)
        return done

    def _begin(self, job: _Job) -> bool:
        """Find where to start; True if the store is up to date already (else the caller
        assigns its changelog partition)."""
        job.began = time.monotonic()
        low, job.high = _watermarks(self.consumer, job.changelog, job.store)
        start, job.rebuilding = start_offset(job.store, low, job.high, job.retention_ms)
        job.changelog.offset = start
        job.remaining(job.high - start)
        return start >= job.high

    def _read(self, seconds: float) -> list[_Job]:
        changes: dict[tuple[str, int], dict] = {}
        counts: dict[tuple[str, int], int] = {}
        ended: list[_Job] = []
        # what is there already, else the first to come (consume(BATCH, wait) would wait for
        # BATCH records or the whole wait)
        for msg in self.consumer.consume(BATCH, 0) or self.consumer.consume(1, min(seconds, 0.5)):
            error = msg.error()
            if error is None:
                key = (msg.topic(), msg.partition())
                batch = changes.get(key)
                if batch is None:
                    batch = changes[key] = {}
                    counts[key] = 0
                batch[msg.key()] = msg.value()
                counts[key] += 1
            elif error.code() == KafkaError._PARTITION_EOF:
                job = self.jobs.get((msg.topic(), msg.partition()))
                if job is not None and job.reading:
                    job.changelog.offset = msg.offset()
                    ended.append(job)
            else:
                log.warning("recovering: %s", error.str())
        for key, batch in changes.items():
            job = self.jobs.get(key)
            if job is not None:  # else: dropped meanwhile
                job.store.apply(batch, job.rebuilding)
                job.restored += counts[key]
        if changes or ended:
            self.moved = self.clock()
            self._report_remaining()
        elif self.clock() - self.moved > STALL_S:
            stuck = ", ".join(f"{job.changelog.topic} [{job.changelog.partition}]" for job in self.jobs.values())
            raise FatalError(f"recovering stores: their changelogs ({stuck}) did not move on "
                             f"in {STALL_S:.0f}s")
        return ended

    def _report_remaining(self) -> None:
        active = [job for job in self.jobs.values() if job.reading]
        if not active:
            return
        for tp in self.consumer.position([job.changelog for job in active]):
            job = self.jobs[(tp.topic, tp.partition)]
            if tp.offset >= 0:
                job.remaining(max(job.high - tp.offset, 0))

    def _finish(self, job: _Job) -> None:
        del self.jobs[(job.changelog.topic, job.changelog.partition)]
        job.remaining(0)
        job.store.save_checkpoint(job.changelog.offset)
        if job.reading:
            self.consumer.incremental_unassign([job.changelog])
            log.info("recovered %r: %d changes in %.1fs", job.store, job.restored,
                     time.monotonic() - job.began)
