"""A record stuck in the pipeline, found by looking at the threads' stacks: the hot path
pays nothing for it.

The watchdog samples every second which record each thread is processing (the `msg` of the
pipeline loop's frame, `Pipeline.fill`). When one thread has been on the same record past
`processing.record_deadline_ms`, /healthz names it; `EXIT_GRACE_S` later the process marks
the record in Kafka (hangmarks.py) and exits 1. Calls through a dependency end at the record
deadline on their own: the grace lets them.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType, FrameType

from confluent_kafka import Message

from processor import codecs

EXIT_GRACE_S = 10.0


@dataclass(slots=True)
class Stuck:
    msg: Message
    stage: str
    since: float

    def describe(self, now: float) -> str:
        msg = self.msg
        return (f"record {msg.topic()} [{msg.partition()}] @{msg.offset()} has been in stage "
                f"{self.stage} for {now - self.since:.0f}s")


class HangWatch:
    def __init__(self, pipeline_code: CodeType, deadline_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.code, self.deadline, self.clock = pipeline_code, deadline_s, clock
        self.seen: dict[int, tuple[Message, float]] = {}  # thread id -> (record, first seen)
        self.stuck: Stuck | None = None

    def sample(self) -> Stuck | None:
        """Look at every thread; the record stuck longest past the deadline, if any."""
        now = self.clock()
        seen: dict[int, tuple[Message, float]] = {}
        stuck = None
        for thread, frame in _current_frames().items():
            found = _in_pipeline(frame, self.code)
            if found is None:
                continue
            msg, stage = found
            earlier = self.seen.get(thread)
            since = earlier[1] if earlier is not None and earlier[0] is msg else now
            seen[thread] = (msg, since)
            if now - since >= self.deadline and (stuck is None or since < stuck.since):
                stuck = Stuck(msg, stage, since)
        self.seen, self.stuck = seen, stuck
        return stuck

    def overdue(self) -> bool:
        """The stuck record has had its grace: time to exit."""
        return self.stuck is not None and self.clock() - self.stuck.since >= self.deadline + EXIT_GRACE_S

    def problem(self) -> str | None:
        """For /healthz: the stuck record, or None."""
        stuck = self.stuck
        if stuck is None:
            return None
        return (f"{stuck.describe(self.clock())}, past processing.record_deadline_ms "
                f"({self.deadline * 1000:.0f})")


def _current_frames() -> dict[int, FrameType]:
    """`sys._current_frames()` with the collector off: on Python 3.11 a collection inside it
    can free a thread-local object, which deadlocks the process (CPython issue 106883; seen
    here, with a thread pool of transforms)."""
    if not gc.isenabled():
        return sys._current_frames()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        gc.enable()


def _in_pipeline(top: FrameType, code: CodeType) -> tuple[Message, str] | None:
    """The record this stack is processing in the pipeline loop, and the stage it is in."""
    stage = "transform"
    frame: FrameType | None = top
    while frame is not None:
        if frame.f_code is code:
            msg = frame.f_locals.get("msg")
            return (msg, stage) if isinstance(msg, Message) else None
        if frame.f_code.co_filename == codecs.__file__:
            stage = "deserialize" if frame.f_code.co_name.startswith("decode") else "serialize"
        frame = frame.f_back
    return None
