"""The outbox relay against a real PostgreSQL and a real broker: exactly once, in commit
order per aggregate, through late commits, kill -9, a second relay, a database restart."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from localkafka import free_port
from localkafka.procs import HOST
from localkafka.clients import create_topics, read_all, unique_name, wait_for
from tests.http import get, samples_of
from tests.outboxes import (Writers, check_published, create_tables, insert, ledger, roll_back_then_crash, table_name,
                            unpublished, write_relay_config)

pytestmark = pytest.mark.kafka


@dataclass
class Outbox:
    bootstrap: str
    dsn: str
    table: str
    aggregatetype: str
    topic: str
    app_id: str
    config: Path

    def published(self) -> int:
        return len(read_all(self.bootstrap, self.topic))

    def drained(self) -> bool:
        return unpublished(self.dsn, self.table) == 0

    def writers(self, transactions: int, **options) -> Writers:
        return Writers(self.dsn, self.table, self.aggregatetype, transactions, **options).start()

    def check(self) -> None:
        check_published(self.bootstrap, self.topic, ledger(self.dsn, self.table))


@pytest.fixture
def outbox(kafka_bootstrap: str, postgres: str, tmp_path: Path):
    def make(dsn: str = postgres, partitions: int = 3, topic_config: dict | None = None,
             **options) -> Outbox:
        table = table_name()
        aggregatetype = unique_name("order").replace("-", "_")
        topic = f"outbox.{aggregatetype}"
        create_topics(kafka_bootstrap, [topic], partitions, topic_config)
        create_tables(dsn, table)
        app_id = unique_name("relay")
        config = write_relay_config(tmp_path / f"{app_id}.yaml", kafka_bootstrap, dsn, table, app_id, **options)
        return Outbox(kafka_bootstrap, dsn, table, aggregatetype, topic, app_id, config)
    return make


def test_rows_go_out_keyed_by_aggregate_with_their_id_then_leave_the_table(outbox, processors):
    box = outbox()
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        ids = [insert(conn, box.table, box.aggregatetype, aggregate, {"n": n}, kind="created")
               for n, aggregate in enumerate(["o1", "o2", "o1"])]
        ids.append(insert(conn, box.table, box.aggregatetype, "o2", None, kind="deleted"))
    relay = processors(box.config, "r1", command="outbox")
    wait_for(lambda: box.drained() or not relay.running(), 60, "the table drained")
    records = read_all(box.bootstrap, box.topic)
    assert [r.headers["id"].decode() for r in sorted(records, key=lambda r: ids.index(r.headers["id"].decode()))] == ids
    by_id = {r.headers["id"].decode(): r for r in records}
    assert [(by_id[i].key, by_id[i].value, by_id[i].headers["type"]) for i in ids] == [
        (b"o1", b'{"n": 0}', b"created"), (b"o2", b'{"n": 1}', b"created"),
        (b"o1", b'{"n": 2}', b"created"), (b"o2", None, b"deleted")]  # a null payload: a tombstone
    assert by_id[ids[0]].partition == by_id[ids[2]].partition
    assert relay.terminate() == 0
    assert not relay.errors("processor.outbox")


def test_the_rows_of_an_empty_aggregate_id_keep_their_order_in_one_partition(outbox, processors):
    box = outbox(partitions=6)
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        ids = [insert(conn, box.table, box.aggregatetype, "", {"n": n}) for n in range(30)]
    relay = processors(box.config, "r1", command="outbox")
    wait_for(lambda: box.drained() or not relay.running(), 60, "the table drained")
    assert relay.terminate() == 0
    records = read_all(box.bootstrap, box.topic)
    assert {r.partition for r in records} == {0}
    assert [r.headers["id"].decode() for r in records] == ids


def test_a_late_commit_is_published_and_each_aggregate_in_commit_order(outbox, processors):
    """The classic polling bug: a row inserted first (lower seq) whose transaction commits after
    a later row was published. And commit order, not transaction-id order: a transaction
    that took its id early writes aggregate z after another one committed its write of z."""
    box = outbox()
    late = psycopg.connect(box.dsn)  # a transaction left open
    early = psycopg.connect(box.dsn)
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        late.execute(f"INSERT INTO {box.table}_noise VALUES (1)")
        late_id = insert(late, box.table, box.aggregatetype, "x", {"aggregate": "x", "version": 1})
        early.execute(f"INSERT INTO {box.table}_noise VALUES (1)")  # takes a transaction id now
        first_id = insert(conn, box.table, box.aggregatetype, "y", {"aggregate": "y", "version": 1})
        z1 = insert(conn, box.table, box.aggregatetype, "z", {"aggregate": "z", "version": 1})
        seqs = dict(late.execute(f"SELECT id::text, seq FROM {box.table}").fetchall())
        assert seqs[late_id] < seqs[first_id]  # inserted first, committed last
        relay = processors(box.config, "r1", command="outbox")
        wait_for(lambda: box.published() == 2 or not relay.running(), 60, "the committed rows published")
        z2 = insert(early, box.table, box.aggregatetype, "z", {"aggregate": "z", "version": 2})
        early.commit()
        wait_for(lambda: box.published() == 3 or not relay.running(), 60, "z's second row published")
        late.commit()
        wait_for(lambda: box.published() == 4 or not relay.running(), 60, "the late row published")
    records = read_all(box.bootstrap, box.topic)
    order = [r.headers["id"].decode() for r in records if r.key == b"z"]
    assert order == [z1, z2]
    assert sorted(r.headers["id"].decode() for r in records) == sorted([late_id, first_id, z1, z2])
    assert relay.terminate() == 0
    late.close()
    early.close()


def test_every_committed_row_exactly_once_through_kill_9_at_random_moments(outbox, processors):
    box = outbox(batch_rows=200)
    writers = box.writers(3000, threads=4, seed=5, pause_s=0.02)
    rng = random.Random(5)
    for kill in range(4):
        if writers.done():
            break
        relay = processors(box.config, f"r{kill}", command="outbox")
        before = box.published()
        wait_for(lambda: box.published() > before or not relay.running(), 60, "progress")
        wait_for(lambda: rng.random() < 0.2, 5, "a random moment", interval=0.05)
        assert relay.running(), relay.log()[-2000:]
        relay.kill()
    relay = processors(box.config, "last", command="outbox")
    wait_for(lambda: writers.done() and box.drained() or not relay.running(), 240, "every row published")
    assert relay.terminate() == 0
    box.check()


def test_a_kill_between_the_kafka_commit_and_the_delete_publishes_nothing_twice(outbox, processors):
    """The crash window the position in Kafka is for: the rows are committed to Kafka, their
    delete waits on locks held here, the relay is killed; the next relay, once the locks go,
    deletes them (its sweep) and publishes only what came after."""
    box = outbox()
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        first = [insert(conn, box.table, box.aggregatetype, f"o{n}", {"n": n}) for n in range(20)]
    locker = psycopg.connect(box.dsn)
    locker.execute(f"SELECT id FROM {box.table} FOR UPDATE")  # the relay's delete will wait on these
    relay = processors(box.config, "r1", command="outbox")
    wait_for(lambda: box.published() == 20 or not relay.running(), 60, "the rows committed to Kafka")
    assert unpublished(box.dsn, box.table) == 20  # not deleted yet: the relay waits in its delete
    relay.kill()
    with psycopg.connect(box.dsn, autocommit=True) as conn:  # its delete dies with it, undone
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                     " AND query LIKE %s", (f"DELETE FROM %{box.table}%",))
    locker.rollback()
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        later = [insert(conn, box.table, box.aggregatetype, f"o{n}", {"n": n}) for n in range(20, 25)]
    relay = processors(box.config, "r2", command="outbox")
    wait_for(lambda: box.drained() or not relay.running(), 60, "the table drained")
    assert relay.terminate() == 0
    assert "(20 published rows left by a crash deleted)" in relay.log()
    published = [r.headers["id"].decode() for r in read_all(box.bootstrap, box.topic)]
    assert sorted(published) == sorted(first + later)
    locker.close()


def test_a_second_relay_fences_the_first_and_takes_over(outbox, processors):
    box = outbox(batch_rows=100)
    writers = box.writers(2000, threads=3, seed=7)
    first = processors(box.config, "first", command="outbox")
    wait_for(lambda: box.published() > 0 or not first.running(), 60, "the first relay publishing")
    second = processors(box.config, "second", command="outbox")
    assert first.proc.wait(60) == 1
    assert any("another relay of this outbox took over" in line for line in first.errors("processor.outbox"))
    wait_for(lambda: writers.done() and box.drained() or not second.running(), 240, "every row published")
    assert second.terminate() == 0
    box.check()


def test_relays_fenced_while_they_produce_end_with_one_line(outbox, processors):
    """A backlog of large rows: a relay spends its time producing, and is fenced there."""
    box = outbox()
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {box.table} (id, aggregatetype, aggregateid, type, payload) "
                     "SELECT gen_random_uuid(), %s, 'a' || (n %% 50), 'changed', "
                     "jsonb_build_object('n', n, 'pad', repeat('x', 20000)) FROM generate_series(1, 40000) n",
                     (box.aggregatetype,))
    relays = [processors(box.config, "r0", command="outbox")]
    for n in range(1, 4):
        left = unpublished(box.dsn, box.table)
        wait_for(lambda: unpublished(box.dsn, box.table) < left or not relays[-1].running(), 60, "publishing")
        relays.append(processors(box.config, f"r{n}", command="outbox"))
        assert relays[-2].proc.wait(60) == 1
        errors = relays[-2].errors("processor.outbox")
        assert len(errors) == 1 and "another relay of this outbox took over" in errors[0], relays[-2].log()[-3000:]
        assert "Traceback" not in relays[-2].log()
    wait_for(lambda: box.drained() or not relays[-1].running(), 240, "every row published")
    assert relays[-1].terminate() == 0


def test_two_relays_started_together_leave_one_publishing(outbox, processors):
    box = outbox(batch_rows=100)
    writers = box.writers(1000, threads=2, seed=9)
    relays = [processors(box.config, name, command="outbox") for name in ("a", "b")]
    wait_for(lambda: sum(r.running() for r in relays) == 1, 120, "one relay left")
    survivor = next(r for r in relays if r.running())
    loser = next(r for r in relays if not r.running())
    assert loser.proc.returncode == 1
    wait_for(lambda: writers.done() and box.drained() or not survivor.running(), 240, "every row published")
    assert survivor.terminate() == 0
    box.check()


def test_a_database_restart_mid_stream_loses_and_repeats_nothing(outbox, processors, private_postgres):
    """With the shipped bound (60 s): a crash-like stop (no checkpoint) and a start again."""
    box = outbox(dsn=private_postgres.dsn, batch_rows=100)
    writers = box.writers(3000, threads=4, seed=11)
    relay = processors(box.config, "r1", command="outbox")
    wait_for(lambda: box.published() > 300 or not relay.running(), 60, "progress")
    private_postgres.stop("immediate")
    wait_for(lambda: "does not answer" in relay.log() or not relay.running(), 30, "the relay noticing")
    private_postgres.start()
    wait_for(lambda: writers.done() and box.drained() or not relay.running(), 240, "every row published")
    assert relay.terminate() == 0
    assert "the database answers again" in relay.log()
    box.check()


def test_rows_committed_after_a_database_crash_under_ids_it_handed_out_again_are_published(
        outbox, processors, crash_prone_postgres):
    """A crash hands out again the ids of transactions rolled back just before it; the relay's
    snapshot from before the crash counted them as ended. Rows committed under them after the
    restart must be published all the same (the crash-prone server's WAL writer waits 10 s,
    which keeps the window open that its 200 ms default leaves open more rarely)."""
    box = outbox(dsn=crash_prone_postgres.dsn)
    relay = processors(box.config, "r1", command="outbox")
    before = box.writers(50, threads=2, rollback_rate=0)
    wait_for(lambda: before.done() and box.drained() or not relay.running(), 60, "the rows before the crash published")
    rolled_back = roll_back_then_crash(crash_prone_postgres)
    crash_prone_postgres.start()
    writers = box.writers(50, threads=1, rollback_rate=0, seed=2)
    wait_for(lambda: writers.done() or not relay.running(), 60, "the rows after the crash written")
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        reused = conn.execute(f"SELECT count(*) FROM {box.table} WHERE txid::text::bigint = ANY(%s)",
                              (rolled_back,)).fetchone()[0]
    wait_for(lambda: box.drained() or not relay.running(), 60,
             f"every row published ({reused} committed under ids rolled back before the crash)")
    assert relay.terminate() == 0
    box.check()


def test_a_database_away_past_the_bound_ends_the_relay_with_one_line(outbox, processors, private_postgres):
    box = outbox(dsn=private_postgres.dsn, database_unreachable_timeout_ms=3000)
    relay = processors(box.config, "r1", command="outbox")
    wait_for(lambda: "publishing every row" in relay.log() or not relay.running(), 60, "the relay started")
    private_postgres.stop("fast")
    assert relay.proc.wait(60) == 1
    errors = relay.errors("processor.outbox")
    assert len(errors) == 1 and "database unreachable for" in errors[0], relay.log()[-2000:]


def test_a_stop_while_the_database_is_away_is_a_clean_stop(outbox, processors, private_postgres):
    box = outbox(dsn=private_postgres.dsn)
    relay = processors(box.config, "r1", command="outbox")
    wait_for(lambda: "publishing every row" in relay.log() or not relay.running(), 60, "the relay started")
    private_postgres.stop("fast")
    wait_for(lambda: "does not answer" in relay.log() or not relay.running(), 30, "the relay noticing")
    assert relay.terminate(30) == 0
    assert "stopped while the database did not answer" in relay.log() and not relay.errors("processor.outbox")


def test_a_stop_while_kafka_is_away_at_start_is_a_clean_stop(tmp_path, processors, postgres):
    table = table_name()
    create_tables(postgres, table)
    config = write_relay_config(tmp_path / "away.yaml", f"127.0.0.1:{free_port()}", postgres, table,
                                unique_name("relay"))
    relay = processors(config, "r1", command="outbox")
    wait_for(lambda: "cannot prepare the progress topic" in relay.log() or not relay.running(), 60,
             "the relay asking for its progress topic")
    assert relay.terminate(30) == 0, relay.log()[-3000:]
    assert not relay.errors("processor.outbox") and "Traceback" not in relay.log(), relay.log()[-3000:]
    assert "stopped while Kafka did not answer" in relay.log()


def test_a_row_kafka_refuses_stops_the_relay_with_one_line_naming_it(outbox, processors):
    """Kafka refuses the whole request the row is in: the rows before it are published, the
    relay names it and stops; nothing after it is published (a gap would break the order)."""
    box = outbox(topic_config={"max.message.bytes": "2000"})
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        rows = [insert(conn, box.table, box.aggregatetype, "o1", {"n": n}) for n in range(2)]
        refused = insert(conn, box.table, box.aggregatetype, "o1", {"blob": "x" * 5000})
        rows.append(insert(conn, box.table, box.aggregatetype, "o1", {"n": 3}))
    relay = processors(box.config, "r1", command="outbox")
    assert relay.proc.wait(90) == 1
    errors = relay.errors("processor.outbox")
    assert len(errors) == 1 and f"Kafka refuses outbox row {refused}" in errors[0], relay.log()[-3000:]
    records = read_all(box.bootstrap, box.topic)
    assert [r.headers["id"].decode() for r in records] == rows[:2]
    assert unpublished(box.dsn, box.table) == 2


def test_metrics_health_and_a_clean_stop(outbox, processors):
    port = free_port()
    box = outbox(metrics_port=port)
    with psycopg.connect(box.dsn, autocommit=True) as conn:
        for n in range(50):
            insert(conn, box.table, box.aggregatetype, f"o{n % 5}", {"n": n})
    relay = processors(box.config, "r1", command="outbox")
    wait_for(lambda: box.drained() or not relay.running(), 60, "the table drained")

    def metrics() -> dict:
        return samples_of(get(port, "/metrics")[1])

    wait_for(lambda: metrics().get(("processor_outbox_rows_published_total", (("topic", box.topic),))) == 50,
             30, "the published rows counted")
    wait_for(lambda: metrics().get(("processor_outbox_lag_rows", ())) == 0, 30, "no lag")
    m = metrics()
    assert m[("processor_outbox_rows_deleted_total", ())] == 50
    assert m[("processor_outbox_oldest_unpublished_seconds", ())] == 0
    assert m[("processor_ready", ())] == 1
    assert get(port, "/healthz")[0] == 200 and get(port, "/readyz")[0] == 200
    assert relay.terminate() == 0
    assert relay.log_lines()[-1]["message"].startswith("stopping:")


def test_bad_config_and_a_missing_table_end_with_one_line_and_exit_2(tmp_path, kafka_bootstrap, postgres):
    def run(config: Path, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "processor", "outbox", "-c", str(config), *extra],
                              capture_output=True, text=True, timeout=60)

    bad = write_relay_config(tmp_path / "bad.yaml", kafka_bootstrap, postgres, "outbox_x", "app",
                             route="outbox.$${aggregateid}")
    done = run(bad)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "config error: outbox.route: ${aggregateid} is not a column a route can name (only ${aggregatetype})"]
    missing = write_relay_config(tmp_path / "missing.yaml", kafka_bootstrap, postgres, "no_such_table", "app")
    for extra in ([], ["--check"]):
        done = run(missing, *extra)
        assert done.returncode == 2 and "table no_such_table does not exist" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    created = subprocess.run([sys.executable, "-m", "processor", "outbox", "-c", str(missing), "--create-table"],
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0 and run(missing, "--check").returncode == 0


def test_a_database_that_refuses_the_relay_is_one_line_and_exit_2_at_once(tmp_path, kafka_bootstrap,
                                                                          private_postgres):
    """A wrong password, a role or database that does not exist: refusals, not outages."""
    dsn = private_postgres.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE relay LOGIN PASSWORD 'right'")
    hba = private_postgres.data / "pg_hba.conf"
    hba.write_text(f"host all relay {HOST}/32 scram-sha-256\n" + hba.read_text())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")
    for wrong, reason in [(dsn.replace("postgres@", "relay:wrong@"), 'password authentication failed for user "relay"'),
                          (dsn.replace("postgres@", "nobody@"), 'role "nobody" does not exist'),
                          (dsn.rsplit("/", 1)[0] + "/nothing", 'database "nothing" does not exist')]:
        config = write_relay_config(tmp_path / "refused.yaml", kafka_bootstrap, wrong, "outbox", "app")
        for extra in ([], ["--check"], ["--create-table"]):
            began = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "processor", "outbox", "-c", str(config), *extra],
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert "the database refuses the relay" in done.stderr and reason in done.stderr, done.stderr
            assert "wrong" not in done.stderr  # the password is not repeated
            assert time.monotonic() - began < 15


def test_the_example_from_the_database_to_the_invoices_exactly_once():
    """examples/outbox as users run it (its own PostgreSQL and broker), with a kill -9 of the
    relay and of the invoicer while orders flow."""
    done = subprocess.run([sys.executable, "-m", "examples.outbox.demo", "--orders", "1500", "--kills", "1"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "OK: every committed order was invoiced exactly once" in done.stdout
