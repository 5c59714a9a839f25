"""Records Kafka refuses (the broker, or the client before sending) become dead letters of
stage `produce`; every other record comes out exactly once and the run drains."""

from __future__ import annotations

import json
import re
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from examples.orders import Sample, make_samples
from localkafka.clients import committed_offsets, read_all, wait_for
from tests.counts import feed

pytestmark = pytest.mark.kafka
BYTES = {"key": {"format": "string"}, "value": {"format": "bytes"}}


def number(order_id: str) -> int:
    return int(order_id.rsplit("-", 1)[1])


def test_outputs_the_broker_refuses_are_dead_lettered(pipe, processors, new_topic):
    compacted = new_topic("compacted", 3, {"cleanup.policy": "compact"})
    p = pipe(partitions=3, transform="tests.transforms:refused_by_the_broker",
             output_value={"format": "json"}, topic_configs={"out": {"max.message.bytes": "10000"}})
    samples = make_samples(1_500, poison_per_kind=0.0, seed=21)
    p.feed(samples)
    p.drain(processors(p.config, "i1", env={"COMPACTED_TOPIC": compacted}), 240)

    too_big = {s.order_id for s in samples if number(s.order_id) % 150 == 0}
    null_key = {s.order_id for s in samples if number(s.order_id) % 150 == 75}
    outputs = [json.loads(r.value)["order_id"] for r in read_all(p.bootstrap, p.output)]
    assert sorted(outputs) == sorted(s.order_id for s in samples
                                     if s.order_id not in too_big | null_key)
    assert read_all(p.bootstrap, compacted) == []
    dead = read_all(p.bootstrap, p.dead_letter)
    assert sorted(r.key.decode() for r in dead) == sorted(too_big | null_key)
    for record in dead:
        h = record.headers
        assert h["__processor.errors.stage"] == b"produce"
        assert h["__processor.errors.exception"] == b"KafkaException"
        reason = b"MSG_SIZE_TOO_LARGE" if record.key.decode() in too_big else b"INVALID_RECORD"
        assert reason in h["__processor.errors.message"], h["__processor.errors.message"]
        assert "__processor.errors.dropped" not in h


def test_outputs_over_their_topic_s_limit_are_dead_lettered_without_aborting_a_transaction(pipe, processors):
    """The limit is read at start: a record over it is refused before it is sent (sent, it
    would fail the whole request it is in), and batches of small records stay within it."""
    p = pipe(partitions=3, transform="tests.transforms:padded_every_100th",
             input_codec={"key": {"format": "string"}, "value": {"format": "json"}},
             output_value={"format": "json"}, topic_configs={"out": {"max.message.bytes": "2000"}})
    feed(p.bootstrap, p.input, 0, 1_000)
    began = time.monotonic()
    proc = processors(p.config, "i1")
    wait_for(lambda: p.committed_all() or not proc.running(), 120, "every input committed")
    took = time.monotonic() - began
    assert proc.terminate() == 0, proc.log()[-3000:]
    stopped = [line["message"] for line in proc.log_lines() if line["message"].startswith("stopped after")]
    aborted = int(re.search(r"(\d+) aborted", stopped[0]).group(1))
    print(f"\n10 outputs over the topic's 2,000 bytes among 1,000: drained in {took:.1f}s "
          f"(the process's start included), {aborted} transactions aborted")
    assert aborted == 0
    assert sorted(json.loads(r.value)["seq"] for r in read_all(p.bootstrap, p.output)) == [
        seq for seq in range(1_000) if seq % 100]
    dead = read_all(p.bootstrap, p.dead_letter)
    assert sorted(json.loads(r.value)["seq"] for r in dead) == list(range(0, 1_000, 100))
    assert all(b"over the max.message.bytes of topic" in r.headers["__processor.errors.message"]
               and r.headers["__processor.errors.stage"] == b"produce" for r in dead)


def test_dead_letters_the_dead_letter_topic_refuses_are_written_smaller(pipe, processors):
    p = pipe(partitions=2, topic_configs={"dlq": {"max.message.bytes": "4000"}})
    samples = make_samples(2_000, poison_per_kind=0.01, seed=22)
    for i in range(0, len(samples), 500):  # undecodable, and too big to dead-letter whole
        order_id = f"huge-{i}"
        samples.insert(i, Sample(order_id, "garbage", order_id.encode(), b"\xff" * 6_000))
    p.process_all(processors, samples)

    verdict = p.verify(samples)
    assert verdict.ok, verdict
    inputs = {r.key: r for r in read_all(p.bootstrap, p.input)}
    shrunk = 0
    for record in verdict.dead_letters:
        h, original = record.headers, inputs[record.key]
        assert int(h["__processor.errors.offset"]) == original.offset
        assert int(h["__processor.errors.partition"]) == original.partition
        if "__processor.errors.dropped" in h:  # the stack trace made it too big
            shrunk += 1
            assert h["__processor.errors.dropped"] == b"value" and record.value is None
            assert len(h["__processor.errors.stacktrace"]) <= 1024
        else:
            assert record.value == original.value
    assert shrunk == 4


@pytest.mark.parametrize("poison", [False, True], ids=["pass-through", "poison"])
def test_a_1_000_000_byte_input_is_dead_lettered_without_its_value(pipe, processors, poison):
    p = pipe(partitions=1, transform="tests.transforms:pass_or_poison_huge", input_codec=BYTES,
             output_value={"format": "bytes"},
             topic_configs={"in": {"max.message.bytes": "2000000"}})
    producer = Producer({"bootstrap.servers": p.bootstrap, "message.max.bytes": 2_000_000})
    keys = []
    for i in range(300):
        keys.append(f"k{i:04d}")
        producer.produce(p.input, b"h" * 1_000_000 if i % 100 == 50 else b"v%d" % i, keys[-1].encode())
    assert producer.flush(60) == 0
    p.drain(processors(p.config, "i1", env={"POISON_HUGE": "1" if poison else ""}), 180)

    huge = {k for i, k in enumerate(keys) if i % 100 == 50}
    outputs = read_all(p.bootstrap, p.output)
    assert sorted(r.key.decode() for r in outputs) == sorted(set(keys) - huge)
    dead = read_all(p.bootstrap, p.dead_letter)
    assert sorted(r.key.decode() for r in dead) == sorted(huge)
    for record in dead:
        h = record.headers
        assert record.value is None and h["__processor.errors.dropped"] == b"value"
        assert h["__processor.errors.stage"] == (b"transform" if poison else b"produce")


def test_a_dead_letter_topic_deleted_while_running_ends_the_run(pipe, processors):
    p = pipe(partitions=3)
    samples = make_samples(200_000, poison_per_kind=0.002, seed=23)
    poison = {s.key for s in samples if s.stage}
    p.feed(samples[:2_000])
    proc = processors(p.config, "i1")
    wait_for(lambda: p.committed_total() > 0, 60, "a first commit")
    before = committed_offsets(p.bootstrap, p.app_id, p.input)
    assert sum(max(o, 0) for o in before.values()) > 0, "nothing was committed before the delete"
    admin = AdminClient({"bootstrap.servers": p.bootstrap})
    admin.delete_topics([p.dead_letter])[p.dead_letter].result(30)
    p.feed(samples[2_000:])
    began = time.monotonic()
    code = proc.proc.wait(120)
    print(f"\nexit {code} {time.monotonic() - began:.1f}s after the dead-letter topic was deleted")

    assert code == 1, proc.log()[-3000:]
    lines = [json.loads(line) for line in proc.log().splitlines() if line.startswith("{")]
    errors = [line["message"] for line in lines if line["level"] == "ERROR" and line["logger"] == "processor"]
    assert errors == [f"stopping: topic '{p.dead_letter}' does not exist any more: create it again "
                      f"(the processor does not)"], errors
    after = committed_offsets(p.bootstrap, p.app_id, p.input)
    inputs = read_all(p.bootstrap, p.input)
    committed_since = [r for r in inputs if before.get(r.partition, 0) <= r.offset < after.get(r.partition, 0)]
    assert not [r for r in committed_since if r.key in poison], "poison committed without its dead letter"
    assert any(r.key in poison for r in inputs if r.offset >= after.get(r.partition, 0)), \
        "no poison record came after the delete: the run had nothing to refuse"
