"""Durable timers: a transform schedules an event for a key at a time; when it is due, the
transform is called with a `Timer` (transform.py) in place of a `Record`.

Timers live in an internal store (`__timers`, with its changelog like any store), in the
partition of the call that scheduled them: scheduling commits with that call's transaction,
and timers survive crashes and rebalances, firing on whichever instance holds the partition.
A timer fires in a transaction that also removes it, so its outputs, its state changes and
its removal commit together: it fires once. The clock is processing time (the wall clock);
the timers of a partition no instance holds fire when one takes it over: late, once.

In the store, `t<due ms><id>` holds a timer's payload (ordered by due time: the due ones
are a range scan) and `n<id>` its due time (to replace or cancel it by name and key).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from typing import Any

from processor import jsontext
from processor.state.codec import Key, decode_key, encode_key
from processor.state.store import StorePartition, wall_ms
from processor.transform import INPUT_KEY, Timer

TIMERS_STORE = "__timers"
_DUE, _BY_ID = b"t", b"n"
_TIME = struct.Struct(">q")
_AFTER_EVERY_DUE = _DUE + b"\xff" * _TIME.size
MAX_DUE_MS = 2**63 - 1  # what the index's 8 bytes hold
Horizon = Callable[[int], float]  # partition -> the latest due time that may fire now


def any_time(partition: int) -> float:
    """No horizon: every timer due may fire."""
    return math.inf


def _ident(name: str, key: Key) -> bytes:
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"a timer name is a non-empty str without NUL characters, not {name!r}")
    return name.encode() + b"\x00" + encode_key(key)


class PartitionTimers:
    """The timers of one partition, as a transform sees them through `call.timers`."""

    __slots__ = ("store", "default_key", "scheduled")

    def __init__(self, store: StorePartition, default_key: Any, scheduled: Callable[[int, int], None]):
        self.store, self.default_key = store, default_key
        self.scheduled = scheduled  # told (partition, due ms) of every timer scheduled

    def schedule(self, name: str, *, at_ms: int | None = None, after_ms: int | None = None,
                 key: Any = INPUT_KEY, payload: Any = None) -> int:
        """Fire timer `name` for `key` at `at_ms` (ms since the epoch) or `after_ms` from now,
        replacing the one of that name and key if any; returns its due time (a time in the
        past: now, at the next chance). The payload is
        anything a store value may be (JSON or bytes)."""
        if (at_ms is None) == (after_ms is None):
            raise ValueError("schedule a timer with exactly one of at_ms and after_ms")
        # a due time in the past fires at once, even one before 1970 (the index sorts from 0)
        due = max(0, int(at_ms if at_ms is not None else wall_ms() + after_ms))
        if due >= MAX_DUE_MS:
            raise ValueError(f"a timer's due time is below {MAX_DUE_MS} ms since the epoch, not {due}")
        ident = _ident(name, self._key(key))
        self._remove(ident)
        self.store.set(_BY_ID + ident, due)
        self.store.set(_DUE + _TIME.pack(due) + ident, payload)
        self.scheduled(self.store.partition, due)
        return due

    def cancel(self, name: str, *, key: Any = INPUT_KEY) -> bool:
        """Cancel timer `name` for `key`; whether there was one."""
        return self._remove(_ident(name, self._key(key)))

    def due_ms(self, name: str, *, key: Any = INPUT_KEY) -> int | None:
        """When timer `name` for `key` is due, or None if there is none."""
        return self.store.get(_BY_ID + _ident(name, self._key(key)))

    def _key(self, key: Any) -> Key:
        return self.default_key if key is INPUT_KEY else key

    def _remove(self, ident: bytes, due: int | None = None) -> bool:
        """Remove the timer `ident` (only if it is due at `due`, when given)."""
        scheduled = self.store.get(_BY_ID + ident)
        if scheduled is None or (due is not None and scheduled != due):
            return False
        self.store.delete(_BY_ID + ident)
        self.store.delete(_DUE + _TIME.pack(scheduled) + ident)
        return True


class Timers:
    """The timers of every partition this instance processes: which are due, and when the
    next one is (kept per partition, found again by one range scan when unknown)."""

    def __init__(self, app_id: str, stores, clock_ms: Callable[[], int] = wall_ms):
        self.stores, self.clock_ms = stores, clock_ms  # a processor.state.Stores
        self.next: dict[int, int | None] = {}  # partition -> earliest due ms (None: no timer)
        self.timer_of = Timer.of_app(app_id, stores)

    def of(self, partition: int, default_key: Any) -> PartitionTimers:
        return PartitionTimers(self.stores.partition(TIMERS_STORE, partition), default_key, self._scheduled)

    def _scheduled(self, partition: int, due: int) -> None:
        if partition in self.next:
            earliest = self.next[partition]
            self.next[partition] = due if earliest is None else min(earliest, due)

    def forget(self) -> None:
        """After an abort or a rebalance: what is scheduled where is found again."""
        self.next.clear()

    def _active(self) -> list[int]:
        """Partitions whose records are processed here (assigned, stores recovered)."""
        return sorted(self._active_set())

    def _active_set(self) -> set[int]:
        return self.stores.assigned_partitions() - set(self.stores.restoring)

    def next_due_ms(self) -> int | None:
        """When the earliest timer of an active partition is due (None: no timer)."""
        dues = []
        for partition in self._active():
            if partition not in self.next:
                first = self._scan(partition, _AFTER_EVERY_DUE, 1)
                self.next[partition] = first[0].due_ms if first else None
            if self.next[partition] is not None:
                dues.append(self.next[partition])
        return min(dues, default=None)

    def seconds_until_due(self, horizon: Horizon = any_time) -> float:
        """How long the loop may wait for records before a timer is due (inf: none). A timer
        due but beyond its partition's `horizon` (timergate.py) waits for records, not time."""
        now, wait = self.clock_ms(), math.inf
        self.next_due_ms()  # the earliest of every active partition known
        active = self._active_set()
        for partition, due in self.next.items():
            if due is None or partition not in active:
                continue
            if due > now:
                wait = min(wait, (due - now) / 1000)
            elif due <= horizon(partition):
                return 0.0
        return wait

    def due(self, limit: int, horizon: Horizon = any_time) -> list[Timer]:
        """Up to `limit` timers due now and within their partition's `horizon`, earliest
        first within each partition."""
        now = self.clock_ms()
        timers: list[Timer] = []
        for partition in self._active():
            bound = min(now, horizon(partition))
            if bound < 0:
                continue
            timers += self._scan(partition, _DUE + _TIME.pack(int(bound) + 1), limit - len(timers))
            self.next.pop(partition, None)  # found again after these fired
            if len(timers) >= limit:
                break
        return timers

    def _scan(self, partition: int, stop: bytes, limit: int) -> list[Timer]:
        store = self.stores.partition(TIMERS_STORE, partition)
        timers = []
        for encoded in store.keys_between(_DUE, stop, limit):
            raw = encoded[1:]  # bytes keys are tagged b"b"
            due = _TIME.unpack_from(raw, len(_DUE))[0]
            name, _, key = raw[len(_DUE) + _TIME.size:].partition(b"\x00")
            timers.append(self.timer_of(name.decode(), decode_key(key), store.get(raw), due, partition))
        return timers

    def remove(self, timer: Timer) -> None:
        """Remove a timer that fired (unless the call that fired it scheduled it again)."""
        self.of(timer.partition, timer.key)._remove(_ident(timer.name, timer.key), timer.due_ms)


class TimerMessage:
    """A fired timer in the shape of a consumed message, for its dead letter: the topic is
    `__timers`, the offset -1, the timestamp its due time, the key its key (as text unless
    bytes) and the value its name, key and payload as JSON (bytes as text, replaced if not
    UTF-8)."""

    def __init__(self, timer: Timer):
        self.timer = timer

    def topic(self) -> str:
        return TIMERS_STORE

    def partition(self) -> int:
        return self.timer.partition

    def offset(self) -> int:
        return -1

    def timestamp(self) -> tuple[int, int]:
        return 1, self.timer.due_ms  # TIMESTAMP_CREATE_TIME

    def headers(self) -> None:
        return None

    def key(self) -> bytes:
        key = self.timer.key
        return key if isinstance(key, bytes) else str(key).encode()

    def value(self) -> bytes:
        def text(value: Any) -> Any:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else value

        return jsontext.dumps({"name": self.timer.name, "key": text(self.timer.key),
                               "due_ms": self.timer.due_ms, "payload": text(self.timer.payload)})

