"""The booking saga: a trip's hotel, flight and car reserved at three services, or none.

`orchestrator.py` runs the saga (processor deployment `booking-orchestrator`), `service.py`
the three services (`booking-hotel`, `booking-flight`, `booking-car`), `demo.py` all of them
on a local broker. Every topic is keyed by the booking id, so a booking's requests, commands
and replies share a partition number (the topics have the same partition count).

Faults to turn up, for the services (seeded, so a run can be repeated): BOOKING_DECLINE_RATE
(a reserve declined), BOOKING_SLOW_RATE (a reserve handled only after BOOKING_SLOW_MS, longer
than the step timeout: the saga cancels it meanwhile, and the cancel may come first), and for
the orchestrator BOOKING_DUPLICATE_RATE (a command sent twice).
"""

from __future__ import annotations

import hashlib
import os

REQUESTS, COMMANDS, REPLIES = "booking-requests", "booking-commands", "booking-replies"
RESULTS, RESERVATIONS = "booking-results", "reservations"
TOPICS = [REQUESTS, COMMANDS, REPLIES, RESULTS, RESERVATIONS]
STEPS = ("hotel", "flight", "car")


def setting(name: str, default: float) -> float:
    return float(os.environ.get(f"BOOKING_{name}", default))


def chance(*parts: str) -> float:
    """A number in [0, 1) fixed by `parts` and BOOKING_SEED: a fault decided once per command,
    the same when the command is processed again."""
    seed = os.environ.get("BOOKING_SEED", "7")
    digest = hashlib.sha256("/".join((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64
