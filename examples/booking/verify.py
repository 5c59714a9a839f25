"""Reading a booking run back (read_committed) and checking what the saga promises.

Every booking has exactly one result; CONFIRMED means exactly one net reservation at each
service, CANCELLED none at any; no service ever held two reservations for one booking step;
no timer fired twice (outputs of timer calls carry `saga.timer` / `booking.timer` headers
naming the firing and the output's place in it); nothing was dead-lettered. It also counts
the bookings cancelled as timed out whose service had answered in time (its reply appended
before the command's timestamp plus the step timeout, less 100 ms).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from examples.booking import COMMANDS, REPLIES, RESERVATIONS, RESULTS, STEPS
from localkafka.clients import read_all


@dataclass
class BookingVerdict:
    bookings: int
    results: Counter = field(default_factory=Counter)  # by status
    reasons: Counter = field(default_factory=Counter)  # of cancellations, by step and cause
    missing: list[str] = field(default_factory=list)  # bookings without a result
    repeated: list[str] = field(default_factory=list)  # bookings with more than one result
    unknown: list[str] = field(default_factory=list)  # results of bookings never requested
    wrong_holdings: list[tuple] = field(default_factory=list)  # (booking, step, net held, status)
    held_twice: list[tuple] = field(default_factory=list)  # (booking, step) reserved twice at once
    timers_twice: list[str] = field(default_factory=list)  # timer firings seen twice
    timed_out_in_time: list[tuple] = field(default_factory=list)  # (booking, step) answered in time
    dead_letters: int = 0

    @property
    def ok(self) -> bool:
        # timed_out_in_time is counted, not failed: a reply appended within a fetch's latency
        # before the due time can still lose (the processor learns of it after the timer fired)
        return not (self.missing or self.repeated or self.unknown or self.wrong_holdings
                    or self.held_twice or self.timers_twice or self.dead_letters)

    def __str__(self) -> str:
        def some(items: list) -> str:
            return f"{len(items)}{' e.g. ' + str(items[:3]) if items else ''}"
        return (f"{self.bookings} bookings: {dict(self.results)}; missing {some(self.missing)}, "
                f"repeated {some(self.repeated)}, unknown {some(self.unknown)}, wrong holdings "
                f"{some(self.wrong_holdings)}, held twice {some(self.held_twice)}, timers fired twice "
                f"{some(self.timers_twice)}, timed out though answered in time "
                f"{some(self.timed_out_in_time)}, dead letters {self.dead_letters}")


IN_TIME_MARGIN_MS = 100


def verify_bookings(bootstrap: str, booking_ids: list[str], dead_letter_topic: str,
                    step_timeout_ms: int) -> BookingVerdict:
    verdict = BookingVerdict(len(booking_ids))
    status: dict[str, str] = {}
    reasons: dict[str, str] = {}
    seen: Counter = Counter()
    for record in read_all(bootstrap, RESULTS):
        result = json.loads(record.value)
        seen[result["booking_id"]] += 1
        status[result["booking_id"]] = result["status"]
        reasons[result["booking_id"]] = result["reason"] or ""
        verdict.results[result["status"]] += 1
        if result["reason"]:
            verdict.reasons[result["reason"]] += 1
    requested = set(booking_ids)
    verdict.missing = sorted(requested - set(seen))
    verdict.repeated = sorted(b for b, n in seen.items() if n > 1)
    verdict.unknown = sorted(set(seen) - requested)
    held: Counter = Counter()
    for record in read_all(bootstrap, RESERVATIONS):
        change = json.loads(record.value)
        where = (change["booking_id"], change["step"])
        held[where] += 1 if change["state"] == "reserved" else -1
        if held[where] > 1:
            verdict.held_twice.append(where)
    wanted = {"CONFIRMED": 1, "CANCELLED": 0}
    for booking, result in status.items():
        for step in STEPS:
            if held[(booking, step)] != wanted[result]:
                verdict.wrong_holdings.append((booking, step, held[(booking, step)], result))
    firings: Counter = Counter()
    for topic in (COMMANDS, REPLIES, RESERVATIONS):
        for record in read_all(bootstrap, topic):
            for name in ("saga.timer", "booking.timer"):
                if name in record.headers:
                    firings[(topic, record.headers[name])] += 1
    verdict.timers_twice = sorted(f"{topic}: {tag.decode()}" for (topic, tag), n in firings.items() if n > 1)
    verdict.timed_out_in_time = _timed_out_in_time(bootstrap, step_timeout_ms, status, reasons)
    verdict.dead_letters = len(read_all(bootstrap, dead_letter_topic))
    return verdict


def _timed_out_in_time(bootstrap: str, step_timeout_ms: int, status: dict[str, str],
                       reasons: dict[str, str]) -> list[tuple]:
    """Bookings cancelled as "<step> timed out" whose reserve was answered in time."""
    timed_out = {(booking, reason.split()[0]) for booking, reason in reasons.items()
                 if reason.endswith(" timed out") and status.get(booking) == "CANCELLED"}
    sent, answered = {}, {}
    for topic, first in ((COMMANDS, sent), (REPLIES, answered)):
        for record in read_all(bootstrap, topic):
            message = json.loads(record.value)
            where = (message["booking_id"], message["step"])
            if where in timed_out and message["action"] == "reserve":
                first[where] = min(first.get(where, record.timestamp), record.timestamp)
    return sorted(where for where in timed_out if where in sent and where in answered
                  and answered[where] < sent[where] + step_timeout_ms - IN_TIME_MARGIN_MS)

