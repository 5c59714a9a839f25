"""Crashes, zombies and rebalances: read_committed output stays exactly once."""

from __future__ import annotations

import re

import pytest
from confluent_kafka import Consumer, KafkaException

from examples.orders import make_samples
from localkafka.clients import wait_for
from tests.feeder import Feeder
from tests.processes import ProcessorProcess

pytestmark = pytest.mark.kafka
PROTOCOLS = pytest.mark.parametrize("protocol", ["classic", "consumer"])
# kills per run: under the consumer protocol each restart waits out the broker's 45 s session
KILLS = {"classic": 5, "consumer": 2}


# the consumer protocol's run (~100 s: each restart waits out the broker's 45 s session) is long
@pytest.mark.parametrize("protocol", ["classic", pytest.param("consumer", marks=pytest.mark.long)])
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(pipe, processors, protocol):
    p = pipe(partitions=3, kafka={"group_protocol": protocol})
    samples = make_samples(50_000, poison_per_kind=0.005, seed=4)
    feeder = Feeder(p.bootstrap, p.input, samples, seconds=20)  # a live stream, however fast we are
    kills = p.kill_at_random_moments(processors, "crashy", feeder, KILLS[protocol], seed=4)
    feeder.finish()
    final = processors(p.config, "crashy")
    p.drain(final, 180)

    assert kills >= min(3, KILLS[protocol]), "the stream ended before enough crashes: make it longer"
    verdict = p.verify(samples)
    assert verdict.ok, verdict


def live_stream(p, processors, samples, chunks: int, instance: str,
                committed: int) -> tuple[Feeder, ProcessorProcess]:
    """Feed `samples` in chunks while `instance` runs; return the feeder and the instance
    once more than `committed` inputs are committed."""
    feeder = Feeder(p.bootstrap, p.input, samples, seconds=chunks * 0.25)
    proc = processors(p.config, instance)
    wait_for(lambda: p.committed_total() > committed, 60, f"{instance} committing")
    return feeder, proc


@PROTOCOLS
def test_a_second_instance_with_the_same_id_fences_the_first(pipe, processors, protocol):
    p = pipe(partitions=3, kafka={"group_protocol": protocol})
    samples = make_samples(20_000, poison_per_kind=0.005, seed=5)
    feeder, first = live_stream(p, processors, samples, chunks=40, instance="same-id", committed=0)
    second = processors(p.config, "same-id")

    assert first.proc.wait(120) == 1
    [error] = first.errors()
    assert re.match(r"stopping: (\w+: )?fenced by a newer instance with the same instance_id: ", error), error
    feeder.finish()
    p.drain(second, 180)
    verdict = p.verify(samples)
    assert verdict.ok, verdict


def test_a_static_member_fenced_but_not_its_producer_joins_again(pipe, processors):
    """What a broker restart can do to a static member (answer its old member id with
    "fenced"), done on purpose: a plain consumer with the instance's group.instance.id takes
    its place in the group, but not its transactional id. The instance joins again with a
    new consumer, keeps running, and nothing is lost or doubled."""
    p = pipe(partitions=3)
    samples = make_samples(20_000, poison_per_kind=0.005, seed=6)
    feeder, proc = live_stream(p, processors, samples, chunks=40, instance="i1", committed=0)
    impostor = Consumer({"bootstrap.servers": p.bootstrap, "group.id": p.app_id,
                         "group.instance.id": "i1", "enable.auto.commit": False})
    impostor.subscribe([p.input])
    try:
        wait_for(lambda: impostor.poll(0.2) is None and "joining the group again" in proc.log(), 90,
                 "the fenced instance joining again")
    finally:
        try:
            impostor.close()
        except KafkaException:  # fenced in turn by the instance it fenced
            pass
    feeder.finish()
    p.drain(proc, 180)  # it ran on to the end of the stream (then SIGTERM: exit 0), no exit 1
    assert proc.proc.returncode == 0 and proc.errors() == [], proc.log()[-3000:]
    assert p.verify(samples).ok


@PROTOCOLS
def test_instances_joining_and_leaving_mid_stream(pipe, processors, protocol):
    p = pipe(partitions=4, kafka={"group_protocol": protocol})
    samples = make_samples(30_000, poison_per_kind=0.005, seed=6)
    feeder, first = live_stream(p, processors, samples, chunks=60, instance="a", committed=2_000)
    second = processors(p.config, "b")
    wait_for(lambda: p.committed_total() > 12_000, 120, "both instances committing")
    assert first.terminate() == 0, first.log()[-3000:]
    feeder.finish()
    p.drain(second, 180)

    assert second.held_partitions() == {f"{p.input}[{n}]" for n in range(4)}, second.log()[-3000:]
    verdict = p.verify(samples)
    assert verdict.ok, verdict


@PROTOCOLS
def test_repeated_sigterm_restarts_mid_stream(pipe, processors, protocol):
    p = pipe(partitions=3, kafka={"group_protocol": protocol})
    samples = make_samples(60_000, poison_per_kind=0.005, seed=12)
    feeder = Feeder(p.bootstrap, p.input, samples, seconds=10)  # a live stream, however fast we are
    stops = 0
    while not (feeder.done() and p.committed_all()):
        before = p.committed_total()
        proc = processors(p.config, "graceful")
        wait_for(lambda: p.committed_total() > before or p.committed_all(), 120, "progress")
        assert proc.terminate(timeout=30) == 0, proc.log()[-3000:]
        assert "stopped after" in proc.log().splitlines()[-1]
        stops += 1
        assert stops <= 30, "no end in sight"
    feeder.finish()

    assert stops >= 2
    verdict = p.verify(samples)
    assert verdict.ok, verdict
