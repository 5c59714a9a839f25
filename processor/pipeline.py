"""One input message to its encoded outputs, or to the `Failure` that makes it poison.

This is the per-record hot path: outputs are plain tuples, codecs are bound once, and the
`Record` reads message fields only when the transform asks for them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import Message

from processor.codecs import BytesCodec, Codec
from processor.deadletter import Failure
from processor.resilience.dependency import set_record_deadline
from processor.resilience.errors import Transient
from processor.resilience.retry import attempts_of
from processor.transform import _INPUT_KEY, Headers, Output, Record, Transform

# an output record, ready for Producer.produce: (topic, key, value, headers)
Encoded = tuple[str, bytes | None, bytes | None, Headers | None]
_SINGLE_VALUES = (bytes, str, dict, int, float, bool)


@dataclass(slots=True)
class RetryLater:
    """A transient failure (a dependency down, retries exhausted): not poison, try again."""

    error: Transient


def _bound(codec: Codec, name: str):
    """The codec's method, or None for raw bytes (the hot path then skips the call)."""
    return None if isinstance(codec, BytesCodec) else getattr(codec, name)


class Pipeline:
    def __init__(self, app_id: str, transform: Transform, input_key: Codec, input_value: Codec,
                 output_topic: str, output_key: Codec, output_value: Codec,
                 reuse_input_key: bool, record_deadline_s: float = 15.0,
                 uses_deadlines: bool = True, clock: Callable[[], float] = time.monotonic):
        self.app_id = app_id
        self.transform = transform
        self.decode_key, self.decode_value = _bound(input_key, "decode"), _bound(input_value, "decode")
        self.output_topic = output_topic
        self.encode_key, self.encode_value = output_key.encode, output_value.encode
        self.raw_value_out = isinstance(output_value, BytesCodec)
        self.reuse_input_key = reuse_input_key  # same key format in and out: keep the raw bytes
        self.record_deadline_s, self.clock = record_deadline_s, clock
        self.uses_deadlines = uses_deadlines  # only calls through a dependency read them

    def process(self, msg: Message, deadline: float | None = None) -> list[Encoded] | Failure | RetryLater:
        """`deadline` (monotonic) bounds the record's calls and retries; by default
        `record_deadline_s` from now."""
        try:
            key = msg.key() if self.decode_key is None else self.decode_key(msg.key())
            value = msg.value() if self.decode_value is None else self.decode_value(msg.value())
        except Exception as exc:
            return Failure("deserialize", exc)
        record = Record(key, value, msg, self.app_id)
        if self.uses_deadlines:
            set_record_deadline(deadline if deadline is not None else self.clock() + self.record_deadline_s)
        try:
            result = self.transform(record)
            if result is None:
                return []
            if isinstance(result, _SINGLE_VALUES):
                outputs = None
            else:
                outputs = self._outputs(result)
        except Transient as exc:
            return RetryLater(exc)
        except Exception as exc:
            return Failure("transform", exc, attempts_of(exc))
        finally:
            if self.uses_deadlines:
                set_record_deadline(None)
        try:
            if outputs is None:  # the common case: one plain value, the input's key and headers
                value_out = (result if self.raw_value_out and type(result) is bytes
                             else self.encode_value(result))
                key_out = msg.key() if self.reuse_input_key else self.encode_key(key)
                return [(self.output_topic, key_out, value_out, msg.headers())]
            return [self._encode(out, msg, key) for out in outputs]
        except Exception as exc:
            return Failure("serialize", exc)

    @staticmethod
    def _outputs(result) -> list[Output] | None:
        """None for a plain value; the Output objects otherwise."""
        if isinstance(result, Output):
            return [result]
        if isinstance(result, (list, tuple)) or isinstance(result, Iterable):
            outputs = list(result)
            for out in outputs:
                if not isinstance(out, Output):
                    raise TypeError(f"an iterable result must hold Output objects, "
                                    f"got {type(out).__name__}")
            return outputs
        return None

    def _input_key(self, msg: Message, key) -> bytes | None:
        return msg.key() if self.reuse_input_key else self.encode_key(key)

    def _encode(self, out: Output, msg: Message, key) -> Encoded:
        out_key = self._input_key(msg, key) if out.key is _INPUT_KEY else self.encode_key(out.key)
        headers = msg.headers() if out.headers is None else (out.headers or None)
        return (out.topic or self.output_topic, out_key, self.encode_value(out.value), headers)
