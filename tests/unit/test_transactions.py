"""The transaction lifecycle on fake clients (tests/fakeclients.py): what commits, what
aborts and rewinds, how refused records are found, how errors are classified."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor.codecs import BytesCodec
from processor.engine import Engine
from processor.kafka import ClientErrors, FatalError, MemberFenced, is_fatal, is_fenced
from processor.metrics import Metrics
from processor.pipeline import Pipeline
from processor.refusals import Refusals
from processor.streak import AbortStreak
from processor.topiclimits import TopicLimits
from processor.transaction import Transactions
from processor.transform import Output, Poison
from processor.txproducer import Reachability, TransactionalProducer
from tests.fakeclients import FakeCluster, FakeConsumer, FakeProducer, error

TOPICS = {"in", "out", "dlq"}


def inputs(partitions: int = 3, per_partition: int = 40, value=lambda p, i: b"v%d-%d" % (p, i)):
    return {("in", p): [(b"k%d-%d" % (p, i), value(p, i)) for i in range(per_partition)]
            for p in range(partitions)}


def run(records, transform, cluster: FakeCluster, *, max_batch: int = 100_000,
        on_consume=None, seconds: float = 8.0, stores=None, commit_interval_s: float = 0.005,
        until=lambda: True, limits=None):
    """Run the engine until every input offset is committed and `until()` holds (or
    `seconds` pass)."""
    stopping = threading.Event()
    ends = {tp: len(log) for tp, log in records.items()}
    deadline = time.monotonic() + seconds

    def watch():
        if on_consume is not None:
            on_consume(engine.consumer)
        if (cluster.offsets == ends and until()) or time.monotonic() > deadline:
            stopping.set()

    def new_consumer():
        fresh = FakeConsumer(records, cluster)  # from the committed offsets on
        fresh.on_consume = watch
        return fresh

    consumer = new_consumer()
    txp = TransactionalProducer(lambda extra: FakeProducer(extra, cluster), 5.0,
                                Reachability(120.0, ClientErrors()))
    metrics = Metrics()
    tx = Transactions(consumer, txp, input_topics=["in"], output_topic="out", dead_letter_topic="dlq",
                      app_id="app", commit_interval_s=commit_interval_s, max_batch_records=max_batch,
                      stacktrace_max_bytes=8192, metrics=metrics, hooks=[stores] if stores else [],
                      limits=limits)
    if stores:
        stores.produce = tx.produce_to
    pipeline = Pipeline("app", transform, BytesCodec(), BytesCodec(), "out", BytesCodec(),
                        BytesCodec(), True, stores=stores)
    engine = Engine(consumer, tx, pipeline, topics=["in"], new_consumer=new_consumer)
    engine.run(stopping)
    assert cluster.offsets == ends, "not every input was committed"
    assert not cluster.unfired(), f"faults injected that never fired: {cluster.unfired()}"
    return tx, metrics


def values(cluster: FakeCluster, topic: str) -> list[bytes]:
    return sorted(value for _, value, _ in cluster.outputs.get(topic, []))


def every_value(records) -> list[bytes]:
    return sorted(v for log in records.values() for _, v in log)


def dead(cluster: FakeCluster) -> dict[bytes, dict]:
    return {key: headers for key, _, headers in cluster.outputs.get("dlq", [])}


def test_outputs_and_offsets_commit_together_once():
    cluster, records = FakeCluster(TOPICS), inputs()
    _, metrics = run(records, lambda r: r.value, cluster, max_batch=25)
    assert values(cluster, "out") == every_value(records)
    assert metrics.totals["committed"] == cluster.commits >= 120 / 25
    assert metrics.totals["aborted"] == 0


def test_an_abortable_commit_error_aborts_and_rewinds_without_duplicates():
    cluster, records = FakeCluster(TOPICS), inputs()
    cluster.faults["commit_transaction"] = [error(KafkaError._TIMED_OUT_QUEUE, txn_requires_abort=True)] * 3
    _, metrics = run(records, lambda r: r.value, cluster)
    assert values(cluster, "out") == every_value(records)
    assert metrics.totals["aborted"] == 3 and cluster.calls.count("abort") == 3


def test_fan_out_is_all_or_none_when_one_output_is_refused_before_sending():
    cluster, records = FakeCluster(TOPICS, too_big=1000), inputs(1, 30)

    def three(record):
        big = record.offset == 7
        return [Output(record.value + b"-%d" % n + (b"x" * 2000 if big and n == 1 else b""))
                for n in range(3)]

    run(records, three, cluster)
    assert values(cluster, "out") == sorted(v + b"-%d" % n for _, v in records[("in", 0)]
                                            for n in range(3) if v != b"v0-7")
    assert set(dead(cluster)) == {b"k0-7"}
    assert dead(cluster)[b"k0-7"]["__processor.errors.stage"] == b"produce"


def test_records_the_broker_refuses_are_found_and_dead_lettered_alone():
    refused = {(p, i) for p in range(3) for i in (5, 22, 23)}
    records = inputs(value=lambda p, i: (b"BIG" if (p, i) in refused else b"v") + b"%d-%d" % (p, i))
    cluster = FakeCluster(TOPICS, refuse=lambda topic, value: KafkaError.MSG_SIZE_TOO_LARGE
                          if topic == "out" and value.startswith(b"BIG") else None)
    tx, _ = run(records, lambda r: r.value, cluster)
    assert values(cluster, "out") == [v for v in every_value(records) if not v.startswith(b"BIG")]
    letters = dead(cluster)
    assert set(letters) == {b"k%d-%d" % pi for pi in refused}
    for headers in letters.values():
        assert headers["__processor.errors.stage"] == b"produce"
        assert b"MSG_SIZE_TOO_LARGE" in headers["__processor.errors.message"]
    assert tx.refusals.cap is None and not tx.refusals.suspect  # full-size transactions again


def test_a_topic_whose_records_the_broker_refuses_as_too_large_has_its_limit_read_again():
    """Its max.message.bytes may have been lowered since the start: read again, not trusted."""
    from tests.unit.test_topiclimits import Admin  # noqa: PLC0415
    admin = Admin({"out": 10**7, "dlq": 10**7})
    records = inputs(1, 20, value=lambda p, i: b"BIG" if i == 5 else b"v%d" % i)
    cluster = FakeCluster(TOPICS, refuse=lambda topic, value: KafkaError.MSG_SIZE_TOO_LARGE
                          if topic == "out" and value == b"BIG" else None)
    run(records, lambda r: r.value, cluster, limits=TopicLimits(admin))
    assert admin.asked.count("out") >= 2 and len(dead(cluster)) == 1


def test_a_dead_letter_the_topic_refuses_is_written_without_its_value():
    records = inputs(1, 20)
    cluster = FakeCluster(TOPICS, refuse=lambda topic, value: KafkaError.MSG_SIZE_TOO_LARGE
                          if topic == "dlq" and value is not None else None)

    def poison_some(record):
        if record.offset % 7 == 3:
            raise Poison("no")
        return record.value

    run(records, poison_some, cluster)
    letters = {key: value for key, value, _ in cluster.outputs["dlq"]}
    assert letters == {b"k0-3": None, b"k0-10": None, b"k0-17": None}
    assert {h["__processor.errors.dropped"] for h in dead(cluster).values()} == {b"value"}
    assert len(values(cluster, "out")) == 17


def test_a_rebalance_in_the_middle_commits_first_and_loses_nothing():
    cluster, records = FakeCluster(TOPICS), inputs(3, 200)
    rebalanced = []

    def rebalance_once(consumer):
        if not rebalanced and sum(consumer.position.values()) > 100:
            rebalanced.append(True)
            consumer.rebalance()

    run(records, lambda r: r.value, cluster, max_batch=50, on_consume=rebalance_once)
    assert rebalanced and values(cluster, "out") == every_value(records)


def test_a_fatal_producer_error_replaces_the_producer_and_processes_again():
    cluster, records = FakeCluster(TOPICS), inputs()
    cluster.faults["commit_transaction"] = [error(KafkaError._FATAL, fatal=True)]
    _, metrics = run(records, lambda r: r.value, cluster)
    assert values(cluster, "out") == every_value(records)
    assert cluster.calls.count("init") == 2  # the replacement fenced the failed one


def test_the_fencing_of_a_replaced_producer_by_its_replacement_does_not_end_the_run():
    cluster, built = FakeCluster(TOPICS), []
    errors = ClientErrors()

    def new_producer(extra):
        built.append(FakeProducer(extra, cluster))
        built[-1].error_cb = extra["error_cb"]
        return built[-1]

    txp = TransactionalProducer(new_producer, 5.0, Reachability(120.0, errors))
    txp._replace("stuck")
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer producer", fatal=True)
    built[0].error_cb(fenced)  # librdkafka tells the replaced producer it was fenced
    errors.check()
    built[1].error_cb(fenced)  # the producer in use: a newer instance took over
    with pytest.raises(FatalError, match="fenced by a newer instance"):
        errors.check()


@pytest.mark.parametrize("code", [KafkaError.ILLEGAL_GENERATION, KafkaError.STALE_MEMBER_EPOCH,
                                  KafkaError.UNKNOWN_MEMBER_ID, KafkaError.FENCED_MEMBER_EPOCH])
def test_an_offset_commit_from_a_member_the_group_moved_past_aborts_and_retries(code):
    cluster, records = FakeCluster(TOPICS), inputs()
    cluster.faults["send_offsets_to_transaction"] = [error(code)]  # not flagged abortable
    _, metrics = run(records, lambda r: r.value, cluster)
    assert values(cluster, "out") == every_value(records) and metrics.totals["aborted"] == 1


def test_a_retriable_error_is_retried_in_place():
    cluster, records = FakeCluster(TOPICS), inputs()
    cluster.faults["commit_transaction"] = [error(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, retriable=True)]
    _, metrics = run(records, lambda r: r.value, cluster)
    assert values(cluster, "out") == every_value(records) and metrics.totals["aborted"] == 0


@pytest.mark.parametrize("code", [KafkaError._FENCED, KafkaError.PRODUCER_FENCED])
def test_fenced_ends_the_run(code):
    cluster = FakeCluster(TOPICS)
    cluster.faults["commit_transaction"] = [error(code, fatal=True)]
    with pytest.raises(FatalError, match="^commit_transaction: fenced by a newer instance with the same instance_id: "):
        run(inputs(), lambda r: r.value, cluster)


def test_a_dead_letter_topic_that_disappears_ends_the_run():
    cluster = FakeCluster(TOPICS)

    def poison_then_delete(record):
        cluster.topics.discard("dlq")
        raise Poison("no")

    with pytest.raises(FatalError, match="topic 'dlq' does not exist any more"):
        run(inputs(1, 5), poison_then_delete, cluster)
    assert cluster.offsets == {}  # nothing committed without its dead letter


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_aborts_without_a_commit_turn_unhealthy_after_the_bound_and_a_commit_heals():
    clock = Clock()
    streak = AbortStreak(bound_s=60, clock=clock)
    for _ in range(59):
        streak.aborted("MSG_SIZE_TOO_LARGE")
        clock.now += 1
    assert streak.problem() is None
    clock.now += 1
    assert "59 transactions aborted and none committed in 60s" in streak.problem()
    assert "MSG_SIZE_TOO_LARGE" in streak.problem()
    streak.committed()
    assert streak.problem() is None


def test_refusals_halve_to_the_culprit_and_widen_after_commits():
    refusals = Refusals()
    big = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)
    refusals.refused(big, {("in", 0): (100, 199)}, 100, dead_letter_refused=False)
    assert refusals.limit(100_000) == 50
    refusals.refused(big, {("in", 0): (100, 149)}, 50, dead_letter_refused=False)
    assert refusals.limit(100_000) == 25
    refusals.refused(big, {("in", 0): (120, 120)}, 1, dead_letter_refused=False)
    assert set(refusals.culprits) == {("in", 0, 120)} and refusals.limit(100_000) == 1
    refusals.refused(big, {("in", 0): (120, 120)}, 1, dead_letter_refused=True)
    assert refusals.shrink == {("in", 0, 120): 1}
    refusals.committed({("in", 0): 121})
    assert refusals.culprits == {} and refusals.shrink == {} and refusals.limit(100_000) == 2
    refusals.committed({("in", 0): 200})
    assert refusals.limit(100_000) == 100_000 and not refusals.suspect


MEMBER_FENCED = KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by other "
                                             "consumer with same group.instance.id")


def test_a_fenced_static_member_joins_again_with_a_new_consumer_and_nothing_doubles():
    cluster, records = FakeCluster(TOPICS), inputs()
    cluster.faults["consume"] = [KafkaException(MEMBER_FENCED)] * 2
    cluster.consume_faults_after = 50  # with a transaction open: it must not commit
    run(records, lambda r: r.value, cluster, commit_interval_s=0.5)
    assert values(cluster, "out") == every_value(records)
    assert is_fatal(MEMBER_FENCED) and is_fenced(MEMBER_FENCED)


def test_a_static_member_fenced_again_and_again_ends_the_run():
    cluster, records = FakeCluster(TOPICS), inputs()
    cluster.faults["consume"] = [KafkaException(MEMBER_FENCED)] * 4
    with pytest.raises(FatalError, match="fenced by a newer instance") as raised:
        run(records, lambda r: r.value, cluster)
    assert not isinstance(raised.value, MemberFenced) and cluster.faults["consume"] == []


def test_a_consumer_fenced_as_a_static_member_is_told_apart():
    errors = ClientErrors()
    errors(MEMBER_FENCED)
    errors.check()  # not a fatal error of the process: the engine decides
    with pytest.raises(MemberFenced, match="^fenced by a newer instance with the same instance_id: "):
        errors.check_member()
    errors.check_member()  # told once
    other = KafkaError(KafkaError._FATAL, "Fatal error: something else")
    assert is_fatal(other) and not is_fenced(other)


@pytest.mark.parametrize("trouble", [False, True])
def test_partitions_whose_committed_offsets_the_consumer_lost_are_fetched_again_once(trouble):
    """librdkafka issue 5586: the consumer stops fetching, says so once; nothing is lost or
    doubled, also when (`trouble`) the open transaction aborts and the coordinator does not
    tell the committed offsets at once."""
    cluster, records = FakeCluster(TOPICS), inputs()
    lost = KafkaError(KafkaError.NOT_COORDINATOR, 'Failed to fetch committed offsets for 0 partition(s) '
                      'in group "app": Broker: Not coordinator')
    cluster.faults["consume"] = [KafkaException(lost)]
    cluster.consume_faults_after = 50
    injected = []

    def once_stalled(consumer):  # the commit right after the stall aborts, the offsets wait
        if trouble and consumer.stalled and not injected:
            injected.append(1)
            cluster.faults["committed"] = [error(KafkaError.COORDINATOR_NOT_AVAILABLE)] * 2
            cluster.faults["commit_transaction"] = [error(KafkaError._TIMED_OUT_QUEUE, txn_requires_abort=True)]
    run(records, lambda r: r.value, cluster, max_batch=7, on_consume=once_stalled)
    assert bool(injected) == trouble
    assert values(cluster, "out") == every_value(records)
