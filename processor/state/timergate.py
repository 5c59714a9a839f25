"""When a timer may fire: a timer that came due while its partition was not being processed
(an instance down, a rebalance, a recovery, a rewind after an abort) fires only after the
records of its partition that reached Kafka before its due time have been processed, so a
reply that came in time beats its timeout.

After a partition is taken up (assigned, or rewound after an abort), each of its input
partitions of that number holds its timers back until the last record processed from it has
a timestamp at or after their due time, or until the consumer says it reached its end
(`enable.partition.eof`). From then on its timers fire on time again: a live partition's
records reach the loop within a fetch. The timestamp is the record's: the broker's append
time on a topic with `message.timestamp.type=LogAppendTime`, the producer's clock on one
with `CreateTime` (the default: a producer whose clock is behind makes such timers wait
until the stream passes them, one whose clock is ahead lets them fire before records it
wrote earlier).
"""

from __future__ import annotations

import math

from confluent_kafka import KafkaError, Message, TopicPartition


class TimerGate:
    def __init__(self, topics: list[str]):
        self.topics = topics  # the input topics: co-partitioned (timers live in a store)
        self.last_ms: dict[tuple[str, int], int] = {}  # the last record processed's timestamp
        self.caught_up: set[tuple[str, int]] = set()  # reached their end since taken up

    def consumed(self, messages: list[Message]) -> None:
        """A batch the loop handed to the pipeline (records) or was told (ends), in order."""
        last, caught_up = self.last_ms, self.caught_up
        for msg in messages:
            error = msg.error()
            if error is None:
                last[(msg.topic(), msg.partition())] = msg.timestamp()[1]
            elif error.code() == KafkaError._PARTITION_EOF:
                caught_up.add((msg.topic(), msg.partition()))

    def forget(self, partitions: list[TopicPartition] | set[tuple[str, int]]) -> None:
        """Taken up (assigned, or rewound after an abort): held back until caught up again."""
        for tp in partitions:
            key = (tp.topic, tp.partition) if isinstance(tp, TopicPartition) else tp
            self.last_ms.pop(key, None)
            self.caught_up.discard(key)

    def horizon(self, partition: int) -> float:
        """The latest due time a timer of `partition` may have to fire now (ms; inf: any)."""
        horizon = math.inf
        for topic in self.topics:
            key = (topic, partition)
            if key not in self.caught_up:
                last = self.last_ms.get(key, -1)
                horizon = min(horizon, last if last >= 0 else -math.inf)
        return horizon
