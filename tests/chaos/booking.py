"""Chaos for the booking saga: kill -9 of the orchestrator and of each service at random
moments, a hard broker restart, declines, slow services and duplicated commands.

    python -m tests.chaos.booking --bookings 20000 --seed 7 --faults 20 --feed-seconds 120

Feeds the bookings over `--feed-seconds` to the deployment of examples/booking (orchestrator,
hotel, flight and car, each a `processor run`), injects the faults (every process killed at
least once, then at random; a broker restart), waits for a result per booking and checks
them read back with read_committed (examples/booking/verify.py). Prints a summary.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from examples.booking import REQUESTS
from examples.booking.deployment import DEAD_LETTERS, ROLES, Deployment, bookings
from examples.booking.verify import BookingVerdict, verify_bookings
from localkafka import LocalBroker
from localkafka.clients import wait_for
from tests.feeder import Feeder

FAULTS = {"BOOKING_DECLINE_RATE": "0.05", "BOOKING_SLOW_RATE": "0.03", "BOOKING_DUPLICATE_RATE": "0.03",
          "BOOKING_STEP_TIMEOUT_MS": "3000", "BOOKING_SLOW_MS": "6000"}


@dataclass
class BookingSummary:
    bookings: int
    faults: Counter = field(default_factory=Counter)
    verdict: BookingVerdict | None = None
    bad_exits: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return self.verdict is not None and self.verdict.ok and not self.bad_exits

    def __str__(self) -> str:
        faults = ", ".join(f"{n} {k}" for k, n in sorted(self.faults.items())) or "none"
        return (f"booking chaos: {self.bookings} bookings, faults: {faults}; {self.verdict}; "
                f"bad exits {self.bad_exits or 'none'}; {self.elapsed:.0f}s -> "
                f"{'OK' if self.ok else 'FAILED'}")


def run(workdir: Path, count: int, seed: int, faults: int, feed_seconds: float) -> BookingSummary:
    """`faults` kills and restarts in all: each process is killed once, one broker restart,
    the rest at random."""
    began = time.monotonic()
    rng = random.Random(seed)
    summary = BookingSummary(count)
    broker = LocalBroker(workdir / "kafka")
    bootstrap = broker.start()
    deployment = Deployment(bootstrap, workdir, {**FAULTS, "BOOKING_SEED": str(seed)})
    try:
        deployment.create_topics()
        deployment.start_all()
        requests = bookings(count, seed)
        feeder = Feeder(bootstrap, REQUESTS, [SimpleNamespace(key=k, value=v) for k, v in requests],
                        feed_seconds)
        plan = [*ROLES, "broker"]
        plan = rng.sample(plan, len(plan)) + [rng.choice([*ROLES, "broker"]) for _ in range(faults - len(plan))]
        for fault in plan[:faults]:
            wait_for(lambda: rng.random() < 0.1, 30, "a random moment", interval=0.2)
            for role, code in deployment.exited().items():
                summary.bad_exits.append(f"{role} exited {code} by itself")
                deployment.procs.pop(role)
                deployment.start(role)
            if fault == "broker":
                broker.restart(hard=True)
            else:
                deployment.kill(fault)
                deployment.start(fault)
            summary.faults["broker restart" if fault == "broker" else f"kill {fault}"] += 1
        feeder.finish()
        _wait_for_results(deployment, count)
        for role, code in deployment.stop_all().items():
            if code:
                summary.bad_exits.append(f"{role} exited {code}")
        summary.verdict = verify_bookings(bootstrap, [key.decode() for key, _ in requests], DEAD_LETTERS,
                                          step_timeout_ms=int(FAULTS["BOOKING_STEP_TIMEOUT_MS"]))
    finally:
        for proc in deployment.procs.values():
            proc.kill()
        broker.stop()
    summary.elapsed = time.monotonic() - began
    return summary


def _wait_for_results(deployment: Deployment, count: int, stall_s: float = 120.0) -> None:
    """Until every booking has its result; results that stop coming for `stall_s` get the
    processes' stacks into their logs, and a TimeoutError."""
    seen = [-1, time.monotonic()]

    def done() -> bool:
        results = deployment.results()
        if results >= count or deployment.exited():
            return True
        if results > seen[0]:
            seen[:] = [results, time.monotonic()]
        elif time.monotonic() - seen[1] > stall_s:
            deployment.dump_stacks()
            raise TimeoutError(f"results stopped at {results} of {count} for {stall_s:.0f}s "
                               f"(stacks in the logs)")
        return False
    wait_for(done, 900, "a result for every booking", interval=2.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument("--feed-seconds", type=float, default=120.0)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="booking-chaos-"))
    summary = run(workdir, args.bookings, args.seed, args.faults, args.feed_seconds)
    print(summary)
    print(f"logs in {workdir}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
