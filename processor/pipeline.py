"""One input message to its encoded outputs, or to the `Failure` that makes it poison."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from processor.codecs import Codec
from processor.deadletter import Failure
from processor.resilience.dependency import set_record_deadline
from processor.resilience.errors import Transient
from processor.resilience.retry import attempts_of
from processor.transform import Headers, Output, Record, Transform


@dataclass(slots=True)
class RetryLater:
    """A transient failure (a dependency down, retries exhausted): not poison, try again."""

    error: Transient


@dataclass(slots=True)
class Encoded:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None


class Pipeline:
    def __init__(self, app_id: str, transform: Transform, input_key: Codec, input_value: Codec,
                 output_topic: str, output_key: Codec, output_value: Codec,
                 reuse_input_key: bool, record_deadline_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic):
        self.app_id = app_id
        self.transform = transform
        self.input_key, self.input_value = input_key, input_value
        self.output_topic = output_topic
        self.output_key, self.output_value = output_key, output_value
        self.reuse_input_key = reuse_input_key  # same key format in and out: keep the raw bytes
        self.record_deadline_s, self.clock = record_deadline_s, clock

    def process(self, msg: Message, deadline: float | None = None) -> list[Encoded] | Failure | RetryLater:
        """`deadline` (monotonic) bounds the record's calls and retries; by default
        `record_deadline_s` from now."""
        try:
            key = self.input_key.decode(msg.key())
            value = self.input_value.decode(msg.value())
        except Exception as exc:
            return Failure("deserialize", exc)
        ts_type, ts = msg.timestamp()
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        headers = msg.headers() or []
        record = Record(key, value, headers, topic, partition, offset,
                        None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts,
                        f"{self.app_id}:{topic}:{partition}:{offset}")
        set_record_deadline(deadline if deadline is not None else self.clock() + self.record_deadline_s)
        try:
            result = self.transform(record)
            outputs = self._outputs(result)
        except Transient as exc:
            return RetryLater(exc)
        except Exception as exc:
            return Failure("transform", exc, attempts_of(exc))
        finally:
            set_record_deadline(None)
        try:
            return [self._encode(out, msg, record) for out in outputs]
        except Exception as exc:
            return Failure("serialize", exc)

    @staticmethod
    def _outputs(result) -> list[Output]:
        if result is None:
            return []
        if isinstance(result, Output):
            return [result]
        if isinstance(result, (list, tuple)) or (
                isinstance(result, Iterable) and not isinstance(result, (str, bytes, dict))):
            outputs = list(result)
            for out in outputs:
                if not isinstance(out, Output):
                    raise TypeError(f"an iterable result must hold Output objects, "
                                    f"got {type(out).__name__}")
            return outputs
        return [Output(result)]

    def _encode(self, out: Output, msg: Message, record: Record) -> Encoded:
        if out.keeps_input_key:
            key = msg.key() if self.reuse_input_key else self.output_key.encode(record.key)
        else:
            key = self.output_key.encode(out.key)
        headers = record.headers if out.headers is None else out.headers
        return Encoded(out.topic or self.output_topic, key, self.output_value.encode(out.value),
                       headers or None)
