"""State stores against the real broker: a per-key count stays exact (each key's outputs are
1, 2, 3, ... with no gap or repeat) through kill -9 at random moments, a deleted state
directory, and a local store left behind its changelog."""

from __future__ import annotations

import gc
import json
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from rocksdict import Options, Rdict

from localkafka import free_port
from localkafka.clients import create_topics, produce, read_all, wait_for
from processor.state.codec import MAX_ENTRY_BYTES
from tests.feeder import Feeder
from tests.http import get, samples_of
from tests.counts import expected_counts, feed, keyed, verify_counts

pytestmark = pytest.mark.kafka
JSON_IN = {"key": {"format": "string"}, "value": {"format": "json"}}


@pytest.fixture
def counting(pipe, tmp_path):
    def make(store: dict | None = None, partitions: int = 3):
        p = pipe(partitions=partitions, transform="tests.transforms:count_per_key", input_codec=JSON_IN,
                 output_value={"format": "json"},
                 state={"dir": str(tmp_path / "state"), "stores": {"counts": store or {}}})
        p.state_dir = tmp_path / "state"
        return p
    return make


def assert_exact_counts(p, fed: int) -> None:
    verdict = verify_counts(p.bootstrap, p.output, expected_counts(fed))
    assert verdict.ok, verdict


def test_a_per_key_count_stays_exact_through_kill_9_at_random_moments(counting, processors):
    p = counting()
    total = 40_000
    feeder = Feeder(p.bootstrap, p.input, keyed(0, total), seconds=20)  # a live stream, however fast we are
    kills = p.kill_at_random_moments(processors, "i1", feeder, 5, seed=7)
    feeder.finish()
    p.drain(processors(p.config, "i1"), timeout=180)
    assert kills >= 3, "the stream ended before enough crashes: make it longer"
    assert_exact_counts(p, total)


def test_stores_move_with_their_partitions_as_instances_join_and_leave(counting, processors):
    p = counting()
    total = 30_000
    feeder = Feeder(p.bootstrap, p.input, keyed(0, total), seconds=15)
    first = processors(p.config, "a")
    wait_for(lambda: p.committed_total() > 2_000, 60, "a committing")
    second = processors(p.config, "b")
    wait_for(lambda: second.held_partitions(), 60, "b holding partitions")
    wait_for(lambda: p.committed_total() > 12_000, 120, "both instances committing")
    assert first.terminate() == 0, first.log()[-3000:]
    feeder.finish()
    p.drain(second, 180)
    assert second.held_partitions() == {f"{p.input}[{n}]" for n in range(3)}
    assert "recovered <store 'counts' partition" in second.log()  # what a had counted
    assert_exact_counts(p, total)


def test_a_deleted_state_dir_is_rebuilt_from_the_changelog(counting, processors):
    p = counting()
    feed(p.bootstrap, p.input, 0, 3_000)
    p.drain(processors(p.config, "i1"))
    shutil.rmtree(p.state_dir)
    feed(p.bootstrap, p.input, 3_000, 3_000)
    proc = processors(p.config, "i1")
    p.drain(proc)
    assert_exact_counts(p, 6_000)
    assert "rebuilding" not in proc.log()  # nothing was there to distrust: a plain restore
    assert "recovered <store 'counts' partition" in proc.log()


def corrupt_a_block(state_dir: Path) -> Path:
    """Put a store partition's entries in an SST file (as RocksDB does in time) and flip bytes
    in its middle: a disk fault. The file corrupted."""
    path = next(p for p in (state_dir / "i1" / "counts").iterdir() if p.is_dir() and any(p.iterdir()))
    db = Rdict(str(path), options=Options(raw_mode=True))
    db.flush()
    db.close()
    del db  # the lock goes with the object
    gc.collect()
    sst = max(path.glob("*.sst"), key=lambda f: f.stat().st_size)
    with sst.open("r+b") as f:
        f.seek(sst.stat().st_size // 3)
        f.write(b"\x00\xff" * 64)
    return sst


def test_a_store_found_corrupt_at_start_is_rebuilt_from_its_changelog(counting, processors):
    """Nothing is dead-lettered for a disk fault, and it is not taken for another process
    holding the store (RocksDB's "block checksum mismatch" has "lock" in it): the store is
    rebuilt from its changelog. (Found corrupt on a read later: tests/unit/test_state.py.)"""
    p = counting(partitions=1)
    feed(p.bootstrap, p.input, 0, 6_000)
    p.drain(processors(p.config, "i1"))
    corrupt_a_block(p.state_dir)
    feed(p.bootstrap, p.input, 6_000, 6_000)
    rebuilt = processors(p.config, "i1")
    p.drain(rebuilt)
    assert "cannot be opened (Corruption: block checksum mismatch" in rebuilt.log()
    assert "rebuilding it" in rebuilt.log() and rebuilt.errors() == []
    assert_exact_counts(p, 12_000)
    assert read_all(p.bootstrap, p.dead_letter) == []


def test_an_entry_the_changelog_would_refuse_dead_letters_its_record_and_one_that_fits_goes_through(
        pipe, processors, tmp_path: Path):
    """Bounded by what one changelog record holds (the key and value together), not by the
    value alone: a value the codec took used to be refused by the changelog at every start."""
    p = pipe(partitions=1, transform="tests.transforms:store_padded", input_codec=JSON_IN,
             output_value={"format": "json"}, state={"dir": str(tmp_path / "state"), "stores": {"counts": {}}})
    fits = MAX_ENTRY_BYTES - 76  # with 9 bytes of expiry and tag, 2 quotes, the key and its tag: the bound
    records = [("k" * 64, fits), ("k" * 65, fits), ("k" * 500_000, 500_000), ("small", 1)]
    produce(p.bootstrap, p.input, [(b"x", json.dumps({"key": key, "pad": pad}).encode()) for key, pad in records])
    p.drain(processors(p.config, "i1"))
    assert [json.loads(r.value)["key"][:6] for r in read_all(p.bootstrap, p.output)] == ["kkkkkk", "small"]
    dead = read_all(p.bootstrap, p.dead_letter)
    assert [d.headers["__processor.errors.offset"] for d in dead] == [b"1", b"2"]
    assert all(b"a store entry may take at most" in d.headers["__processor.errors.message"] for d in dead)
    changelog = read_all(p.bootstrap, f"{p.app_id}-counts-changelog")
    assert len(changelog) == 2 and len(changelog[0].key) + len(changelog[0].value) == MAX_ENTRY_BYTES


def test_recovery_is_visible_and_restores_every_key(pipe, processors, tmp_path: Path):
    """600,000 keys counted once; the state dir deleted; the restart recovers them before any
    record (/readyz 503 while the recovery gauge is above 0), then counts each again to 2."""
    port = free_port()
    p = pipe(partitions=3, transform="tests.transforms:count_per_key", input_codec=JSON_IN,
             output_value={"format": "json"}, metrics_port=port,
             state={"dir": str(tmp_path / "state"), "stores": {"counts": {}}})
    keys = 600_000  # a recovery of several snapshots (one every 0.5 s) of the endpoint
    unique = [(f"u{i}".encode(), json.dumps({"seq": i}).encode()) for i in range(keys)]
    produce(p.bootstrap, p.input, unique)
    p.drain(processors(p.config, "i1"), timeout=240)
    shutil.rmtree(tmp_path / "state")
    produce(p.bootstrap, p.input, unique[:3_000])
    proc = processors(p.config, "i1")
    recovering_scrapes = []  # processor_ready (what /readyz answers) in scrapes taken while recovering
    while True:
        status, text = get(port, "/metrics", timeout=5)
        values = samples_of(text) if status == 200 else {}
        remaining = sum(v for (name, _), v in values.items()
                        if name == "processor_state_recovery_records_remaining")
        if remaining > 0:  # one snapshot: the gauge and readiness of the same moment
            recovering_scrapes.append(values.get(("processor_ready", ()), 1))
        restored = values.get(("processor_state_restored_records_total", (("store", "counts"),)), 0)
        if restored >= keys or not proc.running():
            break
        time.sleep(0.05)  # polling a scrape endpoint, not waiting on a race
    assert recovering_scrapes and set(recovering_scrapes) == {0}, (
        f"ready while the recovery gauge was above 0, or never seen recovering: {recovering_scrapes}")
    wait_for(lambda: get(port, "/readyz")[0] == 200, 30, "/readyz ready after recovery")
    p.drain(proc)
    counted: dict[str, list[int]] = defaultdict(list)
    for read in read_all(p.bootstrap, p.output):
        out = json.loads(read.value)
        counted[out["key"]].append(out["n"])
    assert len(counted) == keys
    assert all(ns == ([1, 2] if int(key[1:]) < 3_000 else [1]) for key, ns in counted.items())
    took = [float(m) for m in re.findall(r"recovered <store 'counts' partition \d>: \d+ changes in ([\d.]+)s",
                                          proc.log())]
    print(f"\nrestored {keys} keys in {sum(took):.1f}s ({keys / sum(took):,.0f} changes/s); "
          f"{len(recovering_scrapes)} scrapes saw it recovering, not ready", file=sys.stderr)


def test_a_store_behind_its_changelog_catches_up(counting, processors, tmp_path: Path):
    """As after a crash between a commit and the local write: the store holds older state
    and an older checkpoint than the changelog."""
    p = counting()
    feed(p.bootstrap, p.input, 0, 2_000)
    p.drain(processors(p.config, "i1"))
    shutil.copytree(p.state_dir, tmp_path / "older")
    feed(p.bootstrap, p.input, 2_000, 2_000)
    p.drain(processors(p.config, "i1"))
    shutil.rmtree(p.state_dir)
    shutil.copytree(tmp_path / "older", p.state_dir)
    feed(p.bootstrap, p.input, 4_000, 2_000)
    p.drain(processors(p.config, "i1"))
    assert_exact_counts(p, 6_000)


def test_expired_entries_read_as_absent_and_are_deleted_from_the_changelog(counting, processors):
    p = counting({"ttl_ms": 2_000}, partitions=1)
    proc = processors(p.config, "i1")
    feed(p.bootstrap, p.input, 0, 2)  # k0, k1: counted 1
    wait_for(p.committed_all, 60, "the first records committed")
    written = time.time()
    wait_for(lambda: time.time() > written + 2.5, 10, "the entries' TTL to pass")
    feed(p.bootstrap, p.input, 2, 1)  # k2: its commit deletes the expired k0, k1
    changelog = f"{p.app_id}-counts-changelog"
    wait_for(lambda: {r.key for r in read_all(p.bootstrap, changelog) if r.value is None} == {b"sk0", b"sk1"},
             30, "tombstones of k0 and k1 in the changelog")
    feed(p.bootstrap, p.input, 0, 1)  # k0 again: counted from 1 anew
    p.drain(proc)
    outputs = [json.loads(r.value) for r in read_all(p.bootstrap, p.output)]
    assert sorted((o["key"], o["n"]) for o in outputs) == [("k0", 1), ("k0", 1), ("k1", 1), ("k2", 1)]


def test_a_changelog_topic_that_does_not_fit_stops_the_start(counting, processors):
    p = counting()
    create_topics(p.bootstrap, [f"{p.app_id}-counts-changelog"], 1, {"cleanup.policy": "compact"})
    proc = processors(p.config, "i1")
    assert proc.proc.wait(60) == 1
    assert proc.errors() == [f"stopping: changelog topic '{p.app_id}-counts-changelog' has 1 "
                             f"partitions, the inputs 3: a store is partitioned like its inputs, so its "
                             f"keys would not be found again; give the inputs back their partition count "
                             f"(deleting the changelog topic would start the state afresh, empty)"]


def test_a_changelog_topic_deleted_mid_run_ends_the_run_with_one_line(counting, processors):
    """As a deleted output or dead-letter topic does, instead of commits stuck for ever."""
    p = counting()
    feed(p.bootstrap, p.input, 0, 1_000)
    proc = processors(p.config, "i1")
    wait_for(lambda: p.committed_all() or not proc.running(), 60, "the first records counted")
    changelog = f"{p.app_id}-counts-changelog"
    admin = AdminClient({"bootstrap.servers": p.bootstrap})
    admin.delete_topics([changelog])[changelog].result(30)
    feed(p.bootstrap, p.input, 1_000, 1_000)
    assert proc.proc.wait(90) == 1, proc.log()[-3000:]
    assert proc.errors() == [f"stopping: topic {changelog!r} does not exist any more: it was store 'counts''s "
                             f"changelog: the next start creates it again, empty (the store's state is gone with it)"]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB file system of the test's own (tmpfs: mounting needs root)."""
    where = tmp_path / "small-disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_under_the_state_dir_ends_the_run_with_one_line(pipe, processors, small_disk):
    p = pipe(partitions=1, transform="tests.transforms:store_padded", input_codec=JSON_IN,
             output_value={"format": "json"}, state={"dir": str(small_disk / "state"), "stores": {"counts": {}}})
    produce(p.bootstrap, p.input, [(b"x", json.dumps({"key": f"k{n}", "pad": 100_000}).encode()) for n in range(200)])
    proc = processors(p.config, "i1")
    assert proc.proc.wait(120) == 1, proc.log()[-3000:]
    [line] = proc.errors()
    assert line.startswith("stopping: cannot write the local store at ") and "No space left on device" in line, line
    assert "the next start recovers them" in line and "Traceback" not in proc.log(), proc.log()[-3000:]
