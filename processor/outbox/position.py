"""Where the relay is: a batch between two database snapshots, and how far into it.

Batch k holds the rows of the transactions that ended between snapshot `prev` and snapshot
`cur` (PostgreSQL's `pg_current_snapshot()`): they commit in that window, so batches follow
commit order, and a transaction that commits late lands in the batch of its commit, never
behind a mark already passed (the classic polling bug). Within a batch, rows go in insertion
order (`seq`); `seq` is the last row of the batch published. The position travels in the
same Kafka transaction as the rows (progress.py), so it is exactly as far as Kafka has them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Position:
    prev: str | None  # None: from the start, every row ended before `cur`
    cur: str
    seq: int = 0
    published: int = 0  # rows published by this outbox's relays, all told

    def after(self, seq: int, rows: int) -> Position:
        return Position(self.prev, self.cur, seq, self.published + rows)

    def next(self, snapshot: str) -> Position:
        """The batch after this one, once it is exhausted: what ended until `snapshot`."""
        return Position(self.cur, snapshot, 0, self.published)

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Position:
        fields = json.loads(data)
        return cls(fields["prev"], fields["cur"], int(fields["seq"]), int(fields.get("published", 0)))
