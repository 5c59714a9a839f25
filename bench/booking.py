"""Bookings completed per second: the booking saga (examples/booking) with its three services,
five processes on one local broker, no faults.

    python -m bench.booking --bookings 20000 --rounds 2

Each round feeds N bookings to fresh topics before the orchestrator and the hotel, flight
and car services start, and measures from the first result to the last (start-up left
out: the time runs from the first command's timestamp to the last result's). Every booking takes 4 inputs at the orchestrator (its request, 3 replies) and 3
commands at each service, each step a round trip through two transactions. The baseline of
each round is the naive transactional pass-through loop (bench/naive_copy.py) over 4N
records of the same size: figures are bookings/s and their ratio to its records/s, medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from confluent_kafka import Consumer, KafkaError

from bench.run import PARTITIONS, ROOT, local_broker, run_one
from examples.booking import COMMANDS, RESULTS
from examples.booking.deployment import Deployment, bookings
from localkafka.clients import create_topics, end_offsets, produce, unique_name, wait_for


def booking_round(bootstrap: str, workdir: Path, count: int, round_no: int) -> float:
    """Bookings/s of one deployment, from its first result to its last."""
    rundir = workdir / f"booking-{round_no}"
    rundir.mkdir()
    deployment = Deployment(bootstrap, rundir, partitions=PARTITIONS)
    deployment.create_topics()
    requests = bookings(count, seed=round_no)
    deployment.feed(requests)
    deployment.start_all()

    def done() -> bool:
        if deployment.exited():
            raise RuntimeError(f"a booking process exited: {deployment.exited()}; logs in {rundir}")
        return sum(end_offsets(bootstrap, RESULTS).values()) >= count and deployment.results() >= count

    try:
        wait_for(done, 900, "every booking's result", interval=1.0)
    finally:
        deployment.stop_all()
    began, ended = min(times(bootstrap, COMMANDS)), max(times(bootstrap, RESULTS))
    return count / ((ended - began) / 1000)


def times(bootstrap: str, topic: str) -> list[int]:
    """When each record of `topic` was produced (ms): the rate comes from the records (the
    first command sent to the last result), not from polling."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("times"),
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    consumer.subscribe([topic])
    stamps, ended = [], set()
    try:
        while len(ended) < PARTITIONS:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is None:
                    stamps.append(msg.timestamp()[1])
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(msg.partition())
    finally:
        consumer.close()
    return stamps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "booking.json")
    args = parser.parse_args()
    rates, ratios = [], []
    for round_no in range(args.rounds):
        with local_broker("bench-booking-") as (workdir, bootstrap):  # the topic names are fixed
            source = unique_name("bench-copy")
            create_topics(bootstrap, [source], PARTITIONS)
            sample = bookings(args.bookings * 4, seed=99)
            produce(bootstrap, source, sample)
            naive, _ = run_one(bootstrap, lambda src, dst, group: [sys.executable, "-m", "bench.naive_copy",
                                                                    "txn", bootstrap, src, dst, group],
                               source, workdir)
            rate = booking_round(bootstrap, workdir, args.bookings, round_no)
        rates.append(rate)
        ratios.append(rate / naive)
        print(f"round {round_no + 1}: {rate:8,.0f} bookings/s; naive-txn {naive:10,.0f} records/s; "
              f"ratio {rate / naive:.4f}", flush=True)
    print(f"\nbookings/s (median of {args.rounds}): {statistics.median(rates):,.0f}, "
          f"{statistics.median(ratios):.4f} of the naive transactional loop's records/s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"bookings": args.bookings, "partitions": PARTITIONS, "rounds": args.rounds,
                                     "bookings_per_s": statistics.median(rates),
                                     "ratio_to_naive_txn_records": statistics.median(ratios),
                                     "rates_by_round": [round(r) for r in rates]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
