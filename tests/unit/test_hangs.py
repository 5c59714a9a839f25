"""Hung records: found on the threads' stacks, marked in the group's offset metadata, and
dead-lettered once they hung the processor too often (fake clients; the real broker in
tests/integration/test_hung_transform.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from confluent_kafka import TopicPartition

from processor import codecs
from processor.codecs import BytesCodec, JsonCodec
from processor.hangmarks import HANGS_BEFORE_DEAD_LETTER, Hang, HangMarks
from processor.hangwatch import EXIT_GRACE_S, HangWatch
from processor.pipeline import Pipeline
from tests.fakeclients import FakeCluster, FakeConsumer
from tests.messages import message
from tests.unit.test_transactions import TOPICS, dead, inputs, run, values


def test_a_mark_reads_back_and_foreign_metadata_is_no_mark():
    assert Hang.parse(Hang(41, 2).metadata()) == Hang(41, 2)
    for other in (None, "", "x", "[]", '{"processor.hung": 3}', '{"other": [1, 2]}'):
        assert Hang.parse(other) is None


def marks(cluster: FakeCluster, reset: str = "earliest") -> HangMarks:
    consumer = FakeConsumer(inputs(partitions=2), cluster)
    marks = HangMarks(consumer, reset)
    marks.assigned(consumer.partitions())
    return marks


def test_commits_carry_a_mark_until_they_pass_its_record():
    cluster = FakeCluster(TOPICS)
    cluster.offsets, cluster.metadata = {("in", 0): 3}, {("in", 0): Hang(7, 1).metadata()}
    m = marks(cluster)
    carried = m.carry([TopicPartition("in", 0, 7), TopicPartition("in", 1, 9)])
    assert [(tp.offset, Hang.parse(tp.metadata)) for tp in carried] == [(7, Hang(7, 1)), (9, None)]
    m.committed(carried)
    assert m.hangs == {("in", 0): Hang(7, 1)}
    m.committed(m.carry([TopicPartition("in", 0, 8)]))
    assert m.hangs == {} and m.positions[("in", 0)] == 8


def test_the_next_mark_counts_on_and_keeps_the_committed_offset():
    cluster = FakeCluster(TOPICS)
    cluster.offsets, cluster.metadata = {("in", 0): 3}, {("in", 0): Hang(7, 1).metadata()}
    m = marks(cluster)
    where, hang = m.next_hang(message("in", 0, 7, b"k", b"v"))
    assert (where.offset, hang) == (3, Hang(7, 2))
    where, hang = m.next_hang(message("in", 0, 9, b"k", b"v"))  # another record: counts anew
    assert (where.offset, hang) == (3, Hang(9, 1))
    # nothing committed yet: from where the consumer started (earliest: the log start)
    where, hang = m.next_hang(message("in", 1, 5, b"k", b"v"))
    assert (where.offset, hang) == (0, Hang(5, 1))
    # with auto_offset_reset latest, from the end offset read at assignment
    where, _ = marks(cluster, "latest").next_hang(message("in", 1, 45, b"k", b"v"))
    assert where.offset == 40


@pytest.mark.parametrize("times", [HANGS_BEFORE_DEAD_LETTER - 1, HANGS_BEFORE_DEAD_LETTER])
def test_a_record_that_hung_too_often_is_dead_lettered_without_calling_the_transform(times):
    cluster, records = FakeCluster(TOPICS), inputs(partitions=2)
    cluster.offsets, cluster.metadata = {("in", 0): 2}, {("in", 0): Hang(7, times).metadata()}
    called = []

    def transform(record):
        called.append((record.partition, record.offset))
        return record.value

    run(records, transform, cluster, max_batch=3)
    hung_again = times >= HANGS_BEFORE_DEAD_LETTER
    assert ((0, 7) in called) is not hung_again
    if hung_again:
        letter = dead(cluster)[b"k0-7"]
        assert letter["__processor.errors.stage"] == b"transform"
        assert letter["__processor.errors.exception"] == b"RecordHung"
        assert letter["__processor.errors.attempts"] == str(times).encode()
    expected = sorted(v for p, log in records.items() for i, (_, v) in enumerate(log)
                      if not (p == ("in", 0) and (i < 2 or (hung_again and i == 7))))
    assert values(cluster, "out") == expected
    assert cluster.metadata[("in", 0)] == ""  # the last commit passed the mark: gone


@pytest.mark.parametrize("where", ["transform", "deserialize"])
def test_the_watch_names_the_record_and_stage_a_thread_is_stuck_in(where, monkeypatch):
    release, entered = threading.Event(), threading.Event()

    def wait(*_):
        entered.set()
        release.wait(10)
        return {}

    if where == "deserialize":
        monkeypatch.setattr(codecs, "jsontext", SimpleNamespace(loads=wait))
    pipeline = Pipeline("app", (lambda r: wait()) if where == "transform" else (lambda r: r.value),
                        BytesCodec(), JsonCodec(), "out", BytesCodec(), JsonCodec(), True)
    now = [100.0]
    watch = HangWatch(pipeline.fill.__code__, 15.0, clock=lambda: now[0])
    thread = threading.Thread(target=pipeline.process, args=(message("in", 3, 42, b"k", b"{}"),))
    thread.start()
    try:
        assert entered.wait(10)
        assert watch.sample() is None and watch.problem() is None
        now[0] += 15.0
        stuck = watch.sample()
        assert stuck is not None and (stuck.msg.partition(), stuck.msg.offset(), stuck.stage) == (3, 42, where)
        assert watch.problem() == (f"record in [3] @42 has been in stage {where} for 15s, "
                                   f"past processing.record_deadline_ms (15000)")
        assert not watch.overdue()
        now[0] += EXIT_GRACE_S
        assert watch.sample() is not None and watch.overdue()
    finally:
        release.set()
        thread.join(10)
    assert watch.sample() is None and watch.problem() is None  # it returned: healthy again


def test_the_watch_sees_nothing_in_a_loop_that_moves_on():
    """Each record takes longer than the deadline by the watch's clock, but each sample
    finds another record: no record is stuck."""
    inside, go = threading.Semaphore(0), threading.Semaphore(0)

    def transform(record):
        inside.release()
        go.acquire(timeout=10)
        return record.value

    pipeline = Pipeline("app", transform, BytesCodec(), BytesCodec(), "out", BytesCodec(),
                        BytesCodec(), True)
    now = [0.0]
    watch = HangWatch(pipeline.fill.__code__, 15.0, clock=lambda: now[0])
    records = [message("in", 0, offset, b"k", b"v") for offset in range(5)]
    thread = threading.Thread(target=pipeline.fill, args=(records, 0, lambda *a, **k: None, 1e18))
    thread.start()
    for _ in records:
        assert inside.acquire(timeout=10)
        assert watch.sample() is None
        now[0] += 20.0
        go.release()
    thread.join(10)
