"""Fixtures: a real Kafka broker for the session, unique topics, a private broker for fault tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

from localkafka import LocalBroker
from localkafka.clients import create_topics, unique_name


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The broker named by KAFKA_BOOTSTRAP, or a fresh local one for this session."""
    if os.environ.get("KAFKA_BOOTSTRAP"):
        yield os.environ["KAFKA_BOOTSTRAP"]
        return
    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    bootstrap = broker.start()
    print(f"\nlocal Kafka at {bootstrap}: start-to-ready {broker.ready_seconds:.1f}s",
          file=sys.stderr)
    yield bootstrap
    broker.stop()


@pytest.fixture
def new_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a topic whose name is unique to this test and call."""
    def make(label: str = "t", partitions: int = 1) -> str:
        name = unique_name(f"{request.node.name[:40]}-{label}".replace("[", "-").replace("]", ""))
        create_topics(kafka_bootstrap, [name], partitions)
        return name
    return make


@pytest.fixture
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of this test's own, to stop, kill and restart on the same data dir."""
    broker = LocalBroker(tmp_path_factory.mktemp("private-kafka"))
    broker.start()
    yield broker
    broker.stop()
