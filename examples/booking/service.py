"""A booking service (hotel, flight or car): reserves and cancels, each command once.

It reads every command of `booking-commands` and acts on its own step's: its ledger (store
`ledger`, by booking) says what it holds; each change goes to `reservations`
(`{booking_id, step, state: reserved|released}`) and each command gets a reply on
`booking-replies`. A command seen before (store `commands`, by command_id) is answered
again as the first time, and changes nothing. A cancel that comes before its reserve is
remembered, and the reserve is then declined: nothing stays reserved. Config:
config/booking-service.yaml, with BOOKING_SERVICE naming the service.
"""

from __future__ import annotations

from examples.booking import REPLIES, RESERVATIONS, chance, setting
from processor import Output, Poison, Record, Timer

DEFERRED = "deferred"  # the timer of a reserve handled late (a slow service)


def serve(step: str):
    """The transform of the service for `step`."""

    def transform(call: Record | Timer) -> list[Output]:
        if isinstance(call, Timer):  # a deferred reserve, handled now
            outputs = handle(call, call.payload)
            for n, out in enumerate(outputs):  # which firing each came of: a timer fires once
                out.headers = [("booking.timer", f"{call.name}/{call.key}/{call.due_ms}#{n}".encode())]
            return outputs
        command = call.value
        if not isinstance(command, dict) or command.get("action") not in ("reserve", "cancel"):
            raise Poison("a command needs booking_id, step, action reserve or cancel, and command_id")
        if command["step"] != step:
            return []
        slow = chance(command["command_id"], "slow") < setting("SLOW_RATE", 0.0)
        if command["action"] == "reserve" and slow and command["command_id"] not in call.state("commands"):
            call.timers.schedule(DEFERRED, after_ms=int(setting("SLOW_MS", 10_000)),
                                 key=command["command_id"], payload=command)
            return []
        return handle(call, command)

    def handle(call: Record | Timer, command: dict) -> list[Output]:
        booking_id, command_id = command["booking_id"], command["command_id"]
        seen, ledger = call.state("commands"), call.state("ledger")
        outcome = seen.get(command_id)
        outputs = []
        if outcome is None:
            outcome, change = act(ledger, booking_id, command)
            seen.set(command_id, outcome)
            if change:
                outputs.append(Output({"booking_id": booking_id, "step": step, "state": change},
                                      key=booking_id, topic=RESERVATIONS, headers=[]))
        reply = {**command, "outcome": outcome}
        return [*outputs, Output(reply, key=booking_id, topic=REPLIES, headers=[])]

    def act(ledger, booking_id: str, command: dict) -> tuple[str, str | None]:
        """The outcome of a command seen for the first time, and the ledger change it made."""
        held = ledger.get(booking_id)
        if command["action"] == "cancel":
            if held == "reserved":
                ledger.set(booking_id, "released")
                return "ok", "released"
            if held is None:
                ledger.set(booking_id, "cancelled")  # before its reserve: remember it
            return "ok", None
        if held is not None:  # cancelled first, or reserved already under another command
            return ("ok" if held == "reserved" else "declined"), None
        if chance(command["command_id"], "decline") < setting("DECLINE_RATE", 0.0):
            return "declined", None
        ledger.set(booking_id, "reserved")
        return "ok", "reserved"

    return transform


hotel, flight, car = serve("hotel"), serve("flight"), serve("car")
