"""The outbox table's batches, prune and checks against a real PostgreSQL (no Kafka)."""

from __future__ import annotations

import threading

import psycopg
import pytest

from processor.outbox.position import Position
from processor.outbox.table import OutboxTable, TableError
from tests.outboxes import insert, table_name


@pytest.fixture
def table(postgres: str):
    name = table_name()
    outbox = OutboxTable(postgres, name, 30, threading.Event())
    outbox.create()
    yield outbox
    outbox.close()


def ids(rows) -> list[str]:
    return [row.id for row in rows]


def test_a_row_committed_late_is_in_the_batch_of_its_commit(table, postgres):
    late = psycopg.connect(postgres)
    with psycopg.connect(postgres, autocommit=True) as conn:
        held = insert(late, table.table, "order", "x", {"n": 1})  # inserted first: the lower seq
        first = insert(conn, table.table, "order", "y", {"n": 2})
        position = Position(None, table.snapshot())
        rows = table.batch(position, 100)
        assert ids(rows) == [first]
        position = position.after(rows[-1].seq, 1)
        late.commit()  # after the batch's snapshot: not in this batch, whatever its seq
        assert table.batch(position, 100) == []
        later = insert(conn, table.table, "order", "x", {"n": 3})
        position = position.next(table.snapshot())
        assert ids(table.batch(position, 100)) == [held, later]  # insertion order within the batch
    late.close()


def test_a_batch_is_read_in_pieces_by_seq(table, postgres):
    with psycopg.connect(postgres, autocommit=True) as conn:
        written = [insert(conn, table.table, "order", f"o{n}", {"n": n}) for n in range(5)]
    position = Position(None, table.snapshot())
    seen = []
    while rows := table.batch(position, 2):
        seen += ids(rows)
        position = position.after(rows[-1].seq, len(rows))
    assert seen == written and position.published == 5


def test_the_sweep_deletes_published_rows_only_and_the_backlog_counts_the_rest(table, postgres):
    with psycopg.connect(postgres, autocommit=True) as conn:
        old = insert(conn, table.table, "order", "o", {"n": 0})
        position = Position(None, table.snapshot())
        position = position.after(table.batch(position, 1)[0].seq, 1).next(table.snapshot())
        published, kept = (insert(conn, table.table, "order", "o", {"n": n}) for n in (1, 2))
        position = position.next(table.snapshot())  # prev: after `old`; cur: after both
        position = position.after(table.batch(position, 1)[0].seq, 1)
        rows, age = table.backlog(position)
        assert rows == 1 and age is not None and age >= 0
        assert table.sweep(position) == 2
        left = [str(r[0]) for r in conn.execute(f"SELECT id FROM {table.table}")]
    assert left == [kept] and old != published


def test_a_table_without_the_relay_columns_is_named(postgres):
    name = table_name("debezium")
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (id uuid PRIMARY KEY, aggregatetype varchar(255), "
                     "aggregateid varchar(255), type varchar(255), payload jsonb)")
    with pytest.raises(TableError, match=f"table {name} lacks the column.s. txid xid8, seq bigint, "
                                         "created_at timestamp with time zone"):
        OutboxTable(postgres, name, 30, threading.Event()).check()
    with pytest.raises(TableError, match="does not exist"):
        OutboxTable(postgres, "public.nothing_here", 30, threading.Event()).check()


def test_a_snapshot_survives_a_database_crash_that_hands_out_its_transaction_ids_again(crash_prone_postgres):
    """A crash forgets transaction ids whose end never reached the disk (rolled back, say) and
    hands them out again; a snapshot the relay took before the crash counts them as ended, so
    rows written after the crash under them would fall in no batch."""
    dsn = crash_prone_postgres.dsn
    name = table_name()
    table = OutboxTable(dsn, name, 30, threading.Event())
    table.create()
    with psycopg.connect(dsn) as conn:
        rolled_back = []
        for n in range(3):
            insert(conn, name, "order", "o", {"n": n})
            rolled_back.append(conn.execute("SELECT pg_current_xact_id()::text").fetchone()[0])
            conn.rollback()
    snapshot = table.snapshot()  # counts the rolled-back ids as ended
    table.close()
    crash_prone_postgres.stop("immediate")
    crash_prone_postgres.start()
    with psycopg.connect(dsn, autocommit=True) as conn:
        after = insert(conn, name, "order", "o", {"n": "after the crash"})
        txid = conn.execute(f"SELECT txid::text FROM {name} WHERE id = %s", (after,)).fetchone()[0]
    position = Position(None, snapshot)
    assert table.batch(position, 100) == [], f"id {txid} (rolled back: {rolled_back}) is taken as ended"
    assert ids(table.batch(position.next(table.snapshot()), 100)) == [after]
    table.close()


def test_a_table_whose_rows_may_lack_a_topic_key_or_type_is_refused(postgres):
    name = table_name("nullable")
    with psycopg.connect(postgres, autocommit=True) as conn:  # Debezium's columns, without NOT NULL
        conn.execute(f"CREATE TABLE {name} (id uuid PRIMARY KEY, aggregatetype varchar(255), "
                     "aggregateid varchar(255), type varchar(255) NOT NULL, payload jsonb, "
                     "txid xid8 NOT NULL DEFAULT pg_current_xact_id(), seq bigint GENERATED ALWAYS AS IDENTITY, "
                     "created_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    with pytest.raises(TableError, match=f"table {name}: column.s. aggregatetype, aggregateid may be NULL; "
                                         f"every row needs them: ALTER TABLE {name} ALTER COLUMN aggregatetype SET NOT NULL"):
        OutboxTable(postgres, name, 30, threading.Event()).check()
