"""/metrics during a real run counts what was committed; /healthz and /readyz answer."""

from __future__ import annotations

import pytest

from examples.orders import make_samples
from localkafka import free_port
from localkafka.clients import wait_for
from tests.http import get, samples_of

pytestmark = pytest.mark.kafka


def test_scraped_counters_equal_what_was_committed(pipe, processors):
    port = free_port()
    p = pipe(partitions=2, metrics_port=port)
    samples = make_samples(4_000, poison_per_kind=0.01, seed=8)
    p.feed(samples)
    proc = processors(p.config, "m1")
    wait_for(lambda: get(port, "/healthz")[0] == 200, 30, "/healthz answering")
    wait_for(lambda: get(port, "/readyz")[0] == 200, 60, "/readyz ready")
    wait_for(lambda: p.committed_all(), 120, "all inputs committed")
    consumed = ("processor_records_consumed_total", (("topic", p.input),))
    # the endpoint serves a snapshot taken every 0.5 s
    wait_for(lambda: samples_of(get(port, "/metrics")[1]).get(consumed) == len(samples), 5,
             "the scrape to count every input")

    values = samples_of(get(port, "/metrics")[1])
    assert proc.terminate() == 0
    good = sum(1 for s in samples if s.stage is None)
    assert values[("processor_records_produced_total", (("topic", p.output),))] == good
    dead = {labels: v for (name, labels), v in values.items()
            if name == "processor_records_dead_lettered_total"}
    for stage in ("deserialize", "transform", "serialize"):
        expected = sum(1 for s in samples if s.stage == stage)
        assert dead[(("stage", stage), ("topic", p.input))] == expected
    assert dead[(("stage", "produce"), ("topic", p.input))] == 0  # exported from the start, for alerts
    assert values[("processor_transactions_total", (("outcome", "committed"),))] >= 1
    assert values[("processor_ready", ())] == 1
    lags = [v for (name, _), v in values.items() if name == "processor_consumer_lag"]
    assert lags and all(v == 0 for v in lags)
