"""Outbox rows published per second from a backlog (`processor outbox`, exactly once),
against the naive poller (bench/naive_outbox.py: SELECT, produce, DELETE; at least once), on
one local broker and one local PostgreSQL, in alternate rounds.

    python -m bench.outbox --rows 1000000 --rounds 2

Each contender drains its own table of `--rows` rows (~200-byte JSON payloads, 1,000
aggregates) into its own topic (3 partitions), 5,000 rows per batch (the relay's default).
Rates run from the first record to the last by their Kafka timestamps (start-up left out).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

from bench.run import PARTITIONS, ROOT, Rounds, local_broker, record_times, round_parser
from localkafka.clients import create_topics, unique_name
from localpg import LocalPostgres
from processor.outbox.table import OutboxTable
from tests.outboxes import table_name, write_relay_config

BATCH = 5000
AGGREGATES = 1000


def backlog(dsn: str, rows: int) -> tuple[str, str]:
    """A new outbox table of `rows` committed rows and its topic: (table, topic)."""
    table = table_name()
    aggregatetype = unique_name("order").replace("-", "_")
    OutboxTable(dsn, table, 30, threading.Event()).create()
    pad = "x" * 150
    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
        for start in range(0, rows, 100_000):  # a transaction per 100,000 rows, as a busy service
            with conn.transaction(), cur.copy(f"COPY {table} (id, aggregatetype, aggregateid, type, payload) "
                                              "FROM STDIN") as copy:
                for i in range(start, min(rows, start + 100_000)):
                    copy.write_row((uuid.uuid4(), aggregatetype, f"order-{i % AGGREGATES}", "created",
                                    f'{{"order": {i}, "pad": "{pad}"}}'))
        conn.execute(f"VACUUM ANALYZE {table}")
    topic = f"outbox.{aggregatetype}"
    return table, topic


def drained(dsn: str, table: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {table})").fetchone()[0]


def rate_of(bootstrap: str, topic: str, rows: int) -> float:
    stamps = record_times(bootstrap, topic)
    assert len(stamps) == rows, f"{len(stamps)} published of {rows}"
    return rows / ((max(stamps) - min(stamps)) / 1000)


def relay_rate(bootstrap: str, dsn: str, workdir: Path, rows: int) -> float:
    table, topic = backlog(dsn, rows)
    create_topics(bootstrap, [topic], PARTITIONS)
    config = write_relay_config(workdir / f"{table}.yaml", bootstrap, dsn, table, table, batch_rows=BATCH)
    with open(workdir / f"{table}.log", "wb") as log:
        relay = subprocess.Popen([sys.executable, "-m", "processor", "outbox", "-c", str(config)], cwd=ROOT,
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        while not drained(dsn, table):
            if relay.poll() is not None:
                raise RuntimeError(f"the relay ended ({relay.returncode}): see {workdir / f'{table}.log'}")
            time.sleep(0.5)
    finally:
        relay.terminate()
        relay.wait(60)
    return rate_of(bootstrap, topic, rows)


def naive_rate(bootstrap: str, dsn: str, rows: int) -> float:
    table, topic = backlog(dsn, rows)
    create_topics(bootstrap, [topic], PARTITIONS)
    subprocess.run([sys.executable, "-m", "bench.naive_outbox", bootstrap, dsn, table, str(BATCH)],
                   cwd=ROOT, check=True)
    return rate_of(bootstrap, topic, rows)


def main() -> int:
    args = round_parser(__doc__, "rows", 1_000_000, "outbox.json").parse_args()
    rounds = Rounds("outbox rows", baseline="naive-poller", baseline_what="rows",
                    baseline_is="the naive poller")
    database = LocalPostgres()
    try:
        dsn = database.start()
        with local_broker("bench-outbox-") as (workdir, bootstrap):
            for n in range(args.rounds):  # the order alternates: neither always drains a fresh server
                if n % 2 == 0:
                    naive = naive_rate(bootstrap, dsn, args.rows)
                    relay = relay_rate(bootstrap, dsn, workdir, args.rows)
                else:
                    relay = relay_rate(bootstrap, dsn, workdir, args.rows)
                    naive = naive_rate(bootstrap, dsn, args.rows)
                rounds.add(relay, naive)
    finally:
        database.remove()
    rounds.summarize(args.json, {"rows": args.rows, "batch_rows": BATCH})
    return 0


if __name__ == "__main__":
    sys.exit(main())
