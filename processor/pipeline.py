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

# an output record in Producer.produce's argument order: (topic, value, key, headers)
Encoded = tuple[str, bytes | None, bytes | None, Headers | None]
_SINGLE_VALUES = (bytes, str, dict, int, float, bool)
_PLAIN = frozenset(_SINGLE_VALUES)  # exactly these types: one set lookup on the hot path


@dataclass(slots=True)
class RetryLater:
    """A transient failure (a dependency down, retries exhausted): not poison, try again."""

    error: Transient


def _bound(codec: Codec, name: str):
    """The codec's method, or None for raw bytes (the hot path then skips the call)."""
    return None if isinstance(codec, BytesCodec) else getattr(codec, name)


class Pipeline:
    """`process(msg)` turns one input message into what the engine produces."""

    def __init__(self, app_id: str, transform: Transform, input_key: Codec, input_value: Codec,
                 output_topic: str, output_key: Codec, output_value: Codec,
                 reuse_input_key: bool, record_deadline_s: float = 15.0,
                 uses_deadlines: bool = True, clock: Callable[[], float] = time.monotonic):
        self.app_id = app_id
        self.output_topic = output_topic
        self.encode_key, self.encode_value = output_key.encode, output_value.encode
        self.reuse_input_key = reuse_input_key  # same key format in and out: keep the raw bytes
        self.record_deadline_s = record_deadline_s
        self.process = self._compile(transform, _bound(input_key, "decode"),
                                     _bound(input_value, "decode"),
                                     isinstance(output_value, BytesCodec), uses_deadlines, clock)

    def _compile(self, transform: Transform, decode_key, decode_value, raw_value_out: bool,
                 uses_deadlines: bool, clock: Callable[[], float]):
        """The per-record function, with everything it needs bound as local names (the hot
        path reads no attributes). Only calls through a dependency read deadlines."""
        app_id, output_topic, record_deadline_s = self.app_id, self.output_topic, self.record_deadline_s
        encode_key, encode_value, reuse_input_key = self.encode_key, self.encode_value, self.reuse_input_key
        outputs_of, encode = self._outputs, self._encode

        def process(msg: Message, deadline: float | None = None) -> Encoded | list[Encoded] | Failure | RetryLater:
            """One output to the output topic as a bare tuple (the common case), else a list.
            `deadline` (monotonic) bounds the record's calls and retries; by default
            `record_deadline_s` from now."""
            raw_key = msg.key()
            try:
                key = raw_key if decode_key is None else decode_key(raw_key)
                value = msg.value() if decode_value is None else decode_value(msg.value())
            except Exception as exc:
                return Failure("deserialize", exc)
            if uses_deadlines:
                set_record_deadline(deadline if deadline is not None else clock() + record_deadline_s)
            try:
                result = transform(Record(key, value, msg, app_id))
                outputs = None if type(result) in _PLAIN else outputs_of(result)
            except Transient as exc:
                return RetryLater(exc)
            except Exception as exc:
                return Failure("transform", exc, attempts_of(exc))
            finally:
                if uses_deadlines:
                    set_record_deadline(None)
            try:
                if outputs is None:  # the common case: one plain value, the input's key and headers
                    value_out = result if raw_value_out and type(result) is bytes else encode_value(result)
                    return (output_topic, value_out, raw_key if reuse_input_key else encode_key(key),
                            msg.headers())
                return [encode(out, msg, key) for out in outputs]
            except Exception as exc:
                return Failure("serialize", exc)

        return process

    @staticmethod
    def _outputs(result) -> list[Output] | None:
        """None for one plain value; the Output objects otherwise (none for None)."""
        if result is None:
            return []
        if isinstance(result, Output):
            return [result]
        if isinstance(result, _SINGLE_VALUES):
            return None
        if isinstance(result, Iterable):
            outputs = list(result)
            for out in outputs:
                if not isinstance(out, Output):
                    raise TypeError(f"an iterable result must hold Output objects, "
                                    f"got {type(out).__name__}")
            return outputs
        return None

    def _encode(self, out: Output, msg: Message, key) -> Encoded:
        if out.key is _INPUT_KEY:
            out_key = msg.key() if self.reuse_input_key else self.encode_key(key)
        else:
            out_key = self.encode_key(out.key)
        headers = msg.headers() if out.headers is None else (out.headers or None)
        return (out.topic or self.output_topic, self.encode_value(out.value), out_key, headers)
