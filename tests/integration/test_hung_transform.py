"""A transform that hangs on one record, with the shipped record deadline (15 s): /healthz
names the record, the process exits 1 naming it, and after it hung twice the next instance
dead-letters it instead of hanging again. Nothing else is lost or duplicated."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

import pytest

from examples.orders import make_samples
from localkafka import free_port
from localkafka.clients import committed_offsets, read_all, wait_for
from processor.hangmarks import HANGS_BEFORE_DEAD_LETTER
from tests.http import get

pytestmark = pytest.mark.kafka


def test_a_record_that_hangs_is_named_then_dead_lettered_instead_of_crash_looping(pipe, processors):
    port = free_port()
    p = pipe(partitions=1, transform="tests.transforms:hangs_on_the_first_singled_out",
             output_value={"format": "json"}, metrics_port=port)
    samples = make_samples(200, poison_per_kind=0.0, seed=43)
    p.feed(samples)
    where = f"record {p.input} [0] @50"

    for times in range(1, HANGS_BEFORE_DEAD_LETTER + 1):
        proc = processors(p.config, "i1")
        began = time.monotonic()
        wait_for(lambda: get(port, "/healthz")[0] == 503 or not proc.running(), 60, "/healthz failing")
        unhealthy = time.monotonic() - began
        status, body = get(port, "/healthz")
        assert status == 503 and body.startswith(f"unhealthy: {where} has been in stage transform for "), body
        assert proc.proc.wait(60) == 1, proc.log()[-3000:]
        exited = time.monotonic() - began
        print(f"\nhang {times}: /healthz 503 after {unhealthy:.1f}s, exit 1 after {exited:.1f}s "
              f"(from process start)", file=sys.stderr)
        *_, last = proc.errors()
        assert last.startswith(f"stopping: {where} has been in stage transform for "), last
        assert f"marked in Kafka: it hung {times} " in last, last
        assert "Traceback" not in proc.log()
        assert committed_offsets(p.bootstrap, p.app_id, p.input)[0] <= 50

    proc = processors(p.config, "i1")
    p.drain(proc, timeout=120)
    outputs = Counter(json.loads(r.value)["order_id"] for r in read_all(p.bootstrap, p.output))
    hung = samples[50].order_id
    assert outputs == Counter(s.order_id for s in samples if s.order_id != hung)
    [letter] = read_all(p.bootstrap, p.dead_letter)
    headers = dict(letter.headers)
    assert (headers["__processor.errors.stage"], headers["__processor.errors.exception"]) == \
        (b"transform", b"RecordHung")
    assert headers["__processor.errors.offset"] == b"50"
    assert letter.key.decode() == hung
