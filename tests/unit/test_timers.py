"""Durable timers without a broker: scheduling, replacing and cancelling on a store partition,
and firing through the engine on fake clients (once, through aborts, failures dead-lettered).
Against the real broker, with kill -9 and rebalances: tests/integration/test_timers.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from processor.metrics import Metrics
from processor.state.backend import MemoryBackend
from processor.state.recovery import Recovery
from processor.state.stores import Stores
from processor.state.timers import TIMERS_STORE, Timers
from processor.transform import Output, Record, Timer
from tests.fakeclients import FakeCluster, error
from tests.unit.test_state import NoChangelog, commit, store
from tests.unit.test_transactions import TOPICS, dead, inputs, run, values


class FakeStores:
    """The two things `Timers` asks of the stores: the partition of a store, which are active."""

    def __init__(self, partitions=(0,)):
        self.stores = {p: store() for p in partitions}
        self.restoring: dict = {}

    def partition(self, name, partition):
        return self.stores[partition]

    def assigned_partitions(self):
        return set(self.stores)


def test_timers_come_due_in_time_order_and_are_replaced_or_cancelled_by_name_and_key():
    now = [10_000]
    timers = Timers("app", FakeStores(), clock_ms=lambda: now[0])
    mine = timers.of(0, "k1")
    mine.schedule("late", at_ms=12_000, payload={"n": 1})
    mine.schedule("soon", at_ms=11_000, key="k2")
    mine.schedule("soon", at_ms=10_500, key="k2", payload=b"raw")  # replaces the one for k2
    mine.schedule("gone", at_ms=10_100)
    assert mine.cancel("gone") and not mine.cancel("gone")
    assert mine.due_ms("soon", key="k2") == 10_500 and mine.due_ms("soon") is None
    assert timers.next_due_ms() == 10_500
    assert timers.due(10) == []
    now[0] = 12_000
    fired = timers.due(10)
    assert [(t.name, t.key, t.payload, t.due_ms) for t in fired] == [
        ("soon", "k2", b"raw", 10_500), ("late", "k1", {"n": 1}, 12_000)]
    assert isinstance(fired[0], Timer) and not isinstance(fired[0], Record)


def test_a_timer_removed_is_not_due_again_and_one_rescheduled_by_its_own_call_stays():
    now = [5_000]
    timers = Timers("app", FakeStores(), clock_ms=lambda: now[0])
    partition = timers.of(0, 7)
    partition.schedule("tick", at_ms=5_000)
    partition.schedule("once", at_ms=4_000)
    tick, once = sorted(timers.due(10), key=lambda t: t.name, reverse=True)
    timers.remove(tick)
    timers.of(0, 7).schedule("tick", after_ms=1_000)  # what a periodic timer's call does
    timers.remove(once)
    assert [t.name for t in timers.due(10)] == []
    assert timers.of(0, 7).due_ms("tick") >= 5_000 + 1_000 - 10  # after_ms counts from the wall clock


def test_the_next_due_time_sees_the_open_transaction_and_the_database():
    now = [1_000]
    stores = FakeStores()
    timers = Timers("app", stores, clock_ms=lambda: now[0])
    timers.of(0, "a").schedule("t", at_ms=3_000)
    commit(stores.stores[0])  # in the database now
    timers.forget()
    assert timers.next_due_ms() == 3_000
    timers.of(0, "b").schedule("t", at_ms=2_000)  # in the open record
    assert timers.next_due_ms() == 2_000
    timers.of(0, "b").cancel("t")
    timers.forget()
    assert timers.next_due_ms() == 3_000
    assert timers.seconds_until_due() == 2.0


@pytest.mark.parametrize("name", ["", "a\x00b", 3])
def test_a_timer_name_must_be_a_plain_string(name):
    with pytest.raises(ValueError, match="timer name"):
        Timers("app", FakeStores()).of(0, "k").schedule(name, after_ms=1)


def test_schedule_takes_exactly_one_time():
    timers = Timers("app", FakeStores()).of(0, "k")
    with pytest.raises(ValueError, match="exactly one"):
        timers.schedule("t")
    with pytest.raises(ValueError, match="exactly one"):
        timers.schedule("t", at_ms=1, after_ms=1)


# -- through the engine, on fake clients -------------------------------------------------------
def timer_stores(tmp_path: Path, *names: str) -> Stores:
    stores = Stores("app", tmp_path, {name: None for name in (*names, TIMERS_STORE)}, NoChangelog,
                    Metrics(), open_backend=lambda path: MemoryBackend())
    stores.restorer = NoChangelog()
    stores.retention_ms = {topic: 86_400_000 for topic in stores.topics.values()}
    stores.recovery = Recovery(stores.restorer)
    return stores


def remind(call):
    """Each record schedules a reminder due at once; each reminder becomes one output."""
    if isinstance(call, Timer):
        if call.payload.endswith("-5"):
            raise ValueError("a reminder that fails")
        return Output(f"reminded {call.payload}".encode(), key=call.key)
    call.timers.schedule("remind", after_ms=0, payload=call.value.decode())
    return None


def test_each_timer_fires_once_through_aborts_and_a_failing_one_is_dead_lettered_once(tmp_path):
    cluster = FakeCluster(TOPICS | {"app-__timers-changelog"})
    cluster.faults["commit_transaction"] = [error(KafkaError._TIMED_OUT_QUEUE, txn_requires_abort=True)] * 4
    records = inputs(3, 12)
    expected = sorted(b"reminded " + v for log in records.values() for _, v in log if not v.endswith(b"-5"))

    def all_fired():
        return len(cluster.outputs.get("out", [])) + len(cluster.outputs.get("dlq", [])) >= 36

    run(records, remind, cluster, max_batch=5, stores=timer_stores(tmp_path), until=all_fired)
    assert values(cluster, "out") == expected  # each reminder once, none lost to the aborts
    letters = [headers for key, value, headers in cluster.outputs["dlq"]]
    assert len(letters) == 3
    assert {h["__processor.errors.topic"] for h in letters} == {b"__timers"}
    assert {h["__processor.errors.stage"] for h in letters} == {b"transform"}
    fired = [json.loads(value) for _, value, _ in cluster.outputs["dlq"]]
    assert sorted(f["payload"] for f in fired) == ["v0-5", "v1-5", "v2-5"]
    # the changelog holds every timer's removal: a recovered store has none left
    last = {}
    for key, value, _ in cluster.outputs["app-__timers-changelog"]:
        last[key] = value
    assert last and all(value is None for value in last.values())
    assert len(dead(cluster)) == 3


def test_a_timer_scheduled_for_the_future_waits_and_a_cancelled_one_never_fires(tmp_path):
    cluster = FakeCluster(TOPICS | {"app-__timers-changelog"})

    def later(call):
        if isinstance(call, Timer):
            return Output(b"fired " + call.key)
        call.timers.schedule("t", after_ms=300)
        if call.value.endswith(b"-1"):
            call.timers.cancel("t")
        return None

    run(inputs(1, 3), later, cluster, stores=timer_stores(tmp_path),
        until=lambda: len(cluster.outputs.get("out", [])) >= 2)
    assert sorted(k for k, _, _ in cluster.outputs["out"]) == [b"k0-0", b"k0-2"]
    assert values(cluster, "out") == [b"fired k0-0", b"fired k0-2"]


def test_a_timer_whose_output_kafka_refuses_at_once_is_dead_lettered_at_stage_produce(tmp_path):
    cluster = FakeCluster(TOPICS | {"app-__timers-changelog"}, too_big=1_000)

    def big_reminder(call):
        if isinstance(call, Timer):
            return Output(b"x" * (2_000 if call.key == b"k0-1" else 10))
        call.timers.schedule("remind", after_ms=0)
        return None

    run(inputs(1, 3), big_reminder, cluster, stores=timer_stores(tmp_path),
        until=lambda: len(cluster.outputs.get("out", [])) + len(cluster.outputs.get("dlq", [])) >= 3)
    assert sorted(k for k, _, _ in cluster.outputs["out"]) == [b"k0-0", b"k0-2"]
    [(key, value, headers)] = cluster.outputs["dlq"]
    assert headers["__processor.errors.stage"] == b"produce" and json.loads(value)["key"] == "k0-1"
    assert key == b"k0-1"


def test_a_timer_output_the_broker_refuses_is_dead_lettered_and_no_input_is_blamed(tmp_path):
    """The broker refuses whole requests and names no record: with timers in the transaction,
    the inputs are not suspects (they would be dead-lettered in the timer's place)."""
    def refuse(topic, value):
        return KafkaError.MSG_SIZE_TOO_LARGE if value == b"over the topic's limit" else None
    cluster = FakeCluster(TOPICS | {"app-__timers-changelog"}, refuse=refuse)

    def remind(call):
        if isinstance(call, Timer):
            return Output(b"over the topic's limit" if call.key == b"k1-2" else b"reminded " + call.key)
        call.timers.schedule("remind", after_ms=0)
        return call.value

    records = inputs(3, 8)
    run(records, remind, cluster, stores=timer_stores(tmp_path), max_batch=4,
        until=lambda: sum(len(cluster.outputs.get(t, [])) for t in ("out", "dlq")) >= 2 * 24)
    letters = cluster.outputs.get("dlq", [])
    assert [json.loads(value)["key"] for _, value, _ in letters] == ["k1-2"], "only the timer is to blame"
    assert letters[0][2]["__processor.errors.stage"] == b"produce"
    outs = values(cluster, "out")
    assert outs == sorted([v for log in records.values() for _, v in log]
                          + [b"reminded " + k for log in records.values() for k, _ in log if k != b"k1-2"])


def test_a_timer_due_before_1970_fires_at_once_and_one_past_the_index_is_refused():
    now = [10_000]
    timers = Timers("app", FakeStores(), clock_ms=lambda: now[0])
    mine = timers.of(0, "k")
    assert mine.schedule("past", at_ms=-1000) == 0
    mine.schedule("later", at_ms=20_000)
    assert timers.next_due_ms() == 0
    assert [t.name for t in timers.due(10)] == ["past"]
    with pytest.raises(ValueError, match="below 9223372036854775807 ms"):
        mine.schedule("never", at_ms=2**63)


def test_a_timer_overdue_after_a_restart_fires_after_the_records_that_came_before_its_due_time(tmp_path):
    """The instance was down: a backlog of replies, the first at T0, one every 10 ms, and a
    timer due at T0 + 200 ms, long past. The replies up to its due time are processed first
    (a reply that came in time beats its timeout); a partition at its end lets it fire."""
    cluster = FakeCluster(TOPICS | {"app-__timers-changelog"})
    t0 = int(time.time() * 1000) - 100_000
    records = {("in", 0): [(b"k", b"%d" % i, t0 + 10 * i) for i in range(40)]}
    seen: list[str] = []

    def transform(call):
        if isinstance(call, Timer):
            seen.append("timer")
            return None
        seen.append(call.value.decode())
        if call.value == b"0":
            call.timers.schedule("timeout", at_ms=t0 + 200)
        return None

    run(records, transform, cluster, max_batch=5, stores=timer_stores(tmp_path), until=lambda: "timer" in seen)
    assert seen.index("timer") > seen.index("20"), seen  # record 20 is the first at its due time
    assert seen.count("timer") == 1
