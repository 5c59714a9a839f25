"""A broker without the consumer group protocol (KIP-848 turned off): `check --connect` and
`run` with group_protocol consumer say so in one line, and what to set instead."""

from __future__ import annotations

import subprocess
import sys

import pytest

from localkafka import LocalBroker
from localkafka.clients import create_topics, unique_name
from processor.kafka import NO_CONSUMER_PROTOCOL
from tests.processes import write_config

pytestmark = pytest.mark.kafka


@pytest.fixture
def classic_only_broker(tmp_path_factory):
    broker = LocalBroker(tmp_path_factory.mktemp("classic-kafka"),
                         broker_properties={"group.coordinator.rebalance.protocols": "classic"})
    broker.start()
    yield broker
    broker.stop()


def test_check_and_run_name_the_missing_consumer_protocol(classic_only_broker, tmp_path, processors):
    topics = [unique_name(label) for label in ("in", "out", "dlq")]
    create_topics(classic_only_broker.bootstrap, topics, 1)
    config = write_config(tmp_path / "c.yaml", classic_only_broker.bootstrap, input_topic=topics[0],
                          output_topic=topics[1], dead_letter_topic=topics[2], app_id=unique_name("app"),
                          kafka={"group_protocol": "consumer"})
    check = subprocess.run([sys.executable, "-m", "processor", "check", "-c", str(config), "--connect"],
                           capture_output=True, text=True, timeout=60)
    assert (check.returncode, check.stderr) == (2, f"kafka.group_protocol: {NO_CONSUMER_PROTOCOL}\n")

    proc = processors(config, "i1")
    assert proc.proc.wait(60) == 1
    assert proc.errors() == [f"stopping: {NO_CONSUMER_PROTOCOL}"]
    assert "Traceback" not in proc.log()


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_check_connect_passes_with_either_protocol_where_the_broker_has_both(pipe, protocol):
    p = pipe(partitions=2, kafka={"group_protocol": protocol})
    check = subprocess.run([sys.executable, "-m", "processor", "check", "-c", str(p.config), "--connect"],
                           capture_output=True, text=True, timeout=60)
    assert (check.returncode, check.stdout, check.stderr) == (0, f"{p.config}: OK\n", "")
