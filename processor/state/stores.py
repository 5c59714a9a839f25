"""Every store partition this instance holds, and their part in each transaction.

Told of the transaction's boundaries and of rebalances (a `Hooks` of hooks.py):
before a commit, each store partition's changes (the last write of each key) go to its
changelog partition in the transaction; after it, they are written to the local database;
an abort drops them. Assigned partitions are held back (`held`) while their stores recover
from their changelogs, a slice at a time in the processing loop (`catch_up`); revoked ones
are checkpointed and closed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from threading import Event

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from processor.hooks import Hooks
from processor.kafka import FatalError, kafka_error
from processor.state.backend import Backend, RocksBackend, corrupt_mark
from processor.state.changelog import changelog_topic, prepare_changelogs
from processor.state.recovery import Recovery
from processor.state.store import StorePartition
from processor.state.timers import TIMERS_STORE, Timers

log = logging.getLogger("processor.state")
CHECKPOINT_S = 10.0
CHECKPOINT_TIMEOUT_S = 5.0
EXPIRE_PER_COMMIT = 1000  # entries past their TTL deleted per store partition and commit


class UnknownStore(FatalError):
    """`record.state(name)` names no store of the config: a typo, not a poison record."""


def unwritable(directory: Path) -> str | None:
    """Why the stores cannot live in `directory` (created if missing), or None."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return f"cannot write to {directory}: {exc.strerror or exc}"
    return None


class Stores(Hooks):
    """`produce(topic, partition, key, value)` (set by the wiring: the transaction's) sends a
    changelog record; `new_restorer()` builds the consumer that reads changelogs
    (read_committed, with partition EOF events), at `prepare`."""

    def __init__(self, app_id: str, directory: Path, ttls: dict[str, int | None],
                 new_restorer: Callable[[], Consumer], metrics,
                 open_backend: Callable[[Path], Backend] = RocksBackend,
                 clock: Callable[[], float] = time.monotonic):
        self.directory, self.ttls = directory, ttls
        self.topics = {name: changelog_topic(app_id, name) for name in ttls}
        self.retention_ms: dict[str, int] = {}  # per changelog topic, learnt at start
        self.produce: Callable[[str, int, bytes, bytes | None], None] = _unset
        self.new_restorer, self.metrics = new_restorer, metrics
        self.restorer: Consumer | None = None
        self.recovery: Recovery | None = None
        self.open_backend, self.clock = open_backend, clock
        self.open: dict[tuple[str, int], StorePartition] = {}
        self.inputs: set[tuple[str, int]] = set()  # the input (topic, partition)s assigned
        self.restoring: dict[int, set[StorePartition]] = {}  # by partition: stores recovering
        self.written: list[StorePartition] = []  # by the record in progress
        self.unsaved: set[StorePartition] = set()  # changed since their last checkpoint
        self.last_checkpoint = clock()
        self.timers = Timers(app_id, self) if TIMERS_STORE in ttls else None

    def prepare(self, admin: AdminClient, input_topics: list[str], replication_factor: int,
                stopping: Event) -> None:
        """Check the directory; create or check the changelog topics (FatalError when they do
        not fit; Stopped by a stop while Kafka is away)."""
        problem = unwritable(self.directory)
        if problem:
            raise FatalError(f"state.dir: {problem}")
        self.restorer = self.new_restorer()
        self.recovery = Recovery(self.restorer, self.clock)
        self.retention_ms = prepare_changelogs(admin, input_topics, sorted(self.topics.values()),
                                               replication_factor, stopping)

    # -- records ---------------------------------------------------------------------------
    def partition(self, name: str, partition: int) -> StorePartition:
        store = self.open.get((name, partition))
        if store is None:
            if name == TIMERS_STORE and name not in self.ttls:
                raise UnknownStore("timers need `timers: true` in the config's state section")
            if name not in self.ttls:
                declared = sorted(set(self.ttls) - {TIMERS_STORE})
                raise UnknownStore(f"record.state({name!r}): the config declares no such store "
                                   f"(state.stores: {', '.join(declared) or 'none'})")
            raise FatalError(f"store {name!r} partition {partition} is not open here")
        return store

    def _record_wrote(self, store: StorePartition) -> None:
        self.written.append(store)

    def record_ended(self, kept: bool) -> None:
        for store in self.written:
            store.keep_record() if kept else store.discard_record()
        self.written.clear()

    # -- transaction boundaries ------------------------------------------------------------
    def before_commit(self, offsets: list[TopicPartition]) -> None:
        for store in self.open.values():
            if store.ttl:
                store.expire(EXPIRE_PER_COMMIT)
            topic = self.topics[store.name]
            for key, data in store.txn.items():
                self.produce(topic, store.partition, key, data)

    def after_commit(self, offsets: list[TopicPartition]) -> None:
        for store in self.open.values():
            if store.txn:
                store.apply(store.txn)
                store.txn = {}
                self.unsaved.add(store)
        if self.unsaved and self.clock() - self.last_checkpoint >= CHECKPOINT_S:
            self._checkpoint(list(self.unsaved))

    def aborted(self) -> None:
        for store in self.open.values():
            store.discard_txn()
        self.written.clear()
        self._forget_timers()

    def _forget_timers(self) -> None:
        if self.timers is not None:
            self.timers.forget()

    def _checkpoint(self, stores: list[StorePartition]) -> None:
        """Right after a commit, nothing of ours is open in the changelog: its end offset is
        where each store holds every change below."""
        for store in stores:
            tp = TopicPartition(self.topics[store.name], store.partition)
            try:
                end = self.restorer.get_watermark_offsets(tp, timeout=CHECKPOINT_TIMEOUT_S)[1]
            except KafkaException as exc:  # a later checkpoint will do; a restart reads a bit more
                log.warning("no checkpoint for %r this time: %s", store, kafka_error(exc).str())
                continue
            store.save_checkpoint(end)
            self.unsaved.discard(store)
        self.last_checkpoint = self.clock()

    # -- rebalances ------------------------------------------------------------------------
    def assigned_partitions(self) -> set[int]:
        return {partition for _, partition in self.inputs}

    @property
    def recovering(self) -> bool:
        return bool(self.restoring)

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Open the stores of partitions new here; they recover in `catch_up`."""
        self._forget_timers()
        before = self.assigned_partitions()
        self.inputs |= {(tp.topic, tp.partition) for tp in partitions}
        for partition in sorted(self.assigned_partitions() - before):
            self.restoring[partition] = {self._open(name, partition) for name in sorted(self.ttls)}

    def held(self) -> set[tuple[str, int]]:
        return {(topic, partition) for topic, partition in self.inputs if partition in self.restoring}

    def catch_up(self, seconds: float) -> list[tuple[str, int]]:
        """Recover for about `seconds`; returns the input partitions whose stores are all
        up to date now."""
        ready = []
        for job in self.recovery.step(seconds):
            store = job.store
            self.metrics.state_restored.labels(store.name).inc(job.restored)
            self.open[(store.name, store.partition)] = store
            waiting = self.restoring[store.partition]
            waiting.discard(store)
            if not waiting:
                del self.restoring[store.partition]
                ready += [(topic, partition) for topic, partition in self.inputs
                          if partition == store.partition]
        return ready

    def _open(self, name: str, partition: int) -> StorePartition:
        path = self.directory / name / str(partition)
        if corrupt_mark(path).exists():  # found corrupt by the last run
            log.warning("store %r partition %d was found corrupt: rebuilding it from its changelog", name, partition)
            shutil.rmtree(path, ignore_errors=True)
            corrupt_mark(path).unlink()
        try:
            backend = self.open_backend(path)
        except Exception as exc:  # noqa: BLE001 - a corrupt store is rebuilt, never trusted
            if f"{path}/LOCK" in str(exc):  # RocksDB's lock file named: not "block checksum mismatch"
                raise FatalError(f"store {name!r} partition {partition} at {path} is in use by "
                                 f"another process: two instances with the same instance_id on one state.dir? "
                                 f"give each instance its own instance_id") from exc
            log.warning("store %r partition %d cannot be opened (%s): rebuilding it", name, partition, exc)
            shutil.rmtree(path, ignore_errors=True)
            backend = self.open_backend(path)
        store = StorePartition(name, partition, backend, self.ttls[name], self._record_wrote)
        topic = self.topics[name]
        self.recovery.add(store, topic, self.retention_ms[topic],
                          self.metrics.state_recovery_remaining.labels(name, str(partition)).set)
        return store

    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None:
        self._forget_timers()
        before = self.assigned_partitions()
        self.inputs -= {(tp.topic, tp.partition) for tp in partitions}
        gone = before - self.assigned_partitions()
        self._close([store for (_, partition), store in self.open.items() if partition in gone],
                    checkpoint=not lost)
        self._drop_recovering(gone)

    def close(self, checkpoint: bool) -> None:
        """At exit: checkpoint only after a clean stop (after a fatal error, another
        instance may be writing to the changelogs already)."""
        self._close(list(self.open.values()), checkpoint)
        self._drop_recovering(set(self.restoring))

    def _drop_recovering(self, partitions: set[int]) -> None:
        """Recoveries of partitions that went end; each store keeps what it applied."""
        for partition in partitions & set(self.restoring):
            stores = self.restoring.pop(partition)
            self.recovery.drop(list(stores))
            for store in stores:
                store.backend.close()

    def _close(self, stores: list[StorePartition], checkpoint: bool) -> None:
        """Checkpoint (the open transaction was settled before) and close. Not for lost
        partitions: their changelog may hold a new owner's changes already."""
        if checkpoint:
            self._checkpoint([store for store in stores if store in self.unsaved])
        for store in stores:
            store.backend.close()
            self.unsaved.discard(store)
            del self.open[(store.name, store.partition)]


def _unset(topic: str, partition: int, key: bytes, value: bytes | None) -> None:
    raise RuntimeError("Stores.produce was not set")
