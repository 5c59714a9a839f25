"""Dead-letter records: the input exactly as consumed plus `__processor.errors.*` headers.

A dead letter Kafka refuses (larger than the client's `message.max.bytes` or the topic's
`max.message.bytes`) is written again in a smaller form rather than retried forever: first
without the input's value, then also without its key and headers; `.dropped` names what was
left out, and topic/partition/offset still point at the input.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Message

Stage = Literal["deserialize", "transform", "serialize", "produce"]
HEADER_PREFIX = "__processor.errors."
# what each shrink level leaves out of a dead letter, and how much error text it keeps
DROPPED = ("", "value", "value,key,headers")
SHRUNK_TEXT_BYTES = 1024


@dataclass(slots=True)
class Failure:
    """Why one input record cannot be processed."""

    stage: Stage
    error: BaseException
    attempts: int = 1


@dataclass(slots=True)
class DeadLetter:
    """A dead-letter record in `Producer.produce`'s terms."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]


def _tail(text: bytes, max_bytes: int) -> bytes:
    if len(text) <= max_bytes:
        return text
    marker = b"...[truncated]...\n"
    keep = max(max_bytes - len(marker), 0)
    return marker[:max_bytes] + text[-keep:] if keep else marker[:max_bytes]


def _stacktrace(error: BaseException, max_bytes: int) -> bytes:
    return _tail("".join(traceback.format_exception(error)).encode("utf-8", "replace"), max_bytes)


def dead_letter_headers(msg: Message, failure: Failure, app_id: str,
                        stacktrace_max_bytes: int, shrink: int = 0) -> list[tuple[str, bytes]]:
    """The input's own headers (unless shrunk that far) followed by the error context."""
    _, timestamp = msg.timestamp()
    error = failure.error
    text_max = stacktrace_max_bytes if shrink == 0 else min(stacktrace_max_bytes, SHRUNK_TEXT_BYTES)
    message = str(error).encode("utf-8", "replace")
    context = {
        "topic": msg.topic(),
        "partition": str(msg.partition()),
        "offset": str(msg.offset()),
        "timestamp": str(timestamp),
        "stage": failure.stage,
        "exception": type(error).__name__,
        "message": message if shrink == 0 else _tail(message, SHRUNK_TEXT_BYTES),
        "stacktrace": _stacktrace(error, text_max),
        "attempts": str(failure.attempts),
        "app_id": app_id,
    }
    if shrink:
        context["dropped"] = DROPPED[shrink]
    headers = list(msg.headers() or []) if shrink < 2 else []
    headers += [(HEADER_PREFIX + name, value if isinstance(value, bytes) else value.encode("utf-8"))
                for name, value in context.items()]
    return headers


def dead_letter(msg: Message, failure: Failure, app_id: str, stacktrace_max_bytes: int,
                shrink: int = 0) -> DeadLetter:
    """The dead-letter record of `msg`, at shrink level 0 (whole), 1 or 2 (see DROPPED)."""
    headers = dead_letter_headers(msg, failure, app_id, stacktrace_max_bytes, shrink)
    return DeadLetter(msg.value() if shrink == 0 else None, msg.key() if shrink < 2 else None, headers)
