"""Outbox writers and the independent check of what the relay published.

Writers behave like an order service: each database transaction locks its aggregate
(`UPDATE ... RETURNING version`), writes the outbox row and a ledger row, and commits; some
roll back, some take their transaction id early (an unrelated write first) and pause
between steps, so transactions commit out of id and insertion order. The ledger (never
pruned) is the truth: every ledger row must be in Kafka exactly once, in version order per
aggregate, and nothing else.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import yaml

from localkafka.clients import read_all, unique_name, wait_for
from localpg import LocalPostgres
from processor.outbox.table import OutboxTable


def table_name(label: str = "outbox") -> str:
    """A table name unique to one test or run (an SQL identifier: no dashes)."""
    return unique_name(label).replace("-", "_").lower()


def create_tables(dsn: str, table: str) -> None:
    OutboxTable(dsn, table, 30, threading.Event()).create()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table}_aggregates (id text PRIMARY KEY, version int NOT NULL)")
        conn.execute(f"CREATE TABLE {table}_ledger (id uuid PRIMARY KEY, aggregateid text, version int)")
        conn.execute(f"CREATE TABLE {table}_noise (n int)")


def write_relay_config(path: Path, bootstrap: str, dsn: str, table: str, app_id: str,
                       metrics_port: int | None = None, **outbox) -> Path:
    config = {"app_id": app_id, "kafka": {"bootstrap_servers": bootstrap},
              "outbox": {"dsn": dsn, "table": table, **outbox},
              "metrics": ({"enabled": False} if metrics_port is None
                          else {"host": "127.0.0.1", "port": metrics_port}),
              "logging": {"level": "INFO", "format": "json"}}
    path.write_text(yaml.safe_dump(config))
    return path


def insert(conn: psycopg.Connection, table: str, aggregatetype: str, aggregateid: str,
           payload: dict | None, kind: str = "changed") -> str:
    row_id = str(uuid.uuid4())
    conn.execute(f"INSERT INTO {table} (id, aggregatetype, aggregateid, type, payload) "
                 "VALUES (%s, %s, %s, %s, %s)",
                 (row_id, aggregatetype, aggregateid, kind, json.dumps(payload) if payload is not None else None))
    return row_id


@dataclass
class Writers:
    """`threads` writers, `transactions` in all, over `aggregates` aggregates, until done or
    `stop()`. Connections that break (a database restart) are opened again."""

    dsn: str
    table: str
    aggregatetype: str
    transactions: int
    threads: int = 4
    aggregates: int = 20
    rollback_rate: float = 0.1
    pause_s: float = 0.005
    seed: int = 1
    started: int = 0
    stopping: threading.Event = field(default_factory=threading.Event)
    resumed: threading.Event = field(default_factory=threading.Event)  # cleared: writers hold
    busy: int = 0  # writers inside a transaction
    workers: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Writers:
        self.resumed.set()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            with conn.cursor() as cur:
                cur.executemany(f"INSERT INTO {self.table}_aggregates VALUES (%s, 0) ON CONFLICT DO NOTHING",
                                [(f"a{i}",) for i in range(self.aggregates)])
        for n in range(self.threads):
            self.workers.append(threading.Thread(target=self._write, args=(n,), daemon=True))
            self.workers[-1].start()
        return self

    def _take(self) -> bool:
        while True:
            with self.lock:
                if self.started >= self.transactions or self.stopping.is_set():
                    return False
                if self.resumed.is_set():
                    self.started += 1
                    self.busy += 1
                    return True
            self.resumed.wait(0.1)

    @contextmanager
    def quiet(self, deadline_s: float = 30.0) -> Iterator[None]:
        """A quiet moment: no writer in a transaction inside the block."""
        with self.lock:
            self.resumed.clear()
        try:
            wait_for(lambda: self.busy == 0, deadline_s, "the writers quiet", interval=0.01)
            yield
        finally:
            self.resumed.set()

    def _write(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        conn = None
        while self._take():
            while not self.stopping.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.dsn, connect_timeout=5, autocommit=True)
                    self._one(conn, rng)
                    break
                except psycopg.OperationalError:  # the database restarting: the outcome is in the ledger
                    if conn is not None:
                        conn.close()
                    conn = None
                    time.sleep(0.2)
            with self.lock:
                self.busy -= 1
        if conn is not None:
            conn.close()

    def _one(self, conn: psycopg.Connection, rng: random.Random) -> None:
        t = self.table
        with conn.transaction(force_rollback=rng.random() < self.rollback_rate):
            if rng.random() < 0.3:  # an early transaction id, as a service that wrote something else first
                conn.execute(f"INSERT INTO {t}_noise VALUES (1)")
                time.sleep(rng.random() * self.pause_s * 4)
            aggregate = f"a{rng.randrange(self.aggregates)}"
            version = conn.execute(f"UPDATE {t}_aggregates SET version = version + 1 WHERE id = %s "
                                   "RETURNING version", (aggregate,)).fetchone()[0]
            row_id = insert(conn, t, self.aggregatetype, aggregate, {"aggregate": aggregate, "version": version})
            conn.execute(f"INSERT INTO {t}_ledger VALUES (%s, %s, %s)", (row_id, aggregate, version))
            time.sleep(rng.random() * self.pause_s)

    def done(self) -> bool:
        return not any(w.is_alive() for w in self.workers)

    def stop(self) -> None:
        self.stopping.set()
        for w in self.workers:
            w.join(30)


def roll_back_then_crash(database: LocalPostgres, transactions: int = 5, relay_deadline_s: float = 10.0) -> list[int]:
    """Roll back `transactions` transactions that took an id, wait until the relay took a
    snapshot after them (one that counts their ids as ended), then crash the database (no
    checkpoint): their ids are handed out again after the restart unless their ends reached
    the disk first (the WAL writer's next round, or a page of WAL filled: they write little).
    The ids rolled back."""
    with psycopg.connect(database.dsn) as conn:
        began = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        conn.rollback()
        rolled_back = []
        for _ in range(transactions):
            rolled_back.append(int(conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0]))
            conn.rollback()
        # the relay's loop when idle: a snapshot, then a read; two of its statements begun
        # after the rollbacks mean a snapshot after them
        starts: set = set()
        deadline = time.monotonic() + relay_deadline_s
        while len(starts) < 2 and time.monotonic() < deadline:
            starts.update(t for (t,) in conn.execute(
                "SELECT query_start FROM pg_stat_activity WHERE query_start > %s AND "
                "(query LIKE 'SELECT pg_current_snapshot()%%' OR query LIKE 'SELECT id::text, aggregatetype%%')",
                (began,)))
            conn.rollback()  # the activity is read once per transaction
            time.sleep(0.01)
    database.stop("immediate")
    return rolled_back


def ledger(dsn: str, table: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {str(i): (a, v) for i, a, v in conn.execute(f"SELECT id, aggregateid, version FROM {table}_ledger")}


def unpublished(dsn: str, table: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def check_published(bootstrap: str, topic: str, truth: dict[str, tuple[str, int]]) -> None:
    """Read back read_committed: each ledger row once, keyed by its aggregate, in version
    order per aggregate; nothing else (no row of a rolled-back transaction)."""
    records = read_all(bootstrap, topic)
    ids = [r.headers["id"].decode() for r in records]
    duplicates = len(ids) - len(set(ids))
    missing = set(truth) - set(ids)
    extra = set(ids) - set(truth)
    assert not duplicates and not missing and not extra, (
        f"{len(ids)} published, {len(truth)} committed: {duplicates} duplicates, {len(missing)} "
        f"missing (e.g. {sorted(missing)[:3]}), {len(extra)} not committed (e.g. {sorted(extra)[:3]})")
    versions: dict[str, list[int]] = defaultdict(list)
    for r in records:
        payload = json.loads(r.value)
        assert r.key.decode() == payload["aggregate"] == truth[r.headers["id"].decode()][0]
        versions[payload["aggregate"]].append(payload["version"])
    for aggregate, seen in versions.items():
        assert seen == sorted(seen), f"aggregate {aggregate} out of order: {seen}"
