"""Client-side helpers for the demo, tests and benchmarks: topics, plain produce, read back."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


_LEADER_MOVING = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                  KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION}
COORDINATOR_MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                      KafkaError.COORDINATOR_NOT_AVAILABLE}


# librdkafka's own log lines of these helper clients (e.g. "Coordinator load in progress")
# go to this logger instead of stderr: quiet unless a caller configures it
LIBRDKAFKA_LOG = logging.getLogger("localkafka.librdkafka")
LIBRDKAFKA_LOG.addHandler(logging.NullHandler())
LIBRDKAFKA_LOG.propagate = False


def client(kind, settings: dict):
    """A Consumer, Producer or AdminClient whose librdkafka logs go to LIBRDKAFKA_LOG."""
    return kind({**settings, "logger": LIBRDKAFKA_LOG})


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 1,
                  config: dict[str, str] | None = None) -> None:
    admin = client(AdminClient, {"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1, config=config or {}) for n in names],
                                  operation_timeout=30)
    for future in futures.values():
        future.result(timeout=60)


def produce(bootstrap: str, topic: str, records: Iterable[tuple],
            headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> int:
    """Produce (key, value) pairs, or (key, value, headers) triples, idempotently and wait
    for every delivery; `headers` go with every pair."""
    producer = client(Producer, {"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                 "linger.ms": 5})
    failures: list = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    count = 0
    for key, value, *own in records:
        kwargs = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(topic, value, key, headers=own[0] if own else headers,
                                 on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
    remaining = producer.flush(60)
    if failures or remaining:
        raise KafkaException(f"produce to {topic} failed: {failures[:3]} ({remaining} undelivered)")
    return count


@dataclass(frozen=True)
class Read:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp: int = -1  # ms (the producer's, or the broker's append time on LogAppendTime topics)


def read_all(bootstrap: str, topic: str, isolation: str = "read_committed",
             timeout: float = 60.0) -> list[Read]:
    """Every record of `topic` visible under `isolation`, in partition order."""
    consumer = client(Consumer, {"bootstrap.servers": bootstrap, "group.id": unique_name("reader"),
                                 "enable.auto.commit": False, "isolation.level": isolation,
                                 "auto.offset.reset": "earliest"})
    try:
        meta = consumer.list_topics(topic, timeout=30).topics[topic]
        if meta.error is not None:
            raise KafkaException(meta.error)
        parts = [TopicPartition(topic, p, 0) for p in sorted(meta.partitions)]
        consumer.assign(parts)
        # the high watermark; under read_committed it is reached once no transaction is open
        ends = {p.partition: consumer.get_watermark_offsets(p, timeout=30, cached=False)[1]
                for p in parts}
        out: list[Read] = []
        deadline = time.monotonic() + timeout
        while True:
            positions = {tp.partition: tp.offset for tp in consumer.position(parts)}
            if all(ends[p] == 0 or positions[p] >= ends[p] for p in ends):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic}: at {positions}, end {ends}")
            for msg in consumer.consume(1000, 0.5):
                if msg.error():
                    raise KafkaException(msg.error())
                out.append(Read(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                                dict(msg.headers() or []), msg.timestamp()[1]))
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll `condition` until it returns a truthy value, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(interval)


def committed_offsets(bootstrap: str, group: str, topic: str, timeout: float = 30.0) -> dict[int, int]:
    """The group's committed offsets (negative where none), retrying while the coordinator moves.

    read_uncommitted, so the fetch does not wait (require_stable) for a pending transactional
    offset commit, such as a killed instance's; it returns the last committed offsets."""
    consumer = client(Consumer, {"bootstrap.servers": bootstrap, "group.id": group,
                                 "isolation.level": "read_uncommitted"})
    deadline = time.monotonic() + timeout
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        parts = [TopicPartition(topic, p) for p in meta.partitions]
        while True:
            try:
                return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=timeout)}
            except KafkaException as exc:
                if not exc.args[0].retriable() and exc.args[0].code() not in COORDINATOR_MOVING \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = client(Consumer, {"bootstrap.servers": bootstrap, "group.id": unique_name("ends")})
    try:
        deadline = time.monotonic() + 30
        while True:  # a topic just created may not have its leaders in place yet
            try:
                meta = consumer.list_topics(topic, timeout=30).topics[topic]
                return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
                        for p in meta.partitions}
            except KafkaException as exc:
                error = exc.args[0]
                if not (error.retriable() or error.code() in _LEADER_MOVING) \
                        or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        consumer.close()
