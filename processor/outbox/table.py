"""The outbox table as the relay reads and prunes it (PostgreSQL through psycopg 3).

The relay's two columns: `txid` (the writing transaction's id, `pg_current_xact_id()`),
which tells with `pg_visible_in_snapshot` in which batch a row is (position.py), and `seq`
(insertion order, the order within a batch). Every call asks again while the database is
away (a restart, say), for up to the unreachable bound, then ends the run with one line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from threading import Event
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg import sql

from processor.kafka import FatalError, Stopped
from processor.outbox.position import Position

log = logging.getLogger("processor.outbox")
T = TypeVar("T")
CONNECT_TIMEOUT_S = 5
RECONNECT_EVERY_S = 1.0
SWEEP_ROWS = 10_000  # rows deleted per statement when pruning

CREATE = """
CREATE TABLE IF NOT EXISTS {table} (
    id            uuid PRIMARY KEY,
    aggregatetype text NOT NULL,
    aggregateid   text NOT NULL,
    type          text NOT NULL,
    payload       jsonb,
    txid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS {seq_index} ON {table} (seq)
"""
TEXT = ("text", "character varying")
# the types each column may have (Debezium's tables often use varchar, a json or text payload)
COLUMNS = {"id": ("uuid",), "aggregatetype": TEXT, "aggregateid": TEXT, "type": TEXT,
           "payload": ("jsonb", "json", *TEXT), "txid": ("xid8",), "seq": ("bigint",),
           "created_at": ("timestamp with time zone",)}
NOT_NULL = ("aggregatetype", "aggregateid", "type")  # a row's topic, key and type
# a row is in the batch (prev, cur] when its transaction ended before `cur` and not before `prev`
IN_BATCH = """pg_visible_in_snapshot(txid, %(cur)s::pg_snapshot)
  AND (%(prev)s::pg_snapshot IS NULL OR NOT pg_visible_in_snapshot(txid, %(prev)s::pg_snapshot))"""
# A crash forgets the ids of transactions whose end had not reached the disk (a rollback's
# record waits for the WAL writer) and hands them out again; a snapshot that counts them as
# ended would hide the rows written under them after the crash (in no batch, and swept as
# published). So a snapshot is used only once an id above all it counts as ended is durable:
# a transaction of the relay's own, taken after the snapshot in the same statement, writes a
# WAL record (an empty logical message; no slot or privilege needed) and commits
# synchronously, which flushes every record before it (and waits for synchronous standbys).
# The database never hands out an id below a durable commit's again.
SNAPSHOT = "SELECT pg_current_snapshot()::text"
DURABLE_SNAPSHOT = ("SELECT pg_current_snapshot()::text, pg_current_xact_id()::text, "
                    "pg_logical_emit_message(true, 'processor.outbox', '')")
# the relay's commits wait for the disk (and synchronous standbys) whatever the role's default
DURABLE_COMMITS = ("SELECT set_config('synchronous_commit', 'on', false)"
                   " WHERE current_setting('synchronous_commit') IN ('off', 'local')")
# published: ended before `prev`, or in the batch up to `seq`
PUBLISHED = """pg_visible_in_snapshot(txid, %(cur)s::pg_snapshot)
  AND (seq <= %(seq)s OR (%(prev)s::pg_snapshot IS NOT NULL AND pg_visible_in_snapshot(txid, %(prev)s::pg_snapshot)))"""


# a connection the server refuses (its text is all psycopg tells): asking again would not help
REFUSALS = ("authentication failed", "does not exist", "no pg_hba.conf entry", "pg_hba.conf rejects",
            "permission denied", "no password supplied")


class Refused(FatalError):
    """The database refuses the relay's connection (a wrong password, a role or database that
    does not exist, pg_hba.conf): not an outage."""


class TableError(Exception):
    """The outbox table is missing or not of the shape the relay needs (exit 2)."""


class Row(NamedTuple):  # a tuple: made in C from the fetched ones (a backlog drains at 10^5 rows/s)
    id: str
    aggregatetype: str
    aggregateid: str
    type: str
    payload: str | None  # jsonb as text
    seq: int
    created_at: float  # epoch seconds


def _names(table: str) -> dict[str, sql.Composable]:
    parts = table.split(".")
    return {"table": sql.Identifier(*parts), "seq_index": sql.Identifier(f"{parts[-1]}_seq")}


class OutboxTable:
    def __init__(self, dsn: str, table: str, unreachable_s: float, stopping: Event):
        self.dsn, self.table, self.unreachable_s, self.stopping = dsn, table, unreachable_s, stopping
        self.names = _names(table)
        self.conn: psycopg.Connection | None = None
        self.down_since: float | None = None  # the database has not answered since then
        self.durable_below = 0  # no transaction id below it is ever handed out again
        self.closed = False

    def twin(self) -> OutboxTable:
        """The same table through a connection of its own (one per thread)."""
        return OutboxTable(self.dsn, self.table, self.unreachable_s, self.stopping)

    def _query(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(**self.names)

    def _ask(self, what: str, ask: Callable[[psycopg.Connection], T]) -> T:
        while True:
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
                    # a statement stuck (on a lock, a server hung) counts as the database away
                    self.conn.execute(sql.SQL("SET statement_timeout = {}").format(int(self.unreachable_s * 1000)))
                    self.conn.execute(DURABLE_COMMITS)
                result = ask(self.conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if any(refusal in str(exc) for refusal in REFUSALS):
                    raise Refused(f"cannot {what}: the database refuses the relay: {_first_line(exc)}") from exc
                self._away(what, exc)
                continue
            except psycopg.Error as exc:  # refused (a privilege missing, say): asking again would not help
                raise FatalError(f"cannot {what}: {_first_line(exc)}") from exc
            if self.down_since is not None:
                log.info("the database answers again after %.1fs", time.monotonic() - self.down_since)
                self.down_since = None
            return result

    def _away(self, what: str, exc: Exception) -> None:
        if self.closed:  # closed under a statement by the relay ending: not the database's doing
            raise Stopped(f"{what}: the relay is ending")
        if self.conn is not None:
            self.conn.close()
        reason = _first_line(exc)
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning("%s: the database does not answer (%s); asking again", what, reason)
        elif now - self.down_since > self.unreachable_s:
            raise FatalError(f"database unreachable for {now - self.down_since:.0f}s "
                             f"(bound {self.unreachable_s:.0f}s): {reason}")
        if self.stopping.wait(RECONNECT_EVERY_S):
            raise Stopped(f"stopped while the database did not answer ({reason})")

    def close(self) -> None:
        self.closed = True
        if self.conn is not None:
            self.conn.close()

    def create(self) -> None:
        self._ask("create the outbox table", lambda c: c.execute(self._query(CREATE)))

    def check(self) -> None:
        """The table exists with the columns the relay reads, of their types."""
        schema, _, name = self.table.rpartition(".")
        described = self._ask("describe the outbox table", lambda c: c.execute(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = %s"
            " AND table_schema = COALESCE(NULLIF(%s, ''), current_schema())", (name, schema)).fetchall())
        found = {column: kind for column, kind, _ in described}
        if not found:
            raise TableError(f"table {self.table} does not exist: create it with "
                             f"`processor outbox -c FILE --create-table` (docs/outbox.md: the table)")
        wrong = [f"{column} {kinds[0]}" for column, kinds in COLUMNS.items() if found.get(column) not in kinds]
        if wrong:
            raise TableError(f"table {self.table} lacks the column(s) {', '.join(wrong)} "
                             f"(docs/outbox.md: the table)")
        nullable = [column for column, _, null in described if column in NOT_NULL and null == "YES"]
        if nullable:  # a row without them would go to a topic `None`, or without its key's order
            raise TableError(f"table {self.table}: column(s) {', '.join(nullable)} may be NULL; every row needs "
                             f"them: ALTER TABLE {self.table} ALTER COLUMN {nullable[0]} SET NOT NULL")

    def snapshot(self) -> str:
        """A snapshot that a crash or a failover to a synchronous standby cannot make wrong:
        every id it counts as ended is below a durable commit (DURABLE_SNAPSHOT). While no new
        id is handed out (idle), the last one made durable still covers it: no commit."""
        def take(conn: psycopg.Connection) -> str:
            snapshot = conn.execute(SNAPSHOT).fetchone()[0]
            if xmax(snapshot) <= self.durable_below:
                return snapshot
            snapshot, xid, _ = conn.execute(DURABLE_SNAPSHOT).fetchone()
            self.durable_below = int(xid) + 1
            return snapshot
        return self._ask("take a snapshot", take)

    def batch(self, position: Position, limit: int) -> list[Row]:
        """The next rows of the position's batch, in insertion order."""
        query = self._query("SELECT id::text, aggregatetype, aggregateid, type, payload::text, seq,"
                            " extract(epoch FROM created_at)::float8 FROM {table} WHERE seq > %(seq)s AND "
                            + IN_BATCH + " ORDER BY seq LIMIT %(limit)s")
        params = {**_params(position), "limit": limit}
        rows = self._ask("read the outbox", lambda c: c.execute(query, params).fetchall())
        return list(map(Row._make, rows))

    def delete(self, ids: list[str]) -> int:
        query = self._query("DELETE FROM {table} WHERE id = ANY(%s::uuid[])")
        array = "{" + ",".join(ids) + "}"  # one text value: psycopg's list adapter is slow for 10^3 items
        return self._ask("delete published rows", lambda c: c.execute(query, (array,)).rowcount)

    def sweep(self, position: Position) -> int:
        """Delete every published row still there (left by a crash between Kafka's commit and
        the delete), `SWEEP_ROWS` at a time."""
        query = self._query("DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE "
                            + PUBLISHED + " LIMIT %(limit)s)")
        params = {**_params(position), "limit": SWEEP_ROWS}
        deleted = 0
        while not self.stopping.is_set():
            n = self._ask("delete published rows", lambda c: c.execute(query, params).rowcount)
            deleted += n
            if n < SWEEP_ROWS:
                break
        return deleted

    def backlog(self, position: Position) -> tuple[int, float | None]:
        """Committed rows not published yet, and the age in seconds of the oldest of them."""
        query = self._query("SELECT count(*), extract(epoch FROM clock_timestamp() - min(created_at))::float8"
                            " FROM {table} WHERE NOT (" + PUBLISHED + ")")
        count, age = self._ask("measure the backlog", lambda c: c.execute(query, _params(position)).fetchone())
        return count, age


def xmax(snapshot: str) -> int:
    """The first id a snapshot (`xmin:xmax:xip,...`) counts as not yet begun."""
    return int(snapshot.split(":")[1])


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _params(position: Position) -> dict[str, Any]:
    return {"prev": position.prev, "cur": position.cur, "seq": position.seq}
