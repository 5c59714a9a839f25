"""Stopping consumption while a dependency recovers, instead of failing record after record.

Paused partitions are not fetched, but `consume()` goes on, so the group membership holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger("processor.pausing")


class Pause:
    def __init__(self, consumer: Consumer, seconds_until_probe: Callable[[], float],
                 clock: Callable[[], float] = time.monotonic, incremental: bool = False):
        self.consumer = consumer
        self.incremental = incremental  # the group assigns by increments (KIP-848, cooperative)
        self.seconds_until_probe = seconds_until_probe  # until a circuit breaker lets a call by
        self.clock = clock
        self.until: float | None = None

    def start(self, seconds: float, partitions: list[TopicPartition]) -> None:
        self.consumer.pause(partitions)
        self.until = self.clock() + seconds
        log.warning("consumption paused for %.1fs", seconds)

    def resume_if_due(self, partitions: list[TopicPartition]) -> None:
        if self.until is None or self.clock() < self.until:
            return
        still_open = self.seconds_until_probe()
        if still_open > 0:
            self.until = self.clock() + still_open
            return
        self.consumer.resume(partitions)
        self.until = None
        log.info("consumption resumed")

    def reapply(self, partitions: list[TopicPartition], held: set[tuple[str, int]]) -> None:
        """Called on assignment: a pause covers partitions new to this consumer too (they
        come unpaused; those it had paused stay so), and `held` ones (not ready for their
        records yet) come paused until `release`."""
        paused = self._paused(partitions, held)
        if paused:
            self._assign(partitions)
            self.consumer.pause(paused)

    def restart(self, partitions: list[TopicPartition], held: set[tuple[str, int]]) -> None:
        """Assign `partitions` (all of this consumer's) again, from the offsets they carry
        (offsetfetch.py); those paused stay so."""
        if self.incremental:
            self.consumer.incremental_unassign(partitions)
        self._assign(partitions)
        paused = self._paused(partitions, held)
        if paused:
            self.consumer.pause(paused)

    def _paused(self, partitions: list[TopicPartition], held: set[tuple[str, int]]) -> list[TopicPartition]:
        """Those of `partitions` that must not be fetched: all during a pause, else `held` ones."""
        return partitions if self.until is not None else [
            tp for tp in partitions if (tp.topic, tp.partition) in held]

    def _assign(self, partitions: list[TopicPartition]) -> None:
        if self.incremental:
            self.consumer.incremental_assign(partitions)
        else:
            self.consumer.assign(partitions)

    def release(self, partitions: list[TopicPartition]) -> None:
        """Held partitions are ready: consume them, unless a pause holds every partition."""
        if self.until is None:
            self.consumer.resume(partitions)
