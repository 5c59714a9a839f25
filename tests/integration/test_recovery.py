"""How long partitions stall after a crash, a scale-down and a rolling restart, with the
group settings as shipped (no shortened session timeout), under both group protocols.
Each test prints its figure; the README quotes them."""

from __future__ import annotations

import time

import pytest

from examples.orders import make_samples
from localkafka.clients import committed_offsets, wait_for
from tests.feeder import Feeder

pytestmark = pytest.mark.kafka
PROTOCOLS = ["classic", "consumer"]
# the broker's group.consumer.session.timeout.ms (45 s) bounds a crash under the consumer protocol
CRASH_BOUND_S = {"classic": 5.0, "consumer": 60.0}


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


def started(p, processors, *instances: str):
    procs = [processors(p.config, name) for name in instances]
    every_partition_moves_on(p, time.monotonic())
    return procs


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_kill_9_and_restart_resumes_within_seconds(pipe, processors, protocol):
    p = pipe(partitions=3, kafka={"group_protocol": protocol})
    feeder = stream(p)
    [proc] = started(p, processors, "crashy")
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
    p = pipe(partitions=4, kafka={"group_protocol": protocol})
    feeder = stream(p)
    leaving, staying = started(p, processors, "leaving", "staying")
    stopped = time.monotonic()
    assert leaving.terminate() == 0, leaving.log()[-3000:]
    stall = every_partition_moves_on(p, stopped)
    print(f"\n{protocol}: SIGTERM, no restart: every partition committing again after {stall:.1f}s")
    assert stall < 15.0
    assert staying.terminate() == 0
    feeder.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rolling_restart_stalls_no_partition_over_5s(pipe, processors, protocol):
    p = pipe(partitions=4, kafka={"group_protocol": protocol})
    feeder = stream(p)
    procs = started(p, processors, "a", "b")
    stalls = []
    for i, name in enumerate(["a", "b"]):
        stopped = time.monotonic()
        assert procs[i].terminate() == 0, procs[i].log()[-3000:]
        procs[i] = processors(p.config, name)
        stalls.append(every_partition_moves_on(p, stopped))
    print(f"\n{protocol}: rolling restart of 2 instances: stalls {', '.join(f'{s:.1f}s' for s in stalls)}")
    assert max(stalls) < 5.0
    for proc in procs:
        assert proc.terminate() == 0
    feeder.stop()
