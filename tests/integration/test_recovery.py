"""How long partitions stall after a crash, a scale-down and a rolling restart, with the
group settings as shipped (no shortened session timeout), under both group protocols.
Each test prints its figure; docs/operations.md quotes them."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from examples.orders import make_samples
from localkafka.clients import committed_offsets, wait_for
from tests.counts import expected_counts, feed, verify_counts
from tests.feeder import Feeder

pytestmark = [pytest.mark.kafka, pytest.mark.serial]  # bounds on time: run alone
PROTOCOLS = ["classic", "consumer"]
# under the consumer protocol the broker's group settings bound these: a crash waits out
# group.consumer.session.timeout.ms (45 s), a rebalance takes up to a heartbeat interval
# (group.consumer.heartbeat.interval.ms, 5 s) to reach every member
CRASH_BOUND_S = {"classic": 5.0, "consumer": 60.0}
ROLLING_BOUND_S = {"classic": 5.0, "consumer": 10.0}


def stream(p, seconds: float = 90) -> Feeder:
    """Records for every partition all along, until `stop()`."""
    return Feeder(p.bootstrap, p.input, make_samples(int(seconds * 400), 0.0, seed=31), seconds)


def every_partition_moves_on(p, since: float, timeout: float = 120) -> float:
    """Seconds from `since` until every partition's committed offset passes its value now."""
    before = committed_offsets(p.bootstrap, p.app_id, p.input)
    wait_for(lambda: all(offset > before[part] for part, offset
                         in committed_offsets(p.bootstrap, p.app_id, p.input).items()),
             timeout, "every partition committing again", interval=0.1)
    return time.monotonic() - since


def running(pipe, processors, protocol: str, partitions: int, *instances: str):
    """A pipe fed all along and the instances, once each holds partitions and all commit."""
    p = pipe(partitions=partitions, kafka={"group_protocol": protocol})
    feeder = stream(p)
    procs = [processors(p.config, name) for name in instances]
    wait_for(lambda: all(proc.held_partitions() for proc in procs)
             and len(set().union(*(proc.held_partitions() for proc in procs))) == partitions,
             120, "every instance holding partitions")
    every_partition_moves_on(p, time.monotonic())
    return p, feeder, procs


# under the consumer protocol this waits out the broker's 45 s session: a long run
@pytest.mark.parametrize("protocol", ["classic", pytest.param("consumer", marks=pytest.mark.long)])
def test_kill_9_and_restart_resumes_within_seconds(pipe, processors, protocol):
    p, feeder, [proc] = running(pipe, processors, protocol, 3, "crashy")
    proc.kill()
    killed = time.monotonic()
    restarted = processors(p.config, "crashy")
    stall = every_partition_moves_on(p, killed)
    print(f"\n{protocol}: kill -9 and restart: every partition committing again after {stall:.1f}s")
    assert stall < CRASH_BOUND_S[protocol]
    assert restarted.terminate() == 0
    feeder.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sigterm_without_restart_hands_partitions_over_within_15s(pipe, processors, protocol):
    p, feeder, (leaving, staying) = running(pipe, processors, protocol, 4, "leaving", "staying")
    stopped = time.monotonic()
    assert leaving.terminate() == 0, leaving.log()[-3000:]
    stall = every_partition_moves_on(p, stopped)
    assert len(staying.held_partitions()) == 4
    print(f"\n{protocol}: SIGTERM, no restart: every partition committing again after {stall:.1f}s")
    assert stall < 15.0
    assert staying.terminate() == 0
    feeder.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rolling_restart_stalls_no_partition_over_5s(pipe, processors, protocol):
    p, feeder, procs = running(pipe, processors, protocol, 4, "a", "b")
    stalls = []
    for i, name in enumerate(["a", "b"]):
        stopped = time.monotonic()
        assert procs[i].terminate() == 0, procs[i].log()[-3000:]
        procs[i] = processors(p.config, name)
        stalls.append(every_partition_moves_on(p, stopped))
    print(f"\n{protocol}: rolling restart of 2 instances: stalls {', '.join(f'{s:.1f}s' for s in stalls)}")
    assert max(stalls) < ROLLING_BOUND_S[protocol]
    for proc in procs:
        assert proc.terminate() == 0
    feeder.stop()


def test_a_stateful_restart_recovers_8_store_partitions_within_half_a_second(pipe, processors, tmp_path):
    """kill -9 before any checkpoint, a few hundred changes in the changelogs: from the
    partitions' assignment to the last store recovered (its records flow right after)."""
    p = pipe(partitions=8, transform="tests.transforms:count_per_key",
             input_codec={"key": {"format": "string"}, "value": {"format": "json"}},
             output_value={"format": "json"}, state={"dir": str(tmp_path / "state"), "stores": {"counts": {}}})
    feed(p.bootstrap, p.input, 0, 400)
    first = processors(p.config, "i1")
    wait_for(lambda: p.committed_all() or not first.running(), 60, "the records counted")
    first.kill()
    feed(p.bootstrap, p.input, 400, 400)
    restarted = processors(p.config, "i1")
    wait_for(lambda: p.committed_all() or not restarted.running(), 60, "the records after the restart counted")
    lines = restarted.log_lines()
    assigned = next(at(line) for line in lines if line["message"].startswith("assigned "))
    recovered = [at(line) for line in lines if line["message"].startswith("recovered <store 'counts'")]
    took = max(recovered) - assigned
    print(f"\nstateful restart: {len(recovered)} store partitions recovered {took:.2f}s after their assignment")
    assert len(recovered) == 8 and took < 1.0  # 0.5 s is the aim; the margin is the machine's noise
    assert restarted.terminate() == 0
    assert_exact_counts_of(p, 800)


def at(line: dict) -> float:
    return datetime.fromisoformat(line["time"]).timestamp()


def assert_exact_counts_of(p, fed: int) -> None:
    verdict = verify_counts(p.bootstrap, p.output, expected_counts(fed))
    assert verdict.ok, verdict
