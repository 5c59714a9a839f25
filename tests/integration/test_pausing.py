"""A pause (an open circuit breaker) covers partitions a rebalance hands over later:
librdkafka keeps a partition's pause across rebalances, but a partition this consumer never
paused comes unpaused, so the engine pauses again on assignment."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer

from localkafka.clients import produce, unique_name, wait_for
from processor.pausing import Pause

pytestmark = pytest.mark.kafka
QUIET_SECONDS = 3.0  # how long a paused consumer is watched for records it should not get


def consumer(bootstrap: str, group: str, protocol: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                     "auto.offset.reset": "earliest", "group.protocol": protocol})


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_a_pause_covers_partitions_assigned_after_it(kafka_bootstrap, new_topic, protocol):
    topic = new_topic("in", partitions=2)
    produce(kafka_bootstrap, topic, [(b"k%d" % i, b"v") for i in range(200)])
    group = unique_name("pausing")
    other = consumer(kafka_bootstrap, group, protocol)  # holds a partition the paused one never had
    other.subscribe([topic])
    wait_for(lambda: other.consume(1, 0.1) is not None and other.assignment(), 60, "a first member")

    paused = consumer(kafka_bootstrap, group, protocol)
    pause = Pause(paused, seconds_until_probe=lambda: 60.0, incremental=protocol == "consumer")
    assignments = []

    def on_assign(c, partitions):  # all of them (classic) or those added (consumer protocol)
        assignments.append(sorted(tp.partition for tp in partitions))
        pause.reapply(partitions, held=set())

    def holds_both() -> bool:
        return sorted(tp.partition for tp in paused.assignment()) == [0, 1]

    def one_each() -> bool:  # both members poll, so that the group can rebalance
        other.consume(1, 0.1)
        paused.consume(1, 0.1)
        return len(assignments) == 1 and len(assignments[0]) == 1

    paused.subscribe([topic], on_assign=on_assign)
    wait_for(one_each, 60, "one partition each")
    pause.start(60.0, paused.assignment())
    got = []  # what the paused consumer receives from here on: nothing
    other.close()
    wait_for(lambda: got.extend(paused.consume(100, 0.1)) or holds_both(), 60,
             "both partitions after the first member left")
    quiet_until = time.monotonic() + QUIET_SECONDS
    while time.monotonic() < quiet_until:
        got.extend(paused.consume(100, 0.1))
    paused.close()

    assert got == [], f"{len(got)} records consumed while paused"
