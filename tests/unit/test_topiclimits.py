"""Topic limits without a broker: the size check, the batch size, and a limit that cannot be read."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.topiclimits import BATCH_OVERHEAD, HEADER_OVERHEAD, RECORD_OVERHEAD, TopicLimits


class Admin:
    """describe_configs of topics with these limits; others are not this client's to read."""

    def __init__(self, limits: dict[str, int]):
        self.limits, self.asked = limits, []

    def describe_configs(self, resources):
        futures = {}
        for resource in resources:
            future = futures[resource] = Future()
            self.asked.append(resource.name)
            if resource.name in self.limits:
                future.set_result({"max.message.bytes": SimpleNamespace(value=str(self.limits[resource.name]))})
            elif resource.name != "silent":  # Kafka does not answer for it
                future.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)))
        return futures


def test_a_record_over_its_topic_s_limit_is_refused_as_the_client_refuses_one():
    limits = TopicLimits(Admin({"out": 2_000}))
    room = 2_000 - BATCH_OVERHEAD - RECORD_OVERHEAD - HEADER_OVERHEAD - 1  # one header, one byte name
    limits.check("out", b"v" * (room - 3), b"key", [("h", b"")])  # exactly at the limit
    with pytest.raises(KafkaException) as refused:
        limits.check("out", b"v" * (room - 2), b"key", [("h", b"")])
    error = refused.value.args[0]
    assert error.code() == KafkaError.MSG_SIZE_TOO_LARGE
    assert error.str() == "a record of 2001 bytes is over the max.message.bytes of topic 'out' (2000)"


def test_batches_stay_within_the_smallest_limit_below_the_client_s_own():
    limits = TopicLimits(Admin({"out": 2_000, "dlq": 5_000, "big": 10_000_000}))
    assert limits.batch_size(["out", "dlq"]) == 2_000 - BATCH_OVERHEAD
    assert limits.batch_size(["big"]) is None and not limits.tight("big") and limits.tight("out")


def test_a_limit_that_cannot_be_read_is_said_once_and_left_to_the_bisection(caplog):
    admin = Admin({})
    limits = TopicLimits(admin)
    with caplog.at_level(logging.WARNING, logger="processor"):
        for _ in range(3):
            limits.check("secret", b"v" * 10_000_000, None, None)  # not refused: unknown
    assert admin.asked == ["secret"]
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith("the max.message.bytes of topic 'secret' cannot be read (Broker: Topic authorization failed)")
    assert TopicLimits(None).batch_size(["out"]) is None  # compression: nothing known


def test_a_limit_lowered_since_it_was_read_is_read_again_after_a_refusal():
    admin = Admin({"out": 5_000})
    limits = TopicLimits(admin)
    limits.check("out", b"v" * 3_000, None, None)
    admin.limits["out"] = 2_000  # an operator lowers it; the broker refuses the next large one
    limits.check("out", b"v" * 3_000, None, None)  # still the old limit: sent, and refused
    limits.forget("out")
    with pytest.raises(KafkaException, match=r"over the max.message.bytes of topic 'out' \(2000\)"):
        limits.check("out", b"v" * 3_000, None, None)
    assert admin.asked == ["out", "out"]


def test_a_limit_kafka_does_not_tell_in_time_is_unknown_not_an_error(monkeypatch, caplog):
    monkeypatch.setattr("processor.topiclimits.TIMEOUT_S", 0.05)
    limits = TopicLimits(Admin({"out": 2_000}))
    with caplog.at_level(logging.WARNING, logger="processor"):
        assert limits.batch_size(["out", "silent"]) == 2_000 - BATCH_OVERHEAD  # one request for both
    assert limits.of("silent") is None
    assert [r.getMessage() for r in caplog.records] == [
        "the max.message.bytes of topic 'silent' cannot be read (no answer in 0s): a record over it is "
        "found by aborting transactions"]
