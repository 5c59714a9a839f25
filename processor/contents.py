"""What the open transaction holds: where its inputs start and end, and what came of them.

The hot loop records nothing per input: the engine hands over each processed slice of a
consumed batch, and its first and last offsets per partition are found with list scans in C
(`map`, `list.index`). No message is kept: thousands of live messages would make every
garbage collection walk them.
"""

from __future__ import annotations

from collections import Counter

from confluent_kafka import Message, TopicPartition


class TxnContents:
    __slots__ = ("deadline", "topic", "first", "last", "inputs", "consumed", "others", "produced",
                 "dead_lettered", "timers")

    def __init__(self, deadline: float, topic: str | None = None):
        self.deadline = deadline
        self.topic = topic  # the only input topic, if there is one: then partitions suffice
        self.first: dict = {}  # per partition (or (topic, partition)): the first input's offset
        self.last: dict = {}  # and the last one's
        self.inputs = 0
        self.consumed: Counter = Counter()  # inputs by topic
        self.others = 0  # inputs that did not become exactly one output to the output topic
        self.produced: Counter = Counter()  # outputs of those other inputs, by topic
        self.dead_lettered: Counter = Counter()  # by (input topic, stage)
        self.timers: list[tuple] = []  # the timers fired in it (transaction.timer_identity)

    def add(self, records: list[Message], start: int, end: int) -> None:
        """records[start:end] were processed into this transaction."""
        if end <= start:
            return
        if start or end != len(records):
            records = records[start:end]
        if self.topic is None:
            keys = list(zip(map(Message.topic, records), map(Message.partition, records)))
            self.consumed.update(topic for topic, _ in keys)
        else:
            keys = list(map(Message.partition, records))
            self.consumed[self.topic] += len(keys)
        backwards = keys[::-1]
        for key in set(keys):
            if key not in self.first:
                self.first[key] = records[keys.index(key)].offset()
            self.last[key] = records[len(keys) - 1 - backwards.index(key)].offset()
        self.inputs += len(keys)

    def _topic_partition(self, key) -> tuple[str, int]:
        return (self.topic, key) if self.topic is not None else key

    def next_offsets(self) -> list[TopicPartition]:
        """Per partition, the offset after the last input: what the group commits."""
        return [TopicPartition(*self._topic_partition(key), offset + 1)
                for key, offset in self.last.items()]

    def first_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the first input's offset: where an abort rewinds to."""
        return {self._topic_partition(key): offset for key, offset in self.first.items()}

    def suspects(self, unadded: list[Message]) -> tuple[dict[tuple[str, int], tuple[int, int]], int]:
        """The inputs an abort concerns: first and last offset per partition and their number,
        with `unadded` (records handed to the pipeline but not added yet) where they come
        after this transaction's last input of their partition."""
        ranges = {tp: [first, self.last[key]]
                  for key, first in self.first.items() for tp in [self._topic_partition(key)]}
        count = self.inputs
        for msg in unadded:
            tp, offset = (msg.topic(), msg.partition()), msg.offset()
            span = ranges.setdefault(tp, [offset, offset - 1])
            if offset > span[1]:
                span[1] = offset
                count += 1
        return {tp: (first, last) for tp, (first, last) in ranges.items()}, count

    def produced_by_topic(self, output_topic: str) -> Counter:
        produced = Counter(self.produced)
        if self.inputs > self.others:
            produced[output_topic] += self.inputs - self.others
        return produced
