"""The booking saga end to end: a local Kafka, the orchestrator, three services, a summary.

    python -m examples.booking.demo [--bookings 1000] [--decline-rate 0.05] [--slow-rate 0.02]

Starts a fresh broker in a temporary directory, creates the booking topics, starts the
orchestrator and the hotel, flight and car services (`processor run` with
config/booking-orchestrator.yaml and config/booking-service.yaml), feeds the bookings, waits
for every result, stops everything with SIGTERM and checks the outcome read back with
read_committed (examples/booking/verify.py).
"""

from __future__ import annotations

import argparse
import sys
import time

from examples.booking.deployment import DEAD_LETTERS, Deployment, bookings
from examples.booking.verify import verify_bookings
from examples.demo import demo_broker, verdict
from localkafka.clients import wait_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bookings", type=int, default=1000)
    parser.add_argument("--decline-rate", type=float, default=0.05)
    parser.add_argument("--slow-rate", type=float, default=0.02, help="reserves handled after the step timeout")
    parser.add_argument("--duplicate-rate", type=float, default=0.02, help="commands sent twice")
    args = parser.parse_args()
    faults = {"BOOKING_DECLINE_RATE": str(args.decline_rate), "BOOKING_SLOW_RATE": str(args.slow_rate),
              "BOOKING_DUPLICATE_RATE": str(args.duplicate_rate), "BOOKING_STEP_TIMEOUT_MS": "3000",
              "BOOKING_SLOW_MS": "6000"}
    with demo_broker("booking-demo-") as (workdir, bootstrap):
        deployment = Deployment(bootstrap, workdir, faults)
        deployment.create_topics()
        deployment.start_all()
        requests = bookings(args.bookings)
        began = time.monotonic()
        deployment.feed(requests)
        print(f"fed {len(requests)} bookings; faults: {faults}")
        wait_for(lambda: deployment.exited() or deployment.results() >= len(requests), 600,
                 "a result for every booking", interval=1.0)
        elapsed = time.monotonic() - began
        codes = deployment.stop_all()
        checked = verify_bookings(bootstrap, [key.decode() for key, _ in requests], DEAD_LETTERS,
                                  step_timeout_ms=int(faults["BOOKING_STEP_TIMEOUT_MS"]))
        print(f"{len(requests)} bookings ended in {elapsed:.1f}s ({len(requests) / elapsed:.0f}/s); "
              f"exit codes {codes}")
        print(f"read_committed: {checked}")
        print("cancellations by reason: " + ", ".join(f"{n} {r}" for r, n in checked.reasons.most_common()))
        return verdict(checked.ok and not any(codes.values()),
                       "every booking ended once, with its reservations settled")


if __name__ == "__main__":
    sys.exit(main())
