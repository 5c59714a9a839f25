"""10,000 orders with 2% poison of each kind: one output per good order, one dead letter per poison."""

from __future__ import annotations

import io
import json
import re
from collections import defaultdict

import fastavro
import pytest

from examples.orders import make_samples
from localkafka.clients import produce, read_all
from tests.transforms import singled_out
from tests.verify import ENRICHED

pytestmark = pytest.mark.kafka
# per poison kind of examples/orders.py: the exception and its message (a regular expression)
EXPECTED_ERRORS = {
    "garbage": (b"EOFError", rb"Expected -270272 bytes, read 28"),
    "wrong_schema": (b"EOFError", rb"Expected 1099\d{9} bytes, read 9"),
    "refused": (b"Poison", rb"order o-2-\d{7} has a non-positive amount -\d+"),
    "overflow": (b"CodecError", rb"com\.example\.orders\.EnrichedOrder\.total_cents is <\d+> of type "
                                rb"<class 'int'> expected long"),
}


def message_line(headers: dict[str, bytes]) -> bytes:
    """The last line of a stack trace: `module.Class: message` or `Class: message`."""
    return headers["__processor.errors.exception"] + b": " + headers["__processor.errors.message"]


def test_outputs_and_dead_letters_exactly_once(pipe, processors):
    p = pipe(partitions=3)
    samples = make_samples(10_000, poison_per_kind=0.02, seed=1)
    p.process_all(processors, samples)

    verdict = p.verify(samples)
    assert verdict.ok, verdict
    assert len(verdict.dead_letters) == sum(1 for s in samples if s.stage)
    assert {s.kind for s in samples} == {"good", "garbage", "wrong_schema", "refused", "overflow"}


def test_dead_letter_records_carry_the_original_and_the_error(pipe, processors):
    p = pipe(partitions=2)
    samples = make_samples(2_000, poison_per_kind=0.02, seed=2)
    produce(p.bootstrap, p.input, [(s.key, s.value) for s in samples],
            headers=[("trace-id", b"abc")])
    proc = processors(p.config, "i1")
    p.drain(proc, 120)

    inputs = {r.key: r for r in read_all(p.bootstrap, p.input)}
    by_id = {s.key: s for s in samples}
    dead = read_all(p.bootstrap, p.dead_letter)
    assert len(dead) == sum(1 for s in samples if s.stage)
    for record in dead:
        original, sample = inputs[record.key], by_id[record.key]
        h = record.headers
        assert record.value == original.value  # the bytes as consumed, not re-encoded
        assert h["trace-id"] == b"abc"
        assert h["__processor.errors.topic"] == p.input.encode()
        assert int(h["__processor.errors.partition"]) == original.partition
        assert int(h["__processor.errors.offset"]) == original.offset
        assert int(h["__processor.errors.timestamp"]) > 0
        assert h["__processor.errors.stage"] == sample.stage.encode()
        exception, message = EXPECTED_ERRORS[sample.kind]
        assert h["__processor.errors.exception"] == exception
        assert re.fullmatch(message, h["__processor.errors.message"]), h["__processor.errors.message"]
        trace = h["__processor.errors.stacktrace"]
        assert trace.startswith(b"Traceback") and trace.rstrip().endswith(message_line(h))
        assert len(h["__processor.errors.stacktrace"]) <= 8192
        assert h["__processor.errors.attempts"] == b"1"
        assert h["__processor.errors.app_id"] == p.app_id.encode()
    assert {r.headers["__processor.errors.exception"] for r in dead} == \
        {exception for exception, _ in EXPECTED_ERRORS.values()}


def test_outputs_keep_each_input_partitions_order(pipe, processors):
    p = pipe(partitions=3)
    samples = make_samples(3_000, poison_per_kind=0.0, seed=3)
    p.process_all(processors, samples)

    offsets_seen = defaultdict(list)
    for record in read_all(p.bootstrap, p.output):
        source = fastavro.schemaless_reader(io.BytesIO(record.value), ENRICHED, None)["source_offset"]
        _, partition, offset = source.rsplit(":", 2)
        offsets_seen[(record.partition, int(partition))].append(int(offset))
    assert sum(len(v) for v in offsets_seen.values()) == 3_000
    for offsets in offsets_seen.values():
        assert offsets == sorted(offsets)


def test_a_refused_output_of_several_dead_letters_the_record_with_none_of_its_outputs(pipe, processors):
    p = pipe(partitions=2, transform="tests.transforms:two_outputs_one_oversized",
             output_value={"format": "json"})
    samples = make_samples(1_000, poison_per_kind=0.0, seed=4)
    p.process_all(processors, samples)

    refused = {s.order_id for s in samples if singled_out(s.order_id)}
    outputs = defaultdict(list)
    for record in read_all(p.bootstrap, p.output):
        value = json.loads(record.value)
        outputs[value["order_id"]].append(value["part"])
    assert {o for o in outputs if o in refused} == set(), "no output of a refused record"
    assert outputs == {s.order_id: [1, 2] for s in samples if s.order_id not in refused}
    dead = read_all(p.bootstrap, p.dead_letter)
    assert sorted(r.key.decode() for r in dead) == sorted(refused)
    assert {r.headers["__processor.errors.stage"] for r in dead} == {b"produce"}
