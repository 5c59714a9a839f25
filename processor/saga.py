"""Sagas: steps done in order at other services, undone in reverse order when one fails.

A saga sends each step's command, waits for its reply (a timer bounds the wait), and moves
on; when a step is declined or times out, it sends the compensations of the steps done so
far, last first (a step that timed out is compensated too: its command may still land),
resending each until it is acknowledged (compensations must be idempotent). Each saga's
state is one entry in a store, so every move (state change, commands out, the input or
timer that caused it) is one transaction: exactly once, through crashes and rebalances.

Commands carry a `command_id` made of the saga id, the step and the action: the same on
every resend, so a service can recognise repeats; a reply is matched to the command the
saga waits for by it, and anything else (a late reply, a duplicate) is ignored.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from processor.hooks import Hooks
from processor.state.store import wall_ms
from processor.transform import Output, Record, Timer, Call

log = logging.getLogger("processor.saga")
SAGAS: dict[str, Saga] = {}  # every saga defined in this process, by name (for the metrics)
_COUNTS = "#counts"  # per partition: sagas by state, kept in the same transactions as the sagas
_STARTED = "@started/"  # per partition: running sagas by start time (to count the stuck ones)
_OWN_KEYS = "#@%"  # the first characters of the saga's own keys, and of the escape


@dataclass(frozen=True, slots=True)
class Command:
    """What a step's `command` or `compensation` is given to build its Output."""

    saga_id: str
    step: str
    action: str  # "do" or "compensate"
    command_id: str
    data: Any  # what the saga was started with


@dataclass(frozen=True, slots=True)
class Ended:
    """What `on_end` is given: the saga's end."""

    saga_id: str
    status: str  # CONFIRMED | CANCELLED
    reason: str | None
    data: Any


Builder = Callable[[Command], Output | Iterable[Output]]


@dataclass(frozen=True)
class Step:
    name: str
    command: Builder  # the Output(s) that ask a service to do the step
    compensation: Builder  # the Output(s) that ask it to undo the step
    timeout_ms: int = 30_000  # without a reply by then, the saga is cancelled


@dataclass
class Saga:
    """`name` (unique in the process; its timers are named `saga.<name>`), `store` (a store
    of the config's state section; its `ttl_ms`, if any, must outlast the longest saga),
    `steps` in order, `on_end(Ended)` the Output(s) reporting the end. Compensations are
    resent after `retry_ms`, doubling up to `max_retry_ms`. Sagas running longer than
    `stuck_after_ms` are counted as stuck in `processor_sagas{saga,state="stuck"}`."""

    name: str
    store: str
    steps: list[Step]
    on_end: Callable[[Ended], Output | Iterable[Output] | None]
    retry_ms: int = 2_000
    max_retry_ms: int = 60_000
    stuck_after_ms: int = 600_000

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError(f"saga {self.name!r} has no steps")
        if len({step.name for step in self.steps}) != len(self.steps):
            raise ValueError(f"saga {self.name!r} has two steps of the same name")
        if self.name in SAGAS:
            raise ValueError(f"a saga named {self.name!r} exists already")
        SAGAS[self.name] = self

    @property
    def timer_name(self) -> str:
        return f"saga.{self.name}"

    def owns(self, timer: Timer) -> bool:
        return timer.name == self.timer_name

    # -- what the transform calls --------------------------------------------------------
    def start(self, call: Record, saga_id: str, data: Any = None) -> list[Output]:
        """Start saga `saga_id` with `data` (JSON), sending its first command. A saga of that
        id that exists already (a repeated request) is left alone: nothing is sent."""
        store = call.state(self.store)
        if self._key(saga_id) in store:
            return []
        now = wall_ms()
        state = {"phase": "running", "step": 0, "data": data, "started_ms": now, "attempt": 0}
        store.set(self._started_key(now, saga_id), True)
        self._count(store, None, self.label(state))
        return self._send(call, store, saga_id, state, "do")

    def on_reply(self, call: Record, saga_id: str, command_id: str, ok: bool) -> list[Output]:
        """A service's answer to a command: `ok`, or not (declined). Answers to anything but
        the command the saga waits for are ignored (late, repeated, or for an ended saga)."""
        store = call.state(self.store)
        state = store.get(self._key(saga_id))
        if state is None or state["phase"] == "ended" or command_id != state["command_id"]:
            return []
        if state["phase"] == "running":
            if ok:
                return self._next(call, store, saga_id, state)
            step = state["step"]
            return self._compensate(call, store, saga_id, state, list(range(step - 1, -1, -1)),
                                    f"{self.steps[step].name} declined")
        if not ok:  # a compensation not done yet: resent when the timer fires
            return []
        return self._compensated(call, store, saga_id, state)

    def on_timer(self, timer: Timer) -> list[Output]:
        """The saga's timer (`owns(timer)`): a step's reply is overdue (cancel the saga), or
        a compensation's (send it again)."""
        if not self.owns(timer):
            raise ValueError(f"{timer!r} is not a timer of saga {self.name!r}")
        store = timer.state(self.store)
        saga_id = timer.key
        state = store.get(self._key(saga_id))
        if state is None or state["phase"] == "ended" or timer.payload != state["command_id"]:
            return []
        if state["phase"] == "running":
            step = state["step"]
            outputs = self._compensate(timer, store, saga_id, state, list(range(step, -1, -1)),
                                       f"{self.steps[step].name} timed out")
        else:
            state["attempt"] += 1
            outputs = self._send(timer, store, saga_id, state, "compensate")
        for n, out in enumerate(outputs):  # which firing each came of: a timer fires once
            tag = f"{timer.name}/{saga_id}/{timer.due_ms}#{n}".encode()
            out.headers = [*(out.headers or []), ("saga.timer", tag)]
        return outputs

    # -- moves -----------------------------------------------------------------------------
    def _next(self, call: Call, store, saga_id: str, state: dict) -> list[Output]:
        if state["step"] + 1 == len(self.steps):
            return self._end(call, store, saga_id, state, "CONFIRMED", None)
        before = dict(state)
        state.update(step=state["step"] + 1, attempt=0)
        self._count(store, self.label(before), self.label(state))
        return self._send(call, store, saga_id, state, "do")

    def _compensate(self, call: Call, store, saga_id: str, state: dict, steps: list[int],
                    reason: str) -> list[Output]:
        if not steps:
            return self._end(call, store, saga_id, state, "CANCELLED", reason)
        before = dict(state)
        state.update(phase="compensating", step=steps[0], undo=steps[1:], reason=reason, attempt=0)
        self._count(store, self.label(before), self.label(state))
        return self._send(call, store, saga_id, state, "compensate")

    def _compensated(self, call: Call, store, saga_id: str, state: dict) -> list[Output]:
        if not state["undo"]:
            return self._end(call, store, saga_id, state, "CANCELLED", state["reason"])
        before = dict(state)
        state.update(step=state["undo"][0], undo=state["undo"][1:], attempt=0)
        self._count(store, self.label(before), self.label(state))
        return self._send(call, store, saga_id, state, "compensate")

    def _send(self, call: Call, store, saga_id: str, state: dict, action: str) -> list[Output]:
        """The step's command (or compensation), its reply awaited until a timer."""
        step = self.steps[state["step"]]
        command_id = f"{saga_id}/{step.name}/{action}"
        state["command_id"] = command_id
        wait = step.timeout_ms if action == "do" else min(self.retry_ms << state["attempt"], self.max_retry_ms)
        call.timers.schedule(self.timer_name, after_ms=wait, key=saga_id, payload=command_id)
        store.set(self._key(saga_id), state)
        build = step.command if action == "do" else step.compensation
        return _listed(build(Command(saga_id, step.name, action, command_id, state["data"])))

    def _end(self, call: Call, store, saga_id: str, state: dict, status: str, reason: str | None) -> list[Output]:
        call.timers.cancel(self.timer_name, key=saga_id)
        store.delete(self._started_key(state["started_ms"], saga_id))
        self._count(store, self.label(state), status.lower())
        store.set(self._key(saga_id), {"phase": "ended", "status": status, "reason": reason,
                                       "command_id": None, "ended_ms": wall_ms()})
        log.info("saga %s %s ended: %s%s", self.name, saga_id, status, f" ({reason})" if reason else "",
                 extra={"saga": self.name, "saga_id": saga_id, "status": status})
        return _listed(self.on_end(Ended(saga_id, status, reason, state["data"])))

    # -- bookkeeping -----------------------------------------------------------------------
    def _key(self, saga_id: str) -> str:
        if not isinstance(saga_id, str) or not saga_id:
            raise ValueError(f"a saga id is a non-empty str, not {saga_id!r}")
        # the saga's own keys begin with "#" or "@": an id that does too (any client may pick
        # it) is escaped, so that no id names them ("%" escapes, and so is escaped itself)
        return f"{self.name}/{'%' if saga_id[0] in _OWN_KEYS else ''}{saga_id}"

    def _started_key(self, started_ms: int, saga_id: str) -> str:
        return f"{self.name}/{_STARTED}{started_ms:013d}/{saga_id}"

    def _count(self, store, before: str | None, after: str) -> None:
        """Move one saga from state `before` to `after` in the counts `processor_sagas` shows."""
        counts = store.get(f"{self.name}/{_COUNTS}") or {}
        if before is not None:  # absent if the counts outlived the store's ttl_ms unchanged
            counts[before] = max(counts.get(before, 0) - 1, 0)
        counts[after] = counts.get(after, 0) + 1
        store.set(f"{self.name}/{_COUNTS}", {label: n for label, n in counts.items() if n})

    def label(self, state: dict) -> str:
        """`running:<step>` or `compensating:<step>`."""
        return f"{state['phase']}:{self.steps[state['step']].name}"

    def counts(self, store) -> dict[str, int]:
        """Sagas of one store partition by state: running or compensating at a step, and
        ended ones (`confirmed`, `cancelled`) since the partition's first saga."""
        return store.get(f"{self.name}/{_COUNTS}") or {}

    def stuck(self, store, now_ms: int, limit: int = 100_000) -> int:
        """Sagas of one store partition running for longer than `stuck_after_ms`."""
        prefix = f"{self.name}/{_STARTED}"
        return len(store.keys_between(prefix, f"{prefix}{now_ms - self.stuck_after_ms:013d}", limit))


def _listed(result: Output | Iterable[Output] | None) -> list[Output]:
    """The Outputs of a builder, without the input's headers by default (a reply's headers
    are no part of the next command)."""
    outputs = [] if result is None else [result] if isinstance(result, Output) else list(result)
    for out in outputs:
        if out.headers is None:
            out.headers = []
    return outputs


class SagaGauges(Hooks):
    """Sets `processor_sagas{saga,state}` from the committed counts of the partitions held
    here, at most every `every_s`, between transactions (nothing of an open one shows): after
    a commit, and while the stream is idle (the last sagas' ends, and those turning stuck)."""

    def __init__(self, stores, gauge, every_s: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.stores, self.gauge, self.every_s, self.clock = stores, gauge, every_s, clock
        self.last = -every_s

    def after_commit(self, offsets) -> None:
        self.between()

    def between(self) -> None:
        if self.clock() - self.last >= self.every_s:
            self.refresh()

    def refresh(self) -> None:
        self.last = self.clock()
        partitions = sorted(self.stores.assigned_partitions() - set(self.stores.restoring))
        now = wall_ms()
        for saga in SAGAS.values():
            totals = {f"{phase}:{step.name}": 0 for phase in ("running", "compensating")
                      for step in saga.steps} | {"confirmed": 0, "cancelled": 0, "stuck": 0}
            for partition in partitions:
                store = self.stores.partition(saga.store, partition)
                for label, n in saga.counts(store).items():
                    totals[label] = totals.get(label, 0) + n
                totals["stuck"] += saga.stuck(store, now)
            for label, n in totals.items():
                self.gauge.labels(saga.name, label).set(n)
