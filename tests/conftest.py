"""Fixtures: a real Kafka broker for the session, unique topics, a private broker for fault tests."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from localkafka import LocalBroker
from localpg import CRASH_PRONE, LocalPostgres
from localkafka.clients import committed_offsets, create_topics, end_offsets, produce, unique_name, wait_for
from tests.processes import ProcessorProcess, write_config
from tests.verify import Verdict, verify


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


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """A PostgreSQL server (Debian's) for the session, in a temporary directory: its DSN."""
    server = LocalPostgres()
    yield server.start()
    server.remove()


@pytest.fixture
def private_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own, to stop, kill and restart."""
    server = LocalPostgres()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def crash_prone_postgres() -> Iterator[LocalPostgres]:
    """A PostgreSQL server of this test's own that a crash makes forget what it did not flush
    (localpg.CRASH_PRONE)."""
    server = LocalPostgres(CRASH_PRONE)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def new_topic(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Create a topic whose name is unique to this test and call."""
    def make(label: str = "t", partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(f"{request.node.name[:40]}-{label}".replace("[", "-").replace("]", ""))
        create_topics(kafka_bootstrap, [name], partitions, config)
        return name
    return make


@pytest.fixture
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A broker of this test's own, to stop, kill and restart on the same data dir."""
    broker = LocalBroker(tmp_path_factory.mktemp("private-kafka"))
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def processors(tmp_path: Path) -> Iterator[Callable[..., ProcessorProcess]]:
    """Start `processor run` (or `outbox`) children; any still running at the end are killed."""
    started: list[ProcessorProcess] = []

    def start(config: Path, instance_id: str, env: dict | None = None,
              command: str = "run") -> ProcessorProcess:
        log = tmp_path / f"processor-{instance_id}-{len(started)}.log"
        started.append(ProcessorProcess(config, instance_id, log, env, command).start())
        return started[-1]

    yield start
    for proc in started:
        proc.kill()


@dataclass
class Pipe:
    """The topics and config of one processing pipeline under test."""

    bootstrap: str
    input: str
    output: str
    dead_letter: str
    app_id: str
    config: Path

    def committed_all(self) -> bool:
        ends = end_offsets(self.bootstrap, self.input)
        return committed_offsets(self.bootstrap, self.app_id, self.input) == ends

    def committed_total(self) -> int:
        return sum(max(o, 0) for o in committed_offsets(self.bootstrap, self.app_id, self.input).values())

    def feed(self, samples) -> None:
        produce(self.bootstrap, self.input, [(s.key, s.value) for s in samples])

    def process_all(self, processors, samples, instance: str = "i1", timeout: float = 120) -> None:
        """Feed `samples`, run one instance until every input is committed, and stop it."""
        self.feed(samples)
        self.drain(processors(self.config, instance), timeout)

    def drain(self, proc: ProcessorProcess, timeout: float = 180) -> None:
        """Wait until every input is committed, then SIGTERM `proc`: it must exit 0."""
        wait_for(lambda: not proc.running() or self.committed_all(), timeout, "all inputs committed")
        code = proc.terminate()
        assert code == 0, proc.log()[-3000:]

    def kill_at_random_moments(self, processors, instance: str, feeder, kills: int, seed: int) -> int:
        """Start `instance` and `kill -9` it a random moment after it committed something,
        again and again, `kills` times or until `feeder`'s stream is all committed; returns
        how many kills there were."""
        rng = random.Random(seed)
        done = 0
        while done < kills and not (feeder.done() and self.committed_all()):
            before = self.committed_total()
            proc = processors(self.config, instance)
            wait_for(lambda: self.committed_total() > before or not proc.running(), 120, "progress")
            wait_for(lambda: rng.random() < 0.3, 5, "a random moment", interval=0.05)
            proc.kill()
            done += 1
        return done

    def verify(self, samples) -> Verdict:
        return verify(self.bootstrap, samples, self.output, self.dead_letter)


@pytest.fixture
def pipe(kafka_bootstrap: str, new_topic, tmp_path: Path) -> Callable[..., Pipe]:
    def make(partitions: int = 3, topic_configs: dict[str, dict[str, str]] | None = None,
             **config) -> Pipe:
        """`topic_configs` by label (in, out, dlq): topic-level settings."""
        topics = [new_topic(label, partitions, (topic_configs or {}).get(label))
                  for label in ("in", "out", "dlq")]
        app_id = unique_name("app")
        path = write_config(tmp_path / f"{app_id}.yaml", kafka_bootstrap, input_topic=topics[0],
                            output_topic=topics[1], dead_letter_topic=topics[2], app_id=app_id,
                            **config)
        return Pipe(kafka_bootstrap, *topics, app_id, path)
    return make
