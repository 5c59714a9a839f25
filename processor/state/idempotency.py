"""The idempotency-key pattern on a store: do something once per key, and answer repeats.

A client that retries (or crashes and sends again) reuses its idempotency key. The first
request with a key runs `create`; a repeat with the same payload gets the first result back
(`duplicate`); a reuse of the key with another payload is a `conflict` (the first result is
given too). The key's entry lives as long as the store's `ttl_ms` says. Exactly once with
the rest of the record: the entry is written in the record's transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["created", "duplicate", "conflict"]


@dataclass(frozen=True, slots=True)
class Once:
    status: Status
    result: Any  # what `create` returned for the first request with the key


def digest(payload: Any) -> str:
    """The same for equal payloads (JSON with sorted keys, or the bytes themselves)."""
    data = bytes(payload) if isinstance(payload, bytes | bytearray | memoryview) else \
        json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def once(store, key, payload: Any, create: Callable[[], Any]) -> Once:
    """`create()`'s result the first time `key` comes, else what came of it the first time."""
    fingerprint = digest(payload)
    seen = store.get(key)
    if seen is None:
        result = create()
        store.set(key, {"digest": fingerprint, "result": result})
        return Once("created", result)
    return Once("duplicate" if seen["digest"] == fingerprint else "conflict", seen["result"])
