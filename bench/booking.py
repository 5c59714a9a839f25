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

import sys
from pathlib import Path


from bench.run import PARTITIONS, Rounds, round_parser, local_broker, naive_txn_rate, record_times
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
    began, ended = min(record_times(bootstrap, COMMANDS)), max(record_times(bootstrap, RESULTS))
    return count / ((ended - began) / 1000)


def main() -> int:
    args = round_parser(__doc__, "bookings", 20_000, "booking.json").parse_args()
    rounds = Rounds("bookings")
    for round_no in range(args.rounds):
        with local_broker("bench-booking-") as (workdir, bootstrap):  # the topic names are fixed
            source = unique_name("bench-copy")
            create_topics(bootstrap, [source], PARTITIONS)
            sample = bookings(args.bookings * 4, seed=99)
            produce(bootstrap, source, sample)
            naive = naive_txn_rate(bootstrap, source, workdir)
            rate = booking_round(bootstrap, workdir, args.bookings, round_no)
        rounds.add(rate, naive)
    rounds.summarize(args.json, {"bookings": args.bookings})
    return 0


if __name__ == "__main__":
    sys.exit(main())
