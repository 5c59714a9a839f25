"""Outputs to a topic that does not exist: a clear error, never an endless abort loop.

(`produce()` takes such a record; it fails later, at the commit, every time.)"""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import AdminClient

from examples.orders import make_samples
from localkafka.clients import read_all, unique_name
from tests.processes import write_config
from tests.transforms import singled_out

pytestmark = pytest.mark.kafka


def exists(bootstrap: str, topic: str) -> bool:
    return topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30).topics


def test_run_refuses_to_start_without_its_output_topic(pipe, processors, tmp_path):
    p = pipe(partitions=1)
    missing = unique_name("no-such-output")
    config = write_config(tmp_path / "missing.yaml", p.bootstrap, input_topic=p.input,
                          output_topic=missing, dead_letter_topic=p.dead_letter, app_id=p.app_id)
    proc = processors(config, "i1")

    assert proc.proc.wait(60) == 1
    assert f"topic '{missing}' does not exist" in proc.log(), proc.log()[-2000:]
    assert not exists(p.bootstrap, missing), "checking for the topic must not create it"


def test_outputs_to_a_missing_topic_dead_letter_their_record(pipe, processors):
    p = pipe(partitions=2, transform="tests.transforms:some_to_a_missing_topic",
             output_value={"format": "json"})
    samples = make_samples(1_000, poison_per_kind=0.0, seed=8)
    missing = unique_name("no-such-route")
    p.feed(samples)
    p.drain(processors(p.config, "i1", env={"MISSING_TOPIC": missing}), 120)

    routed = {s.order_id for s in samples if singled_out(s.order_id)}
    outputs = [json.loads(r.value)["order_id"] for r in read_all(p.bootstrap, p.output)]
    assert sorted(outputs) == sorted(s.order_id for s in samples if s.order_id not in routed)
    dead = read_all(p.bootstrap, p.dead_letter)
    assert sorted(r.key.decode() for r in dead) == sorted(routed)
    assert {(r.headers["__processor.errors.stage"], r.headers["__processor.errors.exception"])
            for r in dead} == {(b"produce", b"MissingTopic")}
    assert not exists(p.bootstrap, missing)
