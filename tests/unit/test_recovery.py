"""Store recovery without a broker: where it starts, several partitions at once in slices,
partitions that go while they recover, a broker that is away (the real broker, kill -9 and
rebalances: tests/integration/test_state.py)."""

from __future__ import annotations

import json

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from processor.kafka import FatalError
from processor.state import recovery
from processor.state.backend import MemoryBackend
from processor.state.codec import encode_key, encode_value
from processor.state.recovery import Recovery, start_offset
from processor.state.store import StorePartition, wall_ms
from tests.messages import message
from tests.unit.test_state import commit, store

TOPIC = "app-counts-changelog"


class FakeChangelog:
    """A restorer over changelog partitions in memory, `per_consume` records at a time, with
    end-of-partition events; the first `away` questions for offsets fail."""

    def __init__(self, logs: dict[int, list[tuple[bytes, bytes | None]]], away: int = 0,
                 per_consume: int = 3):
        self.logs = {p: [message(TOPIC, p, i, k, v) for i, (k, v) in enumerate(log)] for p, log in logs.items()}
        self.away, self.per_consume = away, per_consume
        self.reading: dict[int, int] = {}  # partition -> position
        self.ended: set[int] = set()

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        if self.away:
            self.away -= 1
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
        return 0, len(self.logs.get(tp.partition, []))

    def incremental_assign(self, partitions):
        for tp in partitions:
            self.reading[tp.partition] = tp.offset
            self.ended.discard(tp.partition)

    def incremental_unassign(self, partitions):
        for tp in partitions:
            del self.reading[tp.partition]

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition, self.reading[tp.partition]) for tp in partitions]

    def consume(self, n, timeout):
        out = []
        for partition, at in sorted(self.reading.items()):
            log = self.logs[partition]
            taken = log[at:at + min(n, self.per_consume)]
            out += taken
            self.reading[partition] = at + len(taken)
            if self.reading[partition] == len(log) and partition not in self.ended:
                self.ended.add(partition)
                out.append(Message(topic=TOPIC, partition=partition, offset=len(log),
                                   error=KafkaError(KafkaError._PARTITION_EOF)))
        return out


def partition(n: int) -> StorePartition:
    return StorePartition("counts", n, MemoryBackend(), None, lambda s: None)


def changes(partition: int, count: int) -> list[tuple[bytes, bytes]]:
    """`count` changes over 4 keys: key k ends at the last value written to it."""
    return [(encode_key(f"k{i % 4}"), encode_value(f"{partition}-{i}", 2**62)) for i in range(count)]


def test_partitions_recover_together_in_slices_and_report_what_is_left():
    restorer = FakeChangelog({0: changes(0, 10), 1: changes(1, 4), 2: []})
    stores, left = [partition(n) for n in range(3)], {}
    r = Recovery(restorer)
    for s in stores:
        r.add(s, TOPIC, 86_400_000, lambda n, p=s.partition: left.setdefault(p, []).append(n))
    done = []
    while r.jobs:
        done += [job.store.partition for job in r.step(0.0)]  # one read per slice
    assert done == [2, 1, 0]  # the empty one at once, then as their ends come
    assert [stores[0].get(f"k{i}") for i in range(4)] == ["0-8", "0-9", "0-6", "0-7"]
    assert [s.checkpoint()[0] for s in stores] == [10, 4, 0]
    assert left[0] == [10, 7, 4, 1, 0, 0] and left[2] == [0, 0]
    assert restorer.reading == {}  # every changelog partition given back


def test_a_partition_that_goes_while_it_recovers_keeps_its_checkpoint():
    restorer = FakeChangelog({0: changes(0, 10)})
    s = partition(0)
    s.set("k0", "before")
    commit(s)
    s.save_checkpoint(0)
    r = Recovery(restorer)
    r.add(s, TOPIC, 86_400_000, lambda n: None)
    assert r.step(0.0) == []
    r.drop([s])
    assert r.jobs == {} and restorer.reading == {}
    assert s.checkpoint()[0] == 0 and s.get("k0") == "0-0"  # applied again next time: same result


def test_recovery_asks_again_while_the_broker_is_away_and_gives_up_with_one_line(monkeypatch):
    monkeypatch.setattr(recovery.time, "sleep", lambda s: None)
    r = Recovery(FakeChangelog({0: changes(0, 2)}, away=2))
    r.add(partition(0), TOPIC, 86_400_000, lambda n: None)
    while r.jobs:
        r.step(0.0)
    monkeypatch.setattr(recovery, "STALL_S", 0.0)
    r = Recovery(FakeChangelog({}, away=10**9))
    r.add(partition(0), TOPIC, 86_400_000, lambda n: None)
    with pytest.raises(FatalError, match=r"recovering <store 'counts' partition 0>: cannot read the end"):
        r.step(0.0)


def test_a_changelog_that_does_not_move_on_ends_the_run(monkeypatch):
    restorer = FakeChangelog({0: changes(0, 5)}, per_consume=0)  # a transaction holds it
    clock = [0.0]
    r = Recovery(restorer, clock=lambda: clock[0])
    r.add(partition(0), TOPIC, 86_400_000, lambda n: None)
    r.step(0.0)
    clock[0] = recovery.STALL_S + 1
    with pytest.raises(FatalError, match=r"their changelogs \(app-counts-changelog \[0\]\) did not move on"):
        r.step(0.0)


@pytest.mark.parametrize("checkpoint, expected", [
    (None, "wiped"), ((5, "now"), "kept"), ((50, "now"), "wiped"), ((5, "old"), "wiped")])
def test_recovery_starts_at_a_trusted_checkpoint_and_rebuilds_anything_else(checkpoint, expected):
    s = store()
    s.set("a", 1)
    commit(s)
    if checkpoint is not None:
        offset, when = checkpoint
        s.save_checkpoint(offset)
        if when == "old":
            s.backend.data[b"mcheckpoint"] = json.dumps({"offset": offset, "time_ms": wall_ms() - 2_000}).encode()
    start, wiped = start_offset(s, low=2, high=10, retention_ms=1_000)
    assert (start, wiped, s.get("a")) == ((5, False, 1) if expected == "kept" else (2, True, None))
