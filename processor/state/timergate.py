"""When a timer may fire: only after the records of its partition that reached Kafka before its
due time have been processed, so that a reply that came in time beats its timeout, also when
the timer came due while nobody processed the partition (an instance down, a rebalance, a
recovery) or while the loop was behind (a broker restart, a backlog).

Per input partition of the timer's partition number, the timer waits until the partition is
caught up (the records processed reach the end the consumer last learnt of, or the consumer
reported the end: `enable.partition.eof`, and nothing came since), or the last record
processed from it has a timestamp at or after the due time. The timestamp is the record's:
the broker's append time on a topic with `message.timestamp.type=LogAppendTime`, the
producer's clock on one with `CreateTime` (the default: a producer whose clock is behind
makes timers wait until the stream passes them, one whose clock is ahead lets them fire
before records it wrote earlier).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, TopicPartition

Key = tuple[str, int]


class TimerGate:
    def __init__(self, topics: list[str], end_of: Callable[[Key], int]):
        """`end_of((topic, partition))`: the end offset the consumer last learnt of (cached)."""
        self.topics, self.end_of = topics, end_of  # the input topics: co-partitioned (timers live in a store)
        self.last_ms: dict[Key, int] = {}  # the last record processed's timestamp
        self.next: dict[Key, int] = {}  # the offset after it
        self.at_end: set[Key] = set()  # the consumer reported their end, nothing came since

    def consumed(self, messages: list[Message]) -> None:
        """A batch the loop handed to the pipeline (records) or was told (ends), in order."""
        last, after, at_end = self.last_ms, self.next, self.at_end
        for msg in messages:
            key = (msg.topic(), msg.partition())
            error = msg.error()
            if error is None:
                last[key] = msg.timestamp()[1]
                after[key] = msg.offset() + 1
                at_end.discard(key)
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end.add(key)

    def forget(self, partitions: list[TopicPartition] | set[Key]) -> None:
        """Assigned, revoked, or rewound after an abort: known again once fetched."""
        for tp in partitions:
            key = (tp.topic, tp.partition) if isinstance(tp, TopicPartition) else tp
            self.last_ms.pop(key, None)
            self.next.pop(key, None)
            self.at_end.discard(key)

    def horizon(self, partition: int) -> float:
        """The latest due time a timer of `partition` may have to fire now (ms; inf: any)."""
        horizon = math.inf
        for topic in self.topics:
            key = (topic, partition)
            if key in self.at_end or self.next.get(key, -1) >= self.end_of(key) > 0:
                continue  # caught up
            last = self.last_ms.get(key, -1)
            horizon = min(horizon, last if last >= 0 else -math.inf)
        return horizon
