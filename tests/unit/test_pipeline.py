"""What a transform returns becomes the right encoded outputs; what it raises, a Failure."""

from __future__ import annotations

import itertools

import pytest

from processor.codecs import BytesCodec, JsonCodec, StringCodec
from processor.deadletter import DROPPED, Failure, dead_letter, dead_letter_headers
from processor.pipeline import CHECK_EVERY, MAX_OUTPUT_BYTES, MAX_OUTPUTS, Outputs, Pipeline, TooManyOutputs, TransformExit
from processor.transform import Output, Poison
from tests.messages import message


def pipeline(transform, reuse_input_key=True, output_key=None) -> Pipeline:
    return Pipeline("app", transform, StringCodec(), JsonCodec(), "out", output_key or StringCodec(),
                    JsonCodec(), reuse_input_key)


MSG = message("in", 2, 41, b"k1", b'{"n": 1}', headers=[("h", b"v")])


def test_plain_value_keeps_key_and_headers():
    out = pipeline(lambda r: {"n": r.value["n"] + 1}).process(MSG)
    assert out == Outputs([("out", b'{"n":2}', b"k1", [("h", b"v")])])  # Producer.produce's order


def test_none_drops_and_iterables_fan_out():
    assert pipeline(lambda r: None).process(MSG) == Outputs([])
    outs = pipeline(lambda r: (Output(i, key=f"k{i}", topic="t2", headers=[]) for i in range(3))).process(MSG)
    assert outs == Outputs([
        ("t2", b"0", b"k0", None), ("t2", b"1", b"k1", None), ("t2", b"2", b"k2", None)])


@pytest.mark.parametrize("error", [SystemExit(0), KeyboardInterrupt()])
def test_a_transform_that_exits_stops_the_run_naming_the_record(error):
    def leave(record):
        raise error

    with pytest.raises(TransformExit, match=r"^the transform raised \w+\(0?\) on record in \[2\] @41$"):
        pipeline(leave).process(MSG)


@pytest.mark.parametrize("result", [bytearray(b"xy"), memoryview(b"xy")])
def test_bytearray_and_memoryview_results_are_bytes(result):
    raw = Pipeline("app", lambda r: result, BytesCodec(), BytesCodec(), "out", BytesCodec(),
                   BytesCodec(), True)
    assert raw.process(MSG) == Outputs([("out", b"xy", b"k1", [("h", b"v")])])


def test_record_fields_and_idempotency_key():
    seen = []
    pipeline(seen.append).process(MSG)
    [record] = seen
    assert (record.key, record.value, record.topic, record.partition, record.offset) == ("k1", {"n": 1}, "in", 2, 41)
    assert record.idempotency_key == "app:in:2:41"
    assert record.timestamp == 1_790_000_000_000


def test_input_key_is_re_encoded_when_formats_differ():
    # string in, json out: the decoded key "k1" goes out as the JSON string "k1"
    [(_, _, key, _)] = pipeline(lambda r: 1, reuse_input_key=False, output_key=JsonCodec()).process(MSG).records
    assert key == b'"k1"'
    [(_, _, kept, _)] = pipeline(lambda r: 1, reuse_input_key=True).process(MSG).records
    assert kept == b"k1"


def test_failures_carry_their_stage():
    def refuse(record):
        raise Poison("no")

    assert pipeline(refuse).process(MSG).stage == "transform"
    assert pipeline(lambda r: 1).process(message("in", 0, 0, b"\xff", b"1")).stage == "deserialize"
    assert pipeline(lambda r: object()).process(MSG).stage == "serialize"
    assert pipeline(lambda r: [1, 2]).process(MSG).stage == "transform"  # a list must hold Outputs


def test_dead_letter_headers_and_bounded_stacktrace():
    def deep(n):
        if n == 0:
            raise ValueError("boom " * 50)
        deep(n - 1)

    failure = pipeline(lambda r: deep(100)).process(MSG)
    assert isinstance(failure, Failure)
    headers = dead_letter_headers(MSG, failure, "app", stacktrace_max_bytes=500)
    names = [name for name, _ in headers]
    assert names[0] == "h"
    values = dict(headers)
    assert values["__processor.errors.offset"] == b"41"
    assert values["__processor.errors.exception"] == b"ValueError"
    assert len(values["__processor.errors.stacktrace"]) == 500
    assert values["__processor.errors.stacktrace"].endswith(b"boom \n")
    assert "__processor.errors.dropped" not in values


def test_shrunk_dead_letters_drop_the_value_then_key_and_headers():
    failure = Failure("produce", ValueError("x" * 5000))
    whole, no_value, bare = (dead_letter(MSG, failure, "app", 8192, shrink) for shrink in range(len(DROPPED)))
    assert (whole.value, whole.key) == (b'{"n": 1}', b"k1")
    assert (no_value.value, no_value.key) == (None, b"k1")
    assert (bare.value, bare.key) == (None, None)
    assert dict(no_value.headers)["__processor.errors.dropped"] == b"value"
    assert dict(bare.headers)["__processor.errors.dropped"] == b"value,key,headers"
    assert ("h", b"v") in no_value.headers and ("h", b"v") not in bare.headers
    for letter in (no_value, bare):  # still point at the input, with shortened texts
        values = dict(letter.headers)
        assert (values["__processor.errors.topic"], values["__processor.errors.offset"]) == (b"in", b"41")
        assert len(values["__processor.errors.message"]) <= 1024
        assert len(values["__processor.errors.stacktrace"]) <= 1024
    assert len(dict(whole.headers)["__processor.errors.message"]) == 5000


class SteppedClock:
    """Time that moves only when a transform says it took some."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def filled(transform, clock, records: int = 100, txn_deadline: float = 5.0, uses_deadlines=False) -> int:
    pipe = Pipeline("app", transform, BytesCodec(), BytesCodec(), "out", BytesCodec(), BytesCodec(),
                    True, uses_deadlines=uses_deadlines, clock=clock)
    msgs = [message("in", 0, n, b"k", b"v") for n in range(records)]
    produced = []
    done, outcome = pipe.fill(msgs, 0, lambda *out: produced.append(out), txn_deadline)
    assert outcome is None and len(produced) == done
    return done


def slow_after(fast: int, seconds: float, clock: SteppedClock):
    calls = []

    def transform(record):
        calls.append(1)
        if len(calls) > fast:
            clock.now += seconds
        return record.value

    return transform


def test_fast_records_fill_the_batch():
    clock = SteppedClock()
    assert filled(slow_after(100, 0, clock), clock) == 100


def test_slow_records_stop_at_the_transaction_deadline():
    clock = SteppedClock()  # 0.3 s each: the record that ends after 5 s is the last one
    assert filled(slow_after(0, 0.3, clock), clock) == 17


def test_records_turning_slow_overrun_the_deadline_by_less_than_a_check_interval():
    clock = SteppedClock()  # fast at first: the clock is read only every CHECK_EVERY records
    done = filled(slow_after(40, 10.0, clock), clock)
    assert 40 < done <= 40 + CHECK_EVERY


def test_records_under_record_deadlines_stop_at_the_transaction_deadline():
    clock = SteppedClock()
    assert filled(slow_after(40, 10.0, clock), clock, uses_deadlines=True) == 41


def test_a_record_s_outputs_are_bounded_in_count_and_bytes():
    endless = pipeline(lambda r: (Output(i) for i in itertools.count())).process(MSG)
    assert isinstance(endless, Failure) and endless.stage == "transform"
    assert isinstance(endless.error, TooManyOutputs) and f"at most {MAX_OUTPUTS} outputs" in str(endless.error)
    at_the_limit = pipeline(lambda r: (Output(i) for i in range(MAX_OUTPUTS))).process(MSG)
    assert isinstance(at_the_limit, Outputs) and len(at_the_limit.records) == MAX_OUTPUTS
    big = "x" * (1024 * 1024)
    heavy = pipeline(lambda r: [Output(big)] * 65).process(MSG)
    assert isinstance(heavy, Failure) and heavy.stage == "serialize"
    assert f"at most {MAX_OUTPUT_BYTES} bytes" in str(heavy.error)
