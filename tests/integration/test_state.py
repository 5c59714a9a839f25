"""State stores against the real broker: a per-key count stays exact (each key's outputs are
1, 2, 3, ... with no gap or repeat) through kill -9 at random moments, a deleted state
directory, and a local store left behind its changelog."""

from __future__ import annotations

import json
import shutil
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from localkafka.clients import create_topics, produce, read_all
from tests.feeder import Feeder

pytestmark = pytest.mark.kafka
KEYS = 60
JSON_IN = {"key": {"format": "string"}, "value": {"format": "json"}}


def keyed(start: int, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"k{i % KEYS}".encode(), json.dumps({"seq": i}).encode()) for i in range(start, start + n)]


@pytest.fixture
def counting(pipe, tmp_path):
    def make():
        p = pipe(partitions=3, transform="tests.transforms:count_per_key", input_codec=JSON_IN,
                 output_value={"format": "json"},
                 state={"dir": str(tmp_path / "state"), "stores": {"counts": {}}})
        p.state_dir = tmp_path / "state"
        return p
    return make


def assert_exact_counts(p, fed: int) -> None:
    by_key: dict[str, list[int]] = defaultdict(list)
    for read in read_all(p.bootstrap, p.output):
        out = json.loads(read.value)
        by_key[out["key"]].append(out["n"])
    expected = Counter(f"k{i % KEYS}" for i in range(fed))
    for key, ns in by_key.items():
        assert ns == list(range(1, expected[key] + 1)), f"{key}: {ns[:10]}... of {len(ns)}"
    assert set(by_key) == set(expected)


def test_a_per_key_count_stays_exact_through_kill_9_at_random_moments(counting, processors):
    p = counting()
    total = 40_000
    records = [SimpleNamespace(key=k, value=v) for k, v in keyed(0, total)]
    feeder = Feeder(p.bootstrap, p.input, records, seconds=20)  # a live stream, however fast we are
    kills = p.kill_at_random_moments(processors, "i1", feeder, 5, seed=7)
    feeder.finish()
    p.drain(processors(p.config, "i1"), timeout=180)
    assert kills >= 3, "the stream ended before enough crashes: make it longer"
    assert_exact_counts(p, total)


def test_a_deleted_state_dir_is_rebuilt_from_the_changelog(counting, processors):
    p = counting()
    produce(p.bootstrap, p.input, keyed(0, 3_000))
    p.drain(processors(p.config, "i1"))
    shutil.rmtree(p.state_dir)
    produce(p.bootstrap, p.input, keyed(3_000, 3_000))
    proc = processors(p.config, "i1")
    p.drain(proc)
    assert_exact_counts(p, 6_000)
    assert "rebuilding" not in proc.log()  # nothing was there to distrust: a plain restore
    assert "recovered <store 'counts' partition" in proc.log()


def test_a_store_behind_its_changelog_catches_up(counting, processors, tmp_path: Path):
    """As after a crash between a commit and the local write: the store holds older state
    and an older checkpoint than the changelog."""
    p = counting()
    produce(p.bootstrap, p.input, keyed(0, 2_000))
    p.drain(processors(p.config, "i1"))
    shutil.copytree(p.state_dir, tmp_path / "older")
    produce(p.bootstrap, p.input, keyed(2_000, 2_000))
    p.drain(processors(p.config, "i1"))
    shutil.rmtree(p.state_dir)
    shutil.copytree(tmp_path / "older", p.state_dir)
    produce(p.bootstrap, p.input, keyed(4_000, 2_000))
    p.drain(processors(p.config, "i1"))
    assert_exact_counts(p, 6_000)


def test_a_changelog_topic_that_does_not_fit_stops_the_start(counting, processors):
    p = counting()
    create_topics(p.bootstrap, [f"{p.app_id}-counts-changelog"], 1, {"cleanup.policy": "compact"})
    proc = processors(p.config, "i1")
    assert proc.proc.wait(60) == 1
    assert proc.errors() == [f"stopping: changelog topic '{p.app_id}-counts-changelog' has 1 "
                             f"partitions, the inputs 3: delete it or fix the inputs"]
