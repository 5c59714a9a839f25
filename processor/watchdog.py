"""The watchdog thread: a process whose loop is stuck exits 1 rather than hang silently, so
that the orchestrator restarts it. Nothing is lost: the open transaction never commits.

Two ways to be stuck: a record that stays in the pipeline past its deadline (hangwatch.py:
marked in Kafka first, so that a record that keeps hanging gets dead-lettered), and a loop
that makes no progress at all, which is Kafka's doing (librdkafka calls can block past their
timeouts while Kafka is away: consume() after a lost assignment, seen with 2.16.0).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
import time
from collections.abc import Callable

from confluent_kafka import Message

from processor.hangmarks import REQUEST_TIMEOUT_S
from processor.hangwatch import EXIT_GRACE_S, HangWatch

log = logging.getLogger("processor")
EXIT_FATAL = 1
TICK_S = 1.0
# a thread that holds the GIL (a C extension, a runaway regular expression) stops this
# watchdog too: then faulthandler's own thread dumps the stacks and exits 1, this long later
GIL_HELD_EXIT_S = 60.0


def watch(progressed: Callable[[], float], stall_bound_s: float, hangs: HangWatch,
          mark: Callable[[Message], str]) -> None:
    """Run forever (in a daemon thread): `progressed()` is when the loop last moved on;
    `mark(msg)` records in Kafka that `msg` hung and says what it did."""
    reported = None
    while True:
        faulthandler.dump_traceback_later(hangs.deadline + EXIT_GRACE_S + GIL_HELD_EXIT_S, exit=True)
        time.sleep(TICK_S)
        stuck = hangs.sample()
        if stuck is not None and stuck.msg is not reported:
            reported = stuck.msg
            log.error("%s: /healthz fails; exit 1 in %.0fs unless it returns", hangs.problem(),
                      EXIT_GRACE_S)
        if hangs.overdue():
            what = stuck.describe(time.monotonic())
            log.error("stopping: %s; %s", what, _bounded_mark(mark, stuck.msg))
            _exit()
        stalled = time.monotonic() - progressed()
        if stalled > stall_bound_s:
            log.error("stopping: the processing loop has been stuck for %.0fs (Kafka unreachable?)",
                      stalled)
            _exit()


def _bounded_mark(mark: Callable[[Message], str], msg: Message) -> str:
    said: list[str] = []

    def attempt() -> None:
        try:
            said.append(mark(msg))
        except Exception as exc:  # noqa: BLE001 - the exit goes on; the record is tried again
            said.append(f"could not mark it in Kafka ({exc}): the next instance tries it again")

    thread = threading.Thread(target=attempt, name="mark-hung", daemon=True)
    thread.start()
    thread.join(4 * REQUEST_TIMEOUT_S)
    return said[0] if said else "marking it in Kafka did not finish in time: the next instance tries it again"


def _exit() -> None:
    logging.shutdown()
    os._exit(EXIT_FATAL)
