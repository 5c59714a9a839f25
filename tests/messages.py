"""confluent-kafka `Message` objects built offline, for unit tests of per-record logic."""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message


def message(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
            headers: list[tuple[str, bytes]] | None = None, timestamp: int = 1_790_000_000_000) -> Message:
    return Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                   headers=headers, timestamp=(TIMESTAMP_CREATE_TIME, timestamp))
