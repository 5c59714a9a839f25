"""A two-step saga as docs/state.md shows it, for `processor check` (tests/unit/test_config.py)."""

from __future__ import annotations

from processor import Command, Output, Record, Saga, Step, Timer


def command(c: Command) -> Output:
    return Output({"id": c.saga_id, "step": c.step, "action": c.action, "command_id": c.command_id},
                  key=c.saga_id, topic="transfer-commands")


transfer = Saga("check-transfer", store="sagas", on_end=lambda end: Output(
                    {"id": end.saga_id, "status": end.status, "reason": end.reason}, key=end.saga_id),
                steps=[Step("debit", command, command, timeout_ms=5_000),
                       Step("credit", command, command, timeout_ms=5_000)])


def transform(call: Record | Timer):
    if isinstance(call, Timer):
        return transfer.on_timer(call)
    if call.topic == "transfer-requests":
        return transfer.start(call, call.value["id"], call.value)
    reply = call.value
    return transfer.on_reply(call, reply["id"], reply["command_id"], ok=reply["outcome"] == "ok")
