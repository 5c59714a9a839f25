"""The outbox end to end: PostgreSQL -> `processor outbox` -> Kafka -> invoicing -> invoices.

    python -m examples.outbox.demo [--orders 3000] [--decline-rate 0.1] [--kills 2]

Starts a local PostgreSQL (Debian's, in a temporary directory) and a local broker, creates
the tables and topics, runs the relay (config/outbox-relay.yaml) and the invoicer
(config/outbox-invoicer.yaml), places orders from four writers (some declined: rolled back
with their event), kills the relay and the invoicer with kill -9 `--kills` times each while
orders flow, and checks with read_committed that every committed order has exactly one
invoice and no declined order has one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg

from examples.demo import demo_broker, verdict
from examples.outbox.service import SCHEMA, Declined, place_order
from localkafka.clients import create_topics, read_all, wait_for
from localpg import LocalPostgres

ROOT = Path(__file__).resolve().parent.parent.parent
WRITERS = 4


class Service:
    """A process of the demo (`processor outbox` or `processor run`), started again after a kill."""

    def __init__(self, command: str, config: str, env: dict, log: Path):
        self.args = [sys.executable, "-m", "processor", command, "-c", str(ROOT / "config" / config)]
        self.env, self.log, self.proc = env, log, None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def place_orders(dsn: str, orders: int, decline_rate: float) -> None:
    def write(n: int) -> None:
        rng = random.Random(n)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for i in range(n, orders, WRITERS):
                try:
                    place_order(conn, f"ord-{i:06d}", f"c-{rng.randrange(300):03d}", rng.randrange(100, 50_000),
                                declined=rng.random() < decline_rate)
                except Declined:
                    pass
                time.sleep(rng.random() * 0.004)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--decline-rate", type=float, default=0.1)
    parser.add_argument("--kills", type=int, default=2, help="kill -9s of the relay and of the invoicer each")
    args = parser.parse_args()
    database = LocalPostgres()
    try:
        dsn = database.start()
        with demo_broker("outbox-demo-") as (workdir, bootstrap):
            print(f"PostgreSQL at {dsn} (data in {database.dir})")
            env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "OUTBOX_DSN": dsn, "METRICS_PORT": "0",
                   "STATE_DIR": str(workdir / "state")}
            subprocess.run([sys.executable, "-m", "processor", "outbox", "-c", str(ROOT / "config/outbox-relay.yaml"),
                            "--create-table"], cwd=ROOT, env=env, check=True)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(SCHEMA)
            create_topics(bootstrap, ["outbox.order", "invoices", "invoicer-dlq"], partitions=3)
            relay = Service("outbox", "outbox-relay.yaml", env, workdir / "relay.log")
            invoicer = Service("run", "outbox-invoicer.yaml", env, workdir / "invoicer.log")
            relay.start()
            invoicer.start()
            began = time.monotonic()
            writing = threading.Thread(target=place_orders, args=(dsn, args.orders, args.decline_rate))
            writing.start()
            rng = random.Random(1)
            for _ in range(args.kills):
                for service in (relay, invoicer):
                    time.sleep(rng.uniform(0.5, 2.0))  # a random moment while orders flow
                    service.kill()
                    service.start()
            writing.join()
            with psycopg.connect(dsn, autocommit=True) as conn:
                committed = {row[0] for row in conn.execute("SELECT id FROM orders")}
            wait_for(lambda: len(read_all(bootstrap, "invoices")) >= len(committed), 300,
                     "an invoice for every committed order", interval=1.0)
            elapsed = time.monotonic() - began
            codes = {"relay": relay.stop(), "invoicer": invoicer.stop()}
            invoices = Counter(json.loads(r.value)["order_id"] for r in read_all(bootstrap, "invoices"))
            declined = args.orders - len(committed)
            twice = sum(1 for n in invoices.values() if n > 1)
            stray = set(invoices) - committed
            print(f"{args.orders} orders placed ({declined} declined, rolled back with their event), "
                  f"relay and invoicer each killed {args.kills} times, in {elapsed:.1f}s; exit codes {codes}")
            print(f"read_committed: {len(invoices)} orders invoiced of {len(committed)} committed; "
                  f"{twice} invoiced twice, {len(stray)} invoices for orders not committed")
            return verdict(set(invoices) == committed and not twice and not any(codes.values()),
                           "every committed order was invoiced exactly once, and no declined one")
    finally:
        database.remove()


if __name__ == "__main__":
    sys.exit(main())
