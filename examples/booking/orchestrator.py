"""The booking orchestrator: one saga per booking request, hotel then flight then car.

Input: `booking-requests` (`{booking_id, hotel, flight, car}`) and `booking-replies`; output:
commands to `booking-commands` and one result per booking to `booking-results`
(`{booking_id, status: CONFIRMED|CANCELLED, reason}`). Config: config/booking-orchestrator.yaml.
"""

from __future__ import annotations

from examples.booking import COMMANDS, REQUESTS, RESULTS, STEPS, chance, setting
from processor import Command, Ended, Output, Poison, Record, Saga, Step, Timer

ACTIONS = {"do": "reserve", "compensate": "cancel"}


def command(c: Command) -> list[Output]:
    duplicated = chance(c.command_id, "duplicate") < setting("DUPLICATE_RATE", 0.0)
    return [Output({"booking_id": c.saga_id, "step": c.step, "action": ACTIONS[c.action],
                    "command_id": c.command_id}, key=c.saga_id, topic=COMMANDS)
            for _ in range(2 if duplicated else 1)]


def result(end: Ended) -> Output:
    return Output({"booking_id": end.saga_id, "status": end.status, "reason": end.reason},
                  key=end.saga_id, topic=RESULTS)


booking = Saga("booking", store="sagas",
               steps=[Step(name, command, command, timeout_ms=int(setting("STEP_TIMEOUT_MS", 5_000)))
                      for name in STEPS],
               on_end=result)


def transform(call: Record | Timer) -> list[Output]:
    if isinstance(call, Timer):
        return booking.on_timer(call)
    message = call.value
    if call.topic == REQUESTS:
        if not isinstance(message, dict) or not isinstance(message.get("booking_id"), str) \
                or any(step not in message for step in STEPS):
            raise Poison(f"a booking request needs booking_id and {', '.join(STEPS)}")
        return booking.start(call, message["booking_id"], message)
    if not isinstance(message, dict) or message.get("outcome") not in ("ok", "declined"):
        raise Poison("a reply needs booking_id, command_id and outcome ok or declined")
    return booking.on_reply(call, message["booking_id"], message["command_id"], ok=message["outcome"] == "ok")
