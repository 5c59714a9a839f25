"""Dead-letter records: the input exactly as consumed plus `__processor.errors.*` headers."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Message

Stage = Literal["deserialize", "transform", "serialize", "produce"]
HEADER_PREFIX = "__processor.errors."


@dataclass(slots=True)
class Failure:
    """Why one input record cannot be processed."""

    stage: Stage
    error: BaseException
    attempts: int = 1


def _stacktrace(error: BaseException, max_bytes: int) -> bytes:
    text = "".join(traceback.format_exception(error)).encode("utf-8", "replace")
    if len(text) <= max_bytes:
        return text
    marker = b"...[truncated]...\n"
    keep = max(max_bytes - len(marker), 0)
    return marker[:max_bytes] + text[-keep:] if keep else marker[:max_bytes]


def dead_letter_headers(msg: Message, failure: Failure, app_id: str,
                        stacktrace_max_bytes: int) -> list[tuple[str, bytes]]:
    """The input's own headers followed by the error context (SPEC section 6)."""
    _, timestamp = msg.timestamp()
    error = failure.error
    context = {
        "topic": msg.topic(),
        "partition": str(msg.partition()),
        "offset": str(msg.offset()),
        "timestamp": str(timestamp),
        "stage": failure.stage,
        "exception": type(error).__name__,
        "message": str(error),
        "stacktrace": _stacktrace(error, stacktrace_max_bytes),
        "attempts": str(failure.attempts),
        "app_id": app_id,
    }
    headers = list(msg.headers() or [])
    headers += [(HEADER_PREFIX + name, value if isinstance(value, bytes) else value.encode("utf-8"))
                for name, value in context.items()]
    return headers
