"""One partition of one store, as a transform sees it through `record.state(name)`.

Reads see the record's own writes first, then its transaction's, then the local database.
Writes stay with the record until it succeeds (a record that fails leaves none behind), then
with the transaction until it commits: they reach the changelog in the transaction and the
local database only after the commit (stores.py). Entries with a TTL read as absent once
expired; an index by expiry time finds them for deletion without scanning the store.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable
from typing import Any

from processor.state.backend import Backend, Changes
from processor.state.codec import MAX_ENTRY_BYTES, NEVER, Key, decode_value, encode_key, encode_value, expiry
from processor.state.idempotency import Once, once

_DATA, _INDEX, _META = b"d", b"x", b"m"  # key spaces of the local database
_CHECKPOINT = _META + b"checkpoint"
_TIME = struct.Struct(">q")


def wall_ms() -> int:
    return int(time.time() * 1000)


class StorePartition:
    def __init__(self, name: str, partition: int, backend: Backend, ttl_ms: int | None,
                 written: Callable[[StorePartition], None], clock_ms: Callable[[], int] = wall_ms):
        self.name, self.partition, self.backend, self.ttl = name, partition, backend, ttl_ms
        self.written, self.clock_ms = written, clock_ms  # `written(self)`: first write of a record
        self.record: Changes = {}  # encoded key -> encoded value, None for a delete
        self.txn: Changes = {}

    # -- the transform's view --------------------------------------------------------------
    def get(self, key: Key, default: Any = None) -> Any:
        data = self._lookup(encode_key(key))
        return default if data is None else decode_value(data)

    def __contains__(self, key: Key) -> bool:
        return self._lookup(encode_key(key)) is not None

    def set(self, key: Key, value: Any) -> None:
        expires = self.clock_ms() + self.ttl if self.ttl else NEVER
        self._write(encode_key(key), encode_value(value, expires))

    def delete(self, key: Key) -> None:
        self._write(encode_key(key), None)

    def once(self, key: Key, payload: Any, create: Callable[[], Any]) -> Once:
        """The idempotency-key pattern (idempotency.py): `create()` once per key; a repeat
        with the same payload is a `duplicate`, with another a `conflict`."""
        return once(self, key, payload, create)

    def keys_between(self, start: Key, stop: Key, limit: int) -> list[bytes]:
        """Up to `limit` encoded keys in [start, stop) (of one key type), in order, as this
        record sees them (its own and its transaction's writes included): ordered scans."""
        low, high = encode_key(start), encode_key(stop)
        pending = {key: data for changes in (self.txn, self.record) for key, data in changes.items()
                   if low <= key < high}
        deleted = [key for key, data in pending.items() if data is None]
        found = {key[len(_DATA):] for key in self.backend.keys_between(
            _DATA + low, _DATA + high, limit + len(deleted))}
        found = (found | {key for key, data in pending.items() if data is not None}) - set(deleted)
        return sorted(found)[:limit]

    def _write(self, key: bytes, data: bytes | None) -> None:
        size = len(key) + (len(data) if data is not None else 0)
        if size > MAX_ENTRY_BYTES:  # the changelog would refuse it at every start: the record fails
            raise ValueError(f"a store entry may take at most {MAX_ENTRY_BYTES} bytes encoded "
                             f"(key and value), this one takes {size}")
        if not self.record:
            self.written(self)
        self.record[key] = data

    def _lookup(self, key: bytes) -> bytes | None:
        if key in self.record:
            data = self.record[key]
        elif key in self.txn:
            data = self.txn[key]
        else:
            data = self.backend.get(_DATA + key)
        if data is not None and (expires := expiry(data)) != NEVER and expires <= self.clock_ms():
            return None
        return data

    def __repr__(self) -> str:
        return f"<store {self.name!r} partition {self.partition}>"

    # -- the record's and the transaction's writes -----------------------------------------
    def keep_record(self) -> None:
        self.txn.update(self.record)
        self.record.clear()

    def discard_record(self) -> None:
        self.record.clear()

    def discard_txn(self) -> None:
        self.record.clear()
        self.txn.clear()

    def expire(self, limit: int) -> int:
        """Delete (in the open transaction) up to `limit` entries whose time is up."""
        now = _INDEX + _TIME.pack(self.clock_ms() + 1)
        expired = 0
        stale: Changes = {}
        for index_key in self.backend.keys_between(_INDEX, now, limit):
            key = index_key[len(_INDEX) + _TIME.size:]
            data = self.backend.get(_DATA + key)
            if data is None or _INDEX + _TIME.pack(expiry(data)) + key != index_key:
                stale[index_key] = None  # the entry was rewritten or deleted since
            elif key not in self.txn:
                self.txn[key] = None
                expired += 1
        if stale:
            self.backend.write(stale)  # the index is local, derived from the data: no changelog
        return expired

    # -- the local database ----------------------------------------------------------------
    def apply(self, changes: Changes, rebuilding: bool = False) -> None:
        """Write committed changes (or the changelog's, when recovering) in one atomic write,
        keeping the expiry index in step. `rebuilding` an emptied store skips looking up
        the values replaced (an index entry they leave is dropped by `expire`)."""
        batch: Changes = {}
        for key, data in changes.items():
            old = None if rebuilding else self.backend.get(_DATA + key)
            if old is not None and (expires := expiry(old)) != NEVER:
                batch[_INDEX + _TIME.pack(expires) + key] = None
            batch[_DATA + key] = data
            if data is not None and (expires := expiry(data)) != NEVER:
                batch[_INDEX + _TIME.pack(expires) + key] = b""
        self.backend.write(batch)

    def checkpoint(self) -> tuple[int, int] | None:
        """(changelog offset, wall-clock ms): the database holds every change below that offset."""
        data = self.backend.get(_CHECKPOINT)
        if data is None:
            return None
        saved = json.loads(data)
        return saved["offset"], saved["time_ms"]

    def save_checkpoint(self, offset: int) -> None:
        self.backend.write({_CHECKPOINT: json.dumps({"offset": offset, "time_ms": wall_ms()}).encode()})
