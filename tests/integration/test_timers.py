"""Durable timers against the real broker: every timer fires once (read back with
read_committed) through kill -9 at random moments, a clean stop before they are due, and
partitions moving to another instance."""

from __future__ import annotations

import json
import statistics

import pytest

from localkafka.clients import read_all, wait_for
from tests.counts import feed, keyed
from tests.feeder import Feeder

pytestmark = pytest.mark.kafka
JSON_IN = {"key": {"format": "string"}, "value": {"format": "json"}}


@pytest.fixture
def reminding(pipe, tmp_path):
    return pipe(partitions=3, transform="tests.transforms:remind_later", input_codec=JSON_IN,
                output_value={"format": "json"}, state={"dir": str(tmp_path / "state"), "timers": True})


def fired(p) -> list[dict]:
    return [json.loads(r.value) for r in read_all(p.bootstrap, p.output)]


def wait_until_all_fired(p, total: int, timeout: float = 120) -> list[dict]:
    outputs: list[dict] = []

    def all_there() -> bool:
        outputs[:] = fired(p)
        return len(outputs) >= total
    wait_for(all_there, timeout, f"{total} reminders", interval=1.0)
    return outputs


def assert_each_once(outputs: list[dict], total: int) -> None:
    seqs = sorted(o["seq"] for o in outputs)
    assert seqs == list(range(total)), (f"{len(seqs)} reminders for {total} inputs: missing "
                                        f"{sorted(set(range(total)) - set(seqs))[:10]}, twice "
                                        f"{[s for s in set(seqs) if seqs.count(s) > 1][:10]}")


def test_every_timer_fires_once_through_kill_9_at_random_moments(reminding, processors):
    p = reminding
    total = 6_000
    feeder = Feeder(p.bootstrap, p.input, keyed(0, total), seconds=15)
    kills = p.kill_at_random_moments(processors, "i1", feeder, 5, seed=11)
    feeder.finish()
    proc = processors(p.config, "i1")
    outputs = wait_until_all_fired(p, total)
    assert proc.terminate() == 0, proc.log()[-3000:]
    assert kills >= 3
    assert_each_once(fired(p), total)
    late = sorted(o["fired_ms"] - o["due_ms"] for o in outputs)
    print(f"\ntimers: {total} fired once through {kills} kills; lateness ms: median "
          f"{statistics.median(late):.0f}, p99 {late[int(len(late) * 0.99)]}, max {late[-1]} "
          f"(late ones waited for a restart)")


def test_timers_wait_out_a_stop_and_fire_on_the_instance_that_takes_their_partitions(reminding, processors):
    p = reminding
    feed(p.bootstrap, p.input, 0, 300)
    first = processors(p.config, "a")
    wait_for(p.committed_all, 60, "the inputs committed (their timers scheduled)")
    assert first.terminate() == 0, first.log()[-3000:]  # before any reminder is due
    early = fired(p)
    second = processors(p.config, "b")  # another instance: its own, empty state dir
    outputs = wait_until_all_fired(p, 300, timeout=60)
    assert second.terminate() == 0, second.log()[-3000:]
    assert_each_once(outputs, 300)
    fired_by = {o["seq"]: o["fired_by"] for o in outputs}
    assert {fired_by[o["seq"]] for o in early} <= {"a"}  # due before the stop: fired there
    moved = [seq for seq, by in fired_by.items() if seq not in {o["seq"] for o in early}]
    assert moved and {fired_by[seq] for seq in moved} == {"b"}, "the timers left behind did not fire on b"
    assert "recovered <store '__timers' partition" in second.log()
