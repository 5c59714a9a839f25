"""The changelog topics: one per store, compacted, one partition per input partition.

The processor creates them at start (with `state.replication_factor`) and refuses to start
with one line when one exists with another partition count or without compaction: a store
partition must find its changes in the changelog partition of the same number.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from threading import Event
from typing import TypeVar

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from processor.kafka import UNREACHABLE, FatalError, KafkaAway, ask_until_answered, kafka_error

TIMEOUT_S = 10.0  # one question; while Kafka is away it is asked again, and a stop waits for one
PREPARE_S = 120.0  # Kafka away at start (a broker restarting): ask again this long
T = TypeVar("T")
DEFAULT_DELETE_RETENTION_MS = 86_400_000
_DENIED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
           KafkaError.POLICY_VIOLATION}
_AWAY = UNREACHABLE | {KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_CONTROLLER}


def away(error: KafkaError) -> bool:
    return error.retriable() or error.code() in _AWAY


def changelog_topic(app_id: str, store: str) -> str:
    return f"{app_id}-{store}-changelog"


def sorted_errors(ask: Callable[[], T], what: str) -> Callable[[], T]:
    """`ask` with Kafka's errors sorted for `ask_until_answered`: Kafka away (KafkaAway: ask
    again) or a refusal (FatalError saying that `what` failed)."""
    def asked() -> T:
        try:
            return ask()
        except KafkaException as exc:
            error = kafka_error(exc)
            if away(error):
                raise KafkaAway(error.str()) from exc
            raise FatalError(f"{what}: {error.str()}") from exc
    return asked


def prepare_changelogs(admin: AdminClient, input_topics: list[str], topics: list[str],
                       replication_factor: int, stopping: Event) -> dict[str, int]:
    """`ensure_changelogs` for partitions like the inputs', asked again while Kafka is away
    (up to `PREPARE_S`, or until a stop: Stopped); FatalError when they do not fit."""
    what = "cannot prepare the changelog topics"
    return ask_until_answered(sorted_errors(lambda: ensure_changelogs(
        admin, topics, input_partitions(admin, input_topics), replication_factor), what),
        PREPARE_S, what, stopping)


def input_partitions(admin: AdminClient, topics: list[str]) -> int:
    """The partition count the input topics share (stores are partitioned like them)."""
    metadata = admin.list_topics(timeout=TIMEOUT_S).topics
    counts = {topic: len(metadata[topic].partitions) for topic in topics if topic in metadata}
    missing = [topic for topic in topics if topic not in counts]
    if missing:
        raise FatalError(f"input topic {missing[0]!r} does not exist (or this client may not describe it)")
    if len(set(counts.values())) > 1:
        raise FatalError(f"state needs input topics with the same partition count (co-partitioned), "
                         f"they have {counts}")
    return next(iter(counts.values()))


def ensure_changelogs(admin: AdminClient, topics: list[str], partitions: int,
                      replication_factor: int, kind: str = "changelog topic",
                      check_partitions: bool = True) -> dict[str, int]:
    """Create the changelog topics that are missing and check the others; returns each
    one's `delete.retention.ms` (how long its tombstones last). `kind` names them in the
    errors (the outbox relay's progress topic is made and checked the same way, whatever
    its partition count: the relay uses partition 0)."""
    existing = admin.list_topics(timeout=TIMEOUT_S).topics
    new = [NewTopic(topic, partitions, replication_factor, config={"cleanup.policy": "compact"})
           for topic in topics if topic not in existing]
    for topic, future in admin.create_topics(new, operation_timeout=TIMEOUT_S).items() if new else ():
        try:
            future.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            error = kafka_error(exc)
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another instance starting at the same time made it: checked below
            if away(error):
                raise KafkaAway(f"creating {kind} {topic!r}: {error.str()}") from exc
            hint = (f": create it (cleanup.policy=compact, {partitions} partitions) or let this "
                    f"client create topics" if error.code() in _DENIED else "")
            raise FatalError(f"cannot create the {kind} {topic!r}: {error.str()}{hint}") from exc
    if new:
        existing = admin.list_topics(timeout=TIMEOUT_S).topics
    for topic in topics:
        if check_partitions and topic in existing and len(existing[topic].partitions) != partitions:
            raise FatalError(f"{kind} {topic!r} has {len(existing[topic].partitions)} "
                             f"partitions, the inputs {partitions}: a store is partitioned like its inputs, so "
                             f"its keys would not be found again; give the inputs back their partition "
                             f"count (deleting the {kind} would start the state afresh, empty)")
    retention = {}
    for topic in topics:
        configs = _settings(admin, topic, kind)
        if "compact" not in configs["cleanup.policy"].value:
            raise FatalError(f"{kind} {topic!r} is not compacted "
                             f"(cleanup.policy={configs['cleanup.policy'].value}): set it to compact")
        entry = configs.get("delete.retention.ms")
        retention[topic] = int(entry.value) if entry is not None else DEFAULT_DELETE_RETENTION_MS
    return retention


def _settings(admin: AdminClient, topic: str, kind: str) -> dict:
    """The topic's settings; a topic just created may take a moment to be known everywhere."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        future = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)])
        try:
            return next(iter(future.values())).result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            error = kafka_error(exc)
            if away(error):
                raise KafkaAway(f"reading the settings of {kind} {topic!r}: {error.str()}") from exc
            if error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise FatalError(f"cannot read the settings of {kind} {topic!r}: "
                                 f"{error.str()}") from exc
            time.sleep(0.2)
