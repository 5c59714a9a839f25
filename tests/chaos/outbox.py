"""Chaos for the outbox relay: kill -9, SIGTERM and a second relay, database crashes and a
hard broker restart, while writers commit, roll back and commit out of order.

    python -m tests.chaos.outbox --transactions 20000 --faults 12 --seed 7

Writers (tests/outboxes.py) write `--transactions` transactions over a minute or so; faults
come at random moments meanwhile (half the database crashes in a quiet moment right after
rolled-back transactions, whose ids the database hands out again after it); a relay is always (re)started. At the end the published
records are checked against the ledger with read_committed: each committed row once, in
order per aggregate, nothing of a rolled-back transaction. A relay that exits with an
error nobody caused counts as a failure.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg

from localkafka import LocalBroker
from localkafka.clients import create_topics, read_all, wait_for
from localpg import CRASH_PRONE, LocalPostgres
from tests.outboxes import (Writers, check_published, create_tables, ledger, roll_back_then_crash, table_name,
                            unpublished, write_relay_config)
from tests.processes import ProcessorProcess

FAULTS = ("kill", "sigterm", "second relay", "database crash", "broker restart")


def run(workdir: Path, transactions: int, faults: int, seed: int) -> int:
    rng = random.Random(seed)
    broker, database = LocalBroker(workdir / "kafka"), LocalPostgres(CRASH_PRONE)
    began = time.monotonic()
    try:
        bootstrap, dsn = broker.start(), database.start()
        table = table_name()
        aggregatetype = "order"
        topic = f"outbox.{aggregatetype}"
        create_topics(bootstrap, [topic], 3)
        create_tables(dsn, table)
        config = write_relay_config(workdir / "relay.yaml", bootstrap, dsn, table, "chaos", batch_rows=500)
        relays: list[ProcessorProcess] = []
        expected_exits: set[int] = set()  # relays ended on purpose (or fenced by the second)

        def start() -> ProcessorProcess:
            relays.append(ProcessorProcess(config, f"r{len(relays)}", workdir / f"relay-{len(relays)}.log",
                                           command="outbox").start())
            return relays[-1]

        writers = Writers(dsn, table, aggregatetype, transactions, threads=4, pause_s=0.02, seed=seed).start()
        active = start()
        done: Counter = Counter()
        bad: list[str] = []
        rolled_back: list[int] = []  # ids rolled back right before a crash
        while not writers.done() and sum(done.values()) < faults:
            time.sleep(rng.uniform(1.0, 4.0))
            fault = FAULTS[len(done)] if len(done) < len(FAULTS) else rng.choice(FAULTS)
            if not active.running():  # a relay that ended by itself: say so, start another
                bad.append(f"{active.log_path.name} exited {active.proc.returncode}")
                active = start()
            if fault == "kill":
                active.kill()
                expected_exits.add(id(active))
                active = start()
            elif fault == "sigterm":
                code = active.terminate()
                expected_exits.add(id(active))
                if code != 0:
                    bad.append(f"{active.log_path.name}: SIGTERM ended with {code}")
                active = start()
            elif fault == "second relay":
                expected_exits.add(id(active))  # fenced: exits 1
                active = start()
            elif fault == "database crash":
                if done[fault] % 2 == 0:  # right after rolled-back transactions, in a quiet moment
                    with writers.quiet():
                        wait_for(lambda: unpublished(dsn, table) == 0 or not active.running(), 120,
                                 "the relay caught up", interval=0.1)
                        rolled_back += roll_back_then_crash(database)
                        database.start()
                else:
                    database.stop("immediate")
                    time.sleep(rng.uniform(0.5, 5.0))
                    database.start()
            else:
                broker.restart(hard=True)
            done[fault] += 1
            print(f"  {time.monotonic() - began:5.0f}s {fault}", flush=True)
        wait_for(lambda: writers.done(), 600, "the writers done", interval=1.0)
        try:
            wait_for(lambda: unpublished(dsn, table) == 0 or not active.running(), 300, "the table drained",
                     interval=1.0)
        except TimeoutError:
            bad.append(f"{unpublished(dsn, table)} committed rows never published")
        for relay in relays:
            if relay is not active and relay.running():
                bad.append(f"{relay.log_path.name} still running: it was fenced")
                relay.kill()
            elif relay is not active and id(relay) not in expected_exits:
                bad.append(f"{relay.log_path.name} exited {relay.proc.returncode}")
        if active.terminate() != 0:
            bad.append(f"{active.log_path.name}: the last relay did not stop cleanly")
        truth = ledger(dsn, table)
        try:
            check_published(bootstrap, topic, truth)
            verdict = "every committed row once, in order per aggregate, no rolled-back row"
        except AssertionError as exc:
            verdict = f"MISMATCH: {exc}"
            bad.append("records")
        records = len(read_all(bootstrap, topic))
        print(f"outbox chaos (seed {seed}): {len(truth)} rows committed of {transactions} transactions "
              f"({reissued(dsn, table, rolled_back)} under ids rolled back before a crash and handed out again), "
              f"{records} published; faults: {dict(done)}; {len(relays)} relays; {verdict}; "
              f"bad: {bad or 'none'}; {time.monotonic() - began:.0f}s -> {'FAILED' if bad else 'OK'}")
        return 1 if bad else 0
    finally:
        for relay in relays if "relays" in locals() else []:
            relay.kill()
        broker.stop()
        database.remove()


def reissued(dsn: str, table: str, ids: list[int]) -> int:
    """Committed rows whose transaction has an id rolled back before a crash (the ledger's
    xmin: the outbox rows are deleted once published)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}_ledger WHERE xmin::text::bigint = ANY(%s)",
                            ([i % 2**32 for i in ids],)).fetchone()[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--faults", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="outbox-chaos-"))
    print(f"work dir {workdir}", flush=True)
    return run(workdir, args.transactions, args.faults, args.seed)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
