"""The local database of one store partition: RocksDB (rocksdict), or memory for unit tests.

Both take a whole set of changes in one atomic write, so a crash leaves a store as it was
before a commit's changes or after all of them, never half-way.
"""

from __future__ import annotations

import bisect
import logging
import shutil
from pathlib import Path
from typing import Protocol

from rocksdict import Options, Rdict, WriteBatch

from processor.kafka import FatalError

log = logging.getLogger("processor.state")

Changes = dict[bytes, bytes | None]  # None deletes


class Backend(Protocol):
    def get(self, key: bytes) -> bytes | None: ...
    def write(self, changes: Changes) -> None: ...
    def keys_between(self, start: bytes, stop: bytes, limit: int) -> list[bytes]: ...
    def wipe(self) -> None: ...
    def close(self) -> None: ...


class StoreCorrupt(FatalError):
    """RocksDB found a block of the local store corrupt (a disk fault): no record is to blame,
    and the store is not to be trusted. The process ends; the next start rebuilds the store
    from its changelog (the mark beside it says so)."""


class StoreUnwritable(FatalError):
    """The local store cannot be written (the disk full, say): the changelog holds every
    committed change, so the next start recovers what this one could not write."""


def corrupt_mark(path: Path) -> Path:
    return path.with_name(path.name + ".corrupt")


class RocksBackend:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), options=Options(raw_mode=True))

    def get(self, key: bytes) -> bytes | None:
        try:
            return self.db.get(key)
        except Exception as exc:  # rocksdict raises Exception itself, its text says which
            if "Corruption" not in str(exc):
                raise
            corrupt_mark(self.path).touch()
            raise StoreCorrupt(f"the local store at {self.path} is corrupt ({str(exc).splitlines()[0][:200]}): "
                               f"the next start rebuilds it from its changelog") from exc

    def write(self, changes: Changes) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        try:
            self.db.write(batch)
        except Exception as exc:  # rocksdict raises Exception itself ("IO error: No space left ...")
            raise StoreUnwritable(f"cannot write the local store at {self.path} ({str(exc).splitlines()[0][:200]}): "
                                  f"the changelog holds every committed change, the next start recovers "
                                  f"them") from exc

    def keys_between(self, start: bytes, stop: bytes, limit: int) -> list[bytes]:
        keys = []
        for key in self.db.keys(from_key=start):
            if key >= stop or len(keys) >= limit:
                break
            keys.append(key)
        return keys

    def wipe(self) -> None:
        self.db.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self.db = Rdict(str(self.path), options=Options(raw_mode=True))

    def close(self) -> None:
        try:
            self.db.close()
        except Exception as exc:  # noqa: BLE001 - after a failed write (RocksDB keeps its error): said, not raised
            log.warning("closing the local store at %s: %s", self.path, str(exc).splitlines()[0][:200])


class MemoryBackend:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, changes: Changes) -> None:
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value

    def keys_between(self, start: bytes, stop: bytes, limit: int) -> list[bytes]:
        keys = sorted(self.data)
        return keys[bisect.bisect_left(keys, start):bisect.bisect_left(keys, stop)][:limit]

    def wipe(self) -> None:
        self.data.clear()

    def close(self) -> None:
        pass
