"""Input messages to produced outputs, or to the `Failure` that makes one poison.

This is the per-record hot path: one loop decodes, transforms, encodes and produces, with
codecs bound once; outputs are plain tuples; the `Record` reads message fields only when the
transform asks for them.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaException, Message

from processor.codecs import BytesCodec, Codec
from processor.deadletter import Failure
from processor.kafka import FatalError
from processor.resilience.dependency import set_record_deadline
from processor.resilience.errors import Transient
from processor.resilience.retry import attempts_of
from processor.transform import INPUT_KEY, Headers, Output, Record, Timer, Transform

# an output record in Producer.produce's argument order: (topic, value, key, headers)
Encoded = tuple[str, bytes | None, bytes | None, Headers | None]
_SINGLE_VALUES = (bytes, bytearray, memoryview, str, dict, int, float, bool)
_PLAIN = frozenset(_SINGLE_VALUES)  # exactly these types: one set lookup on the hot path
# the transaction's deadline is checked after every record while records are slow or run
# under record deadlines (which must fit in the transaction timeout), and after every
# CHECK_EVERY records while that many take less than FAST_S (a clock read costs as much as a
# tenth of a pass-through record); records turning slow overrun it by < CHECK_EVERY records
CHECK_EVERY = 16
FAST_S = 0.001
# a record's outputs, bounded (an endless generator would grow until the process is killed, on
# every start): more is the transform's failure, dead-lettered
MAX_OUTPUTS = 10_000
MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # keys and values, encoded


class TooManyOutputs(Exception):
    """A record's outputs exceed MAX_OUTPUTS or MAX_OUTPUT_BYTES."""


class TransformExit(FatalError):
    """The transform raised SystemExit, KeyboardInterrupt or another BaseException: stop
    (exit 1), naming the record, rather than exit as it asked or dead-letter the record."""

    def __init__(self, call: Message | Timer, error: BaseException):
        on = repr(call) if isinstance(call, Timer) else f"record {call.topic()} [{call.partition()}] @{call.offset()}"
        super().__init__(f"the transform raised {type(error).__name__}({error}) on {on}")


@dataclass(slots=True)
class RetryLater:
    """A transient failure (a dependency down, retries exhausted): not poison, try again."""

    error: Transient


@dataclass(slots=True)
class Outputs:
    """What one record becomes when that is not one output produced on the hot path: none,
    several, or one the full producer queue did not take yet."""

    records: list[Encoded]


def _bound(codec: Codec, name: str):
    """The codec's method, or None for raw bytes (the hot path then skips the call)."""
    return None if isinstance(codec, BytesCodec) else getattr(codec, name)


Outcome = Outputs | Failure | RetryLater


class Pipeline:
    """`fill(records, start, produce, txn_deadline)` produces a batch's outputs, and
    `process(msg)` turns one input message into what should be produced."""

    def __init__(self, app_id: str, transform: Transform, input_key: Codec, input_value: Codec,
                 output_topic: str, output_key: Codec, output_value: Codec,
                 reuse_input_key: bool, record_deadline_s: float = 15.0,
                 uses_deadlines: bool = True, stores=None, clock: Callable[[], float] = time.monotonic):
        self.app_id, self.stores = app_id, stores
        self.output_topic = output_topic
        self.encode_key, self.encode_value = output_key.encode, output_value.encode
        self.reuse_input_key = reuse_input_key  # same key format in and out: keep the raw bytes
        self.record_deadline_s = record_deadline_s
        self.transform, self.clock = transform, clock
        self.fill = self._compile(transform, _bound(input_key, "decode"), _bound(input_value, "decode"),
                                  isinstance(output_value, BytesCodec), uses_deadlines, clock)

    def process(self, msg: Message, deadline: float | None = None) -> Outcome:
        """One message's outcome, produced nowhere. `deadline` (monotonic) bounds its calls."""
        collected: list[Encoded] = []

        def collect(topic, value, key, headers=None):
            collected.append((topic, value, key, headers))

        _, outcome = self.fill([msg], 0, collect, math.inf, deadline, keep=False)
        return Outputs(collected) if outcome is None else outcome

    def fire(self, timer: Timer) -> Outcome:
        """A due timer's outcome: the transform called with it (within the record deadline),
        its outputs encoded; their key defaults to the timer's, their headers to none. The
        timer's removal is among the call's writes (a failed call leaves it to the caller)."""
        self.stores.timers.remove(timer)
        set_record_deadline(self.clock() + self.record_deadline_s)
        try:
            result = self.transform(timer)
            outputs = self._outputs(result)
        except Transient as exc:
            return RetryLater(exc)
        except FatalError:
            raise
        except Exception as exc:
            return Failure("transform", exc, attempts_of(exc))
        except BaseException as exc:
            raise TransformExit(timer, exc) from exc
        finally:
            set_record_deadline(None)
        try:
            return Outputs(self._encode_all(outputs if outputs is not None else [Output(result)], None, timer.key))
        except Exception as exc:
            return Failure("serialize", exc)

    def _compile(self, transform: Transform, decode_key, decode_value, raw_value_out: bool,
                 uses_deadlines: bool, clock: Callable[[], float]):
        """The hot loop, with everything it needs bound as local names (it reads no
        attributes) and the common case inline: a record that becomes one plain value with
        the input's key and headers costs one produce call. Only calls through a dependency
        read deadlines."""
        output_topic, record_deadline_s = self.output_topic, self.record_deadline_s
        record_of = Record.of_app(self.app_id, self.stores)
        encode_key, encode_value, reuse_input_key = self.encode_key, self.encode_value, self.reuse_input_key
        outputs_of, encode_all = self._outputs, self._encode_all
        kept = self.stores.record_ended if self.stores is not None else None
        raw_in = decode_key is None and decode_value is None
        raw_out = raw_value_out and reuse_input_key  # bytes from the transform go out as they are
        check_every = 1 if uses_deadlines else CHECK_EVERY

        def fill(records: list[Message], start: int, produce: Callable, txn_deadline: float,
                 record_deadline: float | None = None, keep: bool = True) -> tuple[int, Outcome | None]:
            """Produce the outputs of records[start:] until one needs more than a produce
            call (none or several outputs, a failure, a full queue) or `txn_deadline` passes.
            Returns the index of the first record not done and, if it stopped on a record,
            that record's outcome for the caller to finish. A record's calls and retries are
            bounded by `record_deadline`, by default `record_deadline_s` from its start. The
            store writes of a record produced here are kept with the transaction (`keep`:
            else the caller decides when it routes the outputs)."""
            keeps = kept is not None and keep
            i, check_at, checked = start, start + 1, clock()
            for msg in records[start:] if start else records:
                raw_key = msg.key()
                if raw_in:
                    key, value = raw_key, msg.value()
                else:
                    try:
                        key = raw_key if decode_key is None else decode_key(raw_key)
                        value = msg.value() if decode_value is None else decode_value(msg.value())
                    except Exception as exc:
                        return i, Failure("deserialize", exc)
                if uses_deadlines:
                    set_record_deadline(record_deadline if record_deadline is not None
                                        else clock() + record_deadline_s)
                try:
                    result = transform(record_of(key, value, msg))
                    as_is = raw_out and type(result) is bytes
                    if not as_is:  # a generator transform runs here, within its deadline
                        outputs = None if type(result) in _PLAIN else outputs_of(result)
                except Transient as exc:
                    return i, RetryLater(exc)
                except FatalError:  # not the record's fault (a store the config lacks)
                    raise
                except Exception as exc:
                    return i, Failure("transform", exc, attempts_of(exc))
                except BaseException as exc:  # SystemExit, KeyboardInterrupt: not the record's fault
                    raise TransformExit(msg, exc) from exc
                finally:
                    if uses_deadlines:
                        set_record_deadline(None)
                if as_is:
                    value_out, key_out = result, raw_key
                else:
                    try:
                        if outputs is not None:
                            return i, Outputs(encode_all(outputs, msg, key))
                        # one plain value with the input's key and headers
                        value_out = result if raw_value_out and type(result) is bytes else encode_value(result)
                        key_out = raw_key if reuse_input_key else encode_key(key)
                    except Exception as exc:
                        return i, Failure("serialize", exc)
                headers = msg.headers()
                try:
                    if headers is None:  # a headers=None keyword would cost as much as a check
                        produce(output_topic, value_out, key_out)
                    else:
                        produce(output_topic, value_out, key_out, headers=headers)
                except BufferError:  # the queue is full: the caller waits for room
                    return i, Outputs([(output_topic, value_out, key_out, headers)])
                except KafkaException as exc:  # refused before sending: deterministic for this record
                    return i, Failure("produce", exc)
                if keeps:
                    kept(True)
                i += 1
                if i >= check_at:
                    now = clock()
                    if now >= txn_deadline:
                        break
                    check_at = i + (check_every if now - checked < FAST_S else 1)
                    checked = now
            return i, None

        return fill

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
            outputs = list(itertools.islice(result, MAX_OUTPUTS + 1))
            if len(outputs) > MAX_OUTPUTS:
                raise TooManyOutputs(f"a record may have at most {MAX_OUTPUTS} outputs; this one has more")
            for out in outputs:
                if not isinstance(out, Output):
                    raise TypeError(f"an iterable result must hold Output objects, "
                                    f"got {type(out).__name__}")
            return outputs
        return None

    def _encode_all(self, outputs: list[Output], msg: Message | None, key) -> list[Encoded]:
        encoded, size = [], 0
        for out in outputs:
            one = self._encode(out, msg, key)
            size += len(one[1] or b"") + len(one[2] or b"")
            if size > MAX_OUTPUT_BYTES:
                raise TooManyOutputs(f"a record's outputs may take at most {MAX_OUTPUT_BYTES} bytes encoded")
            encoded.append(one)
        return encoded

    def _encode(self, out: Output, msg: Message | None, key) -> Encoded:
        """`out` with the input's key (`key` decoded) and headers by default (none without `msg`)."""
        if out.key is INPUT_KEY:
            out_key = msg.key() if msg is not None and self.reuse_input_key else self.encode_key(key)
        else:
            out_key = self.encode_key(out.key)
        if out.headers is None:
            headers = msg.headers() if msg is not None else None
        else:
            headers = out.headers or None
        return (out.topic or self.output_topic, self.encode_value(out.value), out_key, headers)
