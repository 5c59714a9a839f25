"""In-memory stand-ins for confluent-kafka's Consumer and transactional Producer, for unit
tests of the transaction lifecycle. They model what the lifecycle relies on (positions and
seeks, transactions that commit outputs and offsets together or not at all, records the
broker refuses, delivery reports, errors by class); they prove nothing about Kafka itself,
which the integration tests do."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from tests.messages import message


class FakeConsumer:
    def __init__(self, inputs: dict[tuple[str, int], list[tuple]], cluster: FakeCluster):
        """`inputs`: (key, value) or (key, value, timestamp ms) by (topic, partition)."""
        self.logs = {tp: [message(tp[0], tp[1], i, record[0], record[1], **dict(zip(["timestamp"], record[2:])))
                          for i, record in enumerate(records)]
                     for tp, records in inputs.items()}
        self.cluster = cluster
        self.position = {tp: cluster.offsets.get(tp, 0) for tp in self.logs}
        self.topics = cluster.topics
        self.paused: set = set()
        self.stalled: set = set()  # not fetched until assigned again (librdkafka issue 5586)
        self.callbacks: dict = {}
        self.assigned = False
        self.on_consume: Callable[[], None] = lambda: None
        self.at_end: set = set()  # partitions whose end was reported, nothing delivered since

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def partitions(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for t, p in sorted(self.logs)]

    def rebalance(self) -> None:
        """Revoke everything and assign it again, as a classic rebalance does."""
        self.callbacks["revoke"](self, self.partitions())
        self.callbacks["assign"](self, self.partitions())

    def consume(self, n: int, timeout: float):
        self.on_consume()
        if self.cluster.faults.get("consume") and sum(self.position.values()) >= self.cluster.consume_faults_after:
            error = self.cluster.faults["consume"].pop(0).args[0]
            if "Failed to fetch committed offsets" in error.str():  # those never fetched yet
                self.stalled = {tp for tp, position in self.position.items() if position == 0}
            return [Message(error=error)]  # as librdkafka tells
        if not self.assigned:
            self.assigned = True
            self.callbacks["assign"](self, self.partitions())
        out = []
        for tp, log in sorted(self.logs.items()):
            while len(out) < n and tp not in self.paused | self.stalled and self.position[tp] < len(log):
                out.append(log[self.position[tp]])
                self.position[tp] += 1
                self.at_end.discard(tp)
            if tp not in self.paused | self.stalled | self.at_end and self.position[tp] == len(log):
                # as librdkafka with enable.partition.eof: once each time the end is reached
                out.append(Message(topic=tp[0], partition=tp[1], offset=self.position[tp],
                                   error=KafkaError(KafkaError._PARTITION_EOF)))
                self.at_end.add(tp)
        return out

    def seek(self, tp: TopicPartition) -> None:
        self.position[(tp.topic, tp.partition)] = tp.offset
        self.at_end.discard((tp.topic, tp.partition))

    def pause(self, partitions) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def rebalance_protocol(self) -> str:
        return "EAGER"

    def assign(self, partitions) -> None:
        for tp in partitions:
            if tp.offset >= 0 or tp.offset == OFFSET_BEGINNING:
                self.position[(tp.topic, tp.partition)] = max(tp.offset, 0)
                self.at_end.discard((tp.topic, tp.partition))
                self.stalled.discard((tp.topic, tp.partition))

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def committed(self, partitions, timeout=None):
        self.cluster.raise_if("committed")
        return [TopicPartition(tp.topic, tp.partition,
                               self.cluster.offsets.get((tp.topic, tp.partition), -1001),
                               metadata=self.cluster.metadata.get((tp.topic, tp.partition)) or "")
                for tp in partitions]

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return 0, len(self.logs[(tp.topic, tp.partition)])

    def list_topics(self, topic=None, timeout=None):
        return SimpleNamespace(topics={t: SimpleNamespace(error=None) for t in self.topics})

    def close(self) -> None:
        pass


def error(code: int, **flags) -> KafkaException:
    return KafkaException(KafkaError(code, f"fake {KafkaError(code).name()}", **flags))


class FakeProducer:
    """Commits what a transaction produced and its offsets together. A record `refuse(topic,
    value)` says the broker refuses fails the commit with that error, and every record of its
    topic in the transaction gets a delivery report with it (as a refused produce request
    does); `too_big` bytes or more are refused by `produce()` at once."""

    def __init__(self, settings: dict, cluster: FakeCluster):
        self.on_delivery = settings["on_delivery"]
        self.cluster = cluster
        self.open: list | None = None
        self.reports: list = []
        self.failed: KafkaException | None = None  # the transaction must abort

    def init_transactions(self, timeout=None):
        self.cluster.calls.append("init")
        self.cluster.raise_if("init_transactions")

    def begin_transaction(self):
        self.cluster.raise_if("begin_transaction")
        self.open, self.failed = [], None

    def produce(self, topic, value=None, key=None, headers=None, partition=None):
        if self.failed is not None:
            raise error(KafkaError._STATE)
        if value is not None and len(value) >= self.cluster.too_big:
            raise error(KafkaError.MSG_SIZE_TOO_LARGE)
        self.open.append((topic, value, key, headers))

    def poll(self, timeout=0):
        reports, self.reports = self.reports, []
        for err, msg in reports:
            self.on_delivery(err, msg)
        return len(reports)

    def send_offsets_to_transaction(self, offsets, metadata, timeout=None):
        self.cluster.raise_if("send_offsets_to_transaction")
        self.offsets = {(tp.topic, tp.partition): (tp.offset, tp.metadata or "") for tp in offsets}

    def commit_transaction(self, timeout=None):
        self.cluster.raise_if("commit_transaction")
        for topic, value, key, headers in self.open:
            code = (KafkaError.UNKNOWN_TOPIC_OR_PART if topic not in self.cluster.topics
                    else self.cluster.refuse(topic, value))
            if code is not None:
                for other in self.open:
                    if other[0] == topic:
                        self.reports.append((KafkaError(code), message(topic, 0, -1, other[2], other[1])))
                self.failed = error(code, txn_requires_abort=True)
                raise self.failed
        self.cluster.commit(self.open, self.offsets)
        self.open = None

    def abort_transaction(self, timeout=None):
        self.cluster.calls.append("abort")
        self.open, self.failed = None, None

    def list_topics(self, topic=None, timeout=None):
        return SimpleNamespace(topics={t: None for t in self.cluster.topics})


class FakeCluster:
    """What committed transactions left: outputs by topic and offsets; and the faults to inject."""

    def __init__(self, topics: set[str], refuse=lambda topic, value: None, too_big: int = 10**9):
        self.topics, self.refuse, self.too_big = set(topics), refuse, too_big
        self.outputs: dict[str, list] = {}
        self.offsets: dict = {}  # committed offset by (topic, partition)
        self.metadata: dict = {}  # and its metadata
        self.commits = 0
        self.calls: list[str] = []
        self.faults: dict[str, list[KafkaException]] = {}  # call name -> errors to raise, in turn
        self.consume_faults_after = 0  # records consumed before a "consume" fault comes

    def unfired(self) -> dict[str, int]:
        """Faults injected that never came (a test of a fault that did not fire proves nothing)."""
        return {call: len(errors) for call, errors in self.faults.items() if errors}

    def raise_if(self, call: str) -> None:
        if self.faults.get(call):
            raise self.faults[call].pop(0)

    def commit(self, records, offsets) -> None:
        for topic, value, key, headers in records:
            self.outputs.setdefault(topic, []).append((key, value, dict(headers or [])))
        self.offsets.update((tp, offset) for tp, (offset, _) in offsets.items())
        self.metadata.update((tp, metadata) for tp, (_, metadata) in offsets.items())
        self.commits += 1
