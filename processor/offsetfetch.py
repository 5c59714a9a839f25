"""Partitions the consumer stopped fetching because it could not learn their committed offsets.

librdkafka issue 5586: when the request for the committed offsets of newly assigned
partitions gets a request-level NOT_COORDINATOR (the group coordinator moving while a
broker restarts), those partitions are never fetched and the request is never sent again:
the consumer lives on and consumes nothing from them. The consumer reports it once, as
"Failed to fetch committed offsets for 0 partition(s)". Then the engine settles its open
transaction and assigns its partitions again from the committed offsets it fetches itself.
"""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, TopicPartition

TIMEOUT_S = 10.0


def lost_offset_fetch(error: KafkaError) -> bool:
    return error.code() == KafkaError.NOT_COORDINATOR and "Failed to fetch committed offsets" in error.str()


def committed_starts(consumer: Consumer, partitions: list[TopicPartition],
                     auto_offset_reset: str) -> list[TopicPartition]:
    """Where each partition resumes: its committed offset, else where `auto.offset.reset`
    says. Raises KafkaException while the coordinator does not answer."""
    reset = OFFSET_END if auto_offset_reset == "latest" else OFFSET_BEGINNING
    return [TopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else reset)
            for tp in consumer.committed(partitions, timeout=TIMEOUT_S)]
