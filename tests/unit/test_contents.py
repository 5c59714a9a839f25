"""A transaction's offsets come from the slices of batches handed to it, whatever their order."""

from __future__ import annotations

from collections import Counter

from processor.contents import TxnContents
from tests.messages import message


def batch(*spec: tuple[str, int, int]):
    return [message(topic, partition, offset, b"k", b"v") for topic, partition, offset in spec]


def offsets(txn: TxnContents) -> dict:
    return {(tp.topic, tp.partition): tp.offset for tp in txn.next_offsets()}


def test_single_topic_first_and_next_offsets_across_batches_and_slices():
    txn = TxnContents(deadline=0, topic="in")
    first = batch(("in", 0, 10), ("in", 1, 5), ("in", 0, 11), ("in", 1, 6), ("in", 0, 12))
    txn.add(first, 1, 4)  # only records 1..3 belong to this transaction
    txn.add(batch(("in", 2, 7), ("in", 0, 13)), 0, 2)
    txn.add(batch(("in", 1, 99)), 0, 0)  # an empty slice adds nothing
    assert offsets(txn) == {("in", 0): 14, ("in", 1): 7, ("in", 2): 8}
    assert txn.first_offsets() == {("in", 0): 11, ("in", 1): 5, ("in", 2): 7}
    assert txn.inputs == 5 and txn.consumed == Counter({"in": 5})


def test_several_topics_are_told_apart():
    txn = TxnContents(deadline=0)
    txn.add(batch(("a", 0, 1), ("b", 0, 40), ("a", 0, 2), ("b", 1, 3)), 0, 4)
    assert offsets(txn) == {("a", 0): 3, ("b", 0): 41, ("b", 1): 4}
    assert txn.first_offsets() == {("a", 0): 1, ("b", 0): 40, ("b", 1): 3}
    assert txn.consumed == Counter({"a": 2, "b": 2})


def test_produced_counts_single_outputs_without_per_record_work():
    txn = TxnContents(deadline=0, topic="in")
    txn.add(batch(*[("in", 0, i) for i in range(10)]), 0, 10)
    txn.others = 3  # e.g. one dropped, one fanned out to two records of "side", one dead letter
    txn.produced["side"] += 2
    assert txn.produced_by_topic("out") == Counter({"out": 7, "side": 2})
