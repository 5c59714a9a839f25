"""State stores without a broker: the encoding, a store partition's reads and writes through
the record and the transaction, TTL, and a per-key count through the engine on fake clients
(the real broker, kill -9 and recovery: tests/integration/test_state.py)."""

from __future__ import annotations

import gc
import json
import math
import time
from concurrent.futures import Future
from pathlib import Path
from threading import Event
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException

from processor import kafka
from processor.kafka import FatalError, Stopped
from processor.metrics import Metrics
from processor.state.backend import MemoryBackend, RocksBackend, StoreCorrupt, corrupt_mark
from processor.state.codec import MAX_ENTRY_BYTES, decode_value, encode_key, encode_value
from processor.state.recovery import Recovery
from processor.state.store import StorePartition
from processor.state.stores import Stores
from processor.transform import Poison
from tests.fakeclients import FakeCluster, error
from tests.unit.test_transactions import TOPICS, dead, inputs, run, values


def test_keys_keep_their_type_and_values_round_trip():
    keys = [encode_key(k) for k in (1, "1", b"1")]
    assert keys == [b"i1", b"s1", b"b1"]  # tagged: three keys
    with pytest.raises(TypeError):
        encode_key(True)
    for value in ({"a": [1, 2.5, None]}, "é", 3, b"\x00raw"):
        assert decode_value(encode_value(value, 0)) == value


@pytest.mark.parametrize("value", [object(), {1, 2}, math.nan])
def test_values_that_cannot_be_stored_raise(value):
    with pytest.raises((TypeError, ValueError)):
        encode_value(value, 0)


def test_an_entry_must_fit_in_one_changelog_record_key_and_value_together():
    """Key, value and the record's overhead: the producer's message.max.bytes (1,000,000)."""
    s = store()
    s.set("k", "x" * (MAX_ENTRY_BYTES - 20))  # 9 bytes of expiry and tag, 2 quotes, 2 of key
    with pytest.raises(ValueError, match=f"at most {MAX_ENTRY_BYTES} bytes encoded .key and value., this one takes"):
        s.set("k", "x" * (MAX_ENTRY_BYTES - 12))  # fits alone, not with its key
    with pytest.raises(ValueError, match="this one takes 1000001"):
        s.delete("k" * 1_000_000)  # a key alone too large: its tombstone would be refused


def store(ttl_ms=None, now=None, backend=None) -> StorePartition:
    clock = now or [1_000]
    return StorePartition("counts", 0, backend or MemoryBackend(), ttl_ms, lambda s: None,
                          clock_ms=lambda: clock[0])


def commit(s: StorePartition) -> None:
    """What the record's success and its transaction's commit do to a store partition."""
    s.keep_record()
    s.apply(s.txn)
    s.txn = {}


def test_writes_go_record_then_transaction_then_database():
    s = store()
    s.set("a", 1)
    assert s.get("a") == 1 and "a" in s and s.get("b", 7) == 7
    s.discard_record()
    assert s.get("a") is None
    s.set("a", 2)
    s.keep_record()
    s.delete("a")
    assert "a" not in s  # the record's delete hides the transaction's write
    s.keep_record()
    s.set("b", {"n": 1})
    commit(s)
    assert s.get("b") == {"n": 1} and "a" not in s
    s.set("b", 5)
    s.discard_txn()
    assert s.get("b") == {"n": 1}


def test_entries_expire_and_are_deleted_through_the_index_without_a_scan():
    now = [1_000]
    s = store(ttl_ms=100, now=now)
    for key in ("a", "b", "c"):
        s.set(key, key)
        s.keep_record()
        now[0] += 10
    s.apply(s.txn)
    s.txn = {}
    s.set("b", "again")  # written later: expires later
    commit(s)
    now[0] = 1_105
    assert s.get("a") is None and s.get("b") == "again" and s.get("c") == "c"
    assert s.expire(limit=10) == 1 and s.txn == {encode_key("a"): None}
    s.apply(s.txn)
    s.txn = {}
    now[0] = 10_000
    assert s.expire(limit=1) == 1 and s.expire(limit=10) == 1  # bounded per call
    s.apply(s.txn)
    assert s.backend.data == {}  # values and index entries all gone


def test_the_rocksdb_backend_writes_atomically_and_reopens(tmp_path: Path):
    backend = RocksBackend(tmp_path / "counts" / "0")
    s = store(backend=backend)
    s.set(1, b"one")
    commit(s)
    s.save_checkpoint(42)
    backend.close()
    again = store(backend=RocksBackend(tmp_path / "counts" / "0"))
    assert again.get(1) == b"one" and again.checkpoint()[0] == 42
    again.backend.wipe()
    assert again.get(1) is None and again.checkpoint() is None
    again.backend.close()


class NoChangelog:
    """A restorer for empty changelogs."""

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        return 0, 0


def counting_stores(tmp_path: Path) -> Stores:
    stores = Stores("app", tmp_path, {"counts": None}, NoChangelog, Metrics(),
                    open_backend=lambda path: MemoryBackend())
    stores.restorer, stores.retention_ms = NoChangelog(), {"app-counts-changelog": 86_400_000}
    stores.recovery = Recovery(stores.restorer)
    return stores


def count(record):
    counts = record.state("counts")
    n = counts.get(record.key, 0) + 1
    counts.set(record.key, n)
    if record.value.endswith(b"-7"):
        raise Poison("after its write")  # the write must not survive
    return json.dumps({"key": record.key.decode(), "n": n}).encode()


def test_a_per_key_count_is_exact_through_aborts_and_poison(tmp_path):
    cluster = FakeCluster(TOPICS | {"app-counts-changelog"})
    cluster.faults["commit_transaction"] = [error(KafkaError._TIMED_OUT_QUEUE, txn_requires_abort=True)] * 3
    # 3 partitions x 40 records over 4 keys per partition
    records = {tp: [(b"key-%d-%d" % (tp[1], i % 4), v) for i, (_, v) in enumerate(log)]
               for tp, log in inputs().items()}
    stores = counting_stores(tmp_path)
    run(records, count, cluster, max_batch=7, stores=stores)
    outs = [json.loads(v) for v in values(cluster, "out")]
    by_key: dict[str, list[int]] = {}
    for out in sorted(outs, key=lambda o: o["n"]):
        by_key.setdefault(out["key"], []).append(out["n"])
    # each key's outputs are 1, 2, 3, ...: the poison records (offset 7) counted nothing
    assert all(ns == list(range(1, len(ns) + 1)) for ns in by_key.values())
    assert sum(map(len, by_key.values())) == 3 * 40 - 3
    assert len(dead(cluster)) == 3
    changelog = {(key, json.loads(value[9:])) for key, value, _ in cluster.outputs["app-counts-changelog"]}
    finals = {(b"b" + k.encode(), ns[-1]) for k, ns in by_key.items()}  # bytes keys
    assert finals <= changelog  # the last count of every key reached the changelog


def test_a_store_the_config_lacks_ends_the_run(tmp_path):
    cluster = FakeCluster(TOPICS | {"app-counts-changelog"})
    with pytest.raises(FatalError, match=r"record.state\('cuonts'\): the config declares no such store"):
        run(inputs(1, 3), lambda r: r.state("cuonts").get(r.key), cluster, stores=counting_stores(tmp_path))


def test_once_creates_once_per_key_and_tells_duplicates_from_conflicts():
    s = store()
    made = []

    def create():
        made.append(1)
        return {"order_id": f"o{len(made)}"}

    first = s.once("key-1", {"a": 1, "b": [2]}, create)
    again = s.once("key-1", {"b": [2], "a": 1}, create)  # the same payload, keys in another order
    other = s.once("key-1", {"a": 2, "b": [2]}, create)
    assert (first.status, again.status, other.status) == ("created", "duplicate", "conflict")
    assert first.result == again.result == other.result == {"order_id": "o1"} and len(made) == 1
    assert s.once(b"key-2", b"raw", create).status == "created" and len(made) == 2


def test_a_rebuild_skips_lookups_and_expire_drops_the_index_entries_it_left():
    now = [1_000]
    s = store(ttl_ms=100, now=now)
    key = encode_key("a")
    s.apply({key: encode_value("old", 1_050)}, rebuilding=True)
    s.apply({key: encode_value("new", 5_000)}, rebuilding=True)  # the 1,050 index entry stays
    now[0] = 2_000
    assert s.get("a") == "new" and s.expire(limit=10) == 0 and s.txn == {}
    assert [k for k in s.backend.data if k.startswith(b"x")] == [b"x" + (5_000).to_bytes(8, "big") + key]


class RacingAdmin:
    """An admin whose changelog topic another instance creates first, between the listing and
    the creation."""

    def __init__(self):
        self.created = False

    def list_topics(self, timeout=None):
        partitions = {0: None, 1: None}
        return SimpleNamespace(topics={"app-counts-changelog": SimpleNamespace(partitions=partitions)}
                               if self.created else {})

    def create_topics(self, new, operation_timeout=None):
        self.created = True
        future = Future()
        future.set_exception(KafkaException(KafkaError(KafkaError.TOPIC_ALREADY_EXISTS)))
        return {topic.topic: future for topic in new}

    def describe_configs(self, resources):
        future = Future()
        future.set_result({"cleanup.policy": SimpleNamespace(value="compact")})
        return {resources[0]: future}


def test_a_changelog_topic_another_instance_creates_first_is_checked_not_fatal():
    from processor.state.changelog import ensure_changelogs  # noqa: PLC0415
    assert ensure_changelogs(RacingAdmin(), ["app-counts-changelog"], 2, -1) == {"app-counts-changelog": 86_400_000}
    with pytest.raises(FatalError, match="has 2 partitions, the inputs 3"):
        ensure_changelogs(RacingAdmin(), ["app-counts-changelog"], 3, -1)


class AwayAdmin(RacingAdmin):
    """Kafka does not answer the first `away` listings (a broker restarting)."""

    def __init__(self, away: int):
        super().__init__()
        self.away, self.created = away, True

    def list_topics(self, timeout=None):
        if self.away:
            self.away -= 1
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        topics = super().list_topics(timeout).topics
        return SimpleNamespace(topics={**topics, "in": topics["app-counts-changelog"]})


def test_changelogs_are_prepared_once_kafka_answers_and_not_for_ever(monkeypatch):
    from processor.state import changelog  # noqa: PLC0415
    monkeypatch.setattr(kafka, "ASK_AGAIN_S", 0.0)
    assert changelog.prepare_changelogs(AwayAdmin(3), ["in"], ["app-counts-changelog"], -1, Event()) == {
        "app-counts-changelog": 86_400_000}
    monkeypatch.setattr(changelog, "PREPARE_S", 0.0)
    with pytest.raises(FatalError, match="cannot prepare the changelog topics: .*did not answer for 0s"):
        changelog.prepare_changelogs(AwayAdmin(10**9), ["in"], ["app-counts-changelog"], -1, Event())


def test_a_stop_while_kafka_is_away_at_start_is_a_clean_stop_at_once():
    from processor.state import changelog  # noqa: PLC0415
    stopping = Event()
    stopping.set()
    began = time.monotonic()
    with pytest.raises(Stopped, match="stopped while Kafka did not answer .cannot prepare the changelog topics"):
        changelog.prepare_changelogs(AwayAdmin(10**9), ["in"], ["app-counts-changelog"], -1, stopping)
    assert time.monotonic() - began < 1.0


class CreationAwayAdmin(RacingAdmin):
    """The creation request itself fails the first `away` times (the controller restarting)."""

    def __init__(self, away: int):
        super().__init__()
        self.away = away

    def list_topics(self, timeout=None):
        listing = super().list_topics(timeout).topics
        return SimpleNamespace(topics={**listing, "in": SimpleNamespace(partitions={0: None, 1: None})})

    def create_topics(self, new, operation_timeout=None):
        if not self.away:
            return super().create_topics(new, operation_timeout)
        self.away -= 1
        future = Future()
        future.set_exception(KafkaException(KafkaError(KafkaError._TRANSPORT)))
        return {topic.topic: future for topic in new}


def test_a_changelog_creation_kafka_does_not_answer_is_asked_again(monkeypatch):
    from processor.state import changelog  # noqa: PLC0415
    monkeypatch.setattr(kafka, "ASK_AGAIN_S", 0.0)
    admin = CreationAwayAdmin(2)
    assert changelog.prepare_changelogs(admin, ["in"], ["app-counts-changelog"], -1, Event()) == {
        "app-counts-changelog": 86_400_000}
    assert admin.away == 0


def test_a_value_that_cannot_be_stored_dead_letters_its_record_and_none_of_its_writes_stay(tmp_path):
    cluster = FakeCluster(TOPICS | {"app-counts-changelog"})

    def transform(record):
        counts = record.state("counts")
        counts.set("seen", counts.get("seen", 0) + 1)  # a write before the one that fails
        if record.value.endswith(b"-3"):
            counts.set(record.key, {1, 2})  # a set is not JSON
        return record.value

    stores = counting_stores(tmp_path)
    run(inputs(1, 6), transform, cluster, stores=stores)
    letters = dead(cluster)
    assert list(letters) == [b"k0-3"] and letters[b"k0-3"]["__processor.errors.stage"] == b"transform"
    assert b"not JSON serializable" in letters[b"k0-3"]["__processor.errors.message"]
    assert stores.partition("counts", 0).get("seen") == 5  # the failed record's first write went too


def test_a_block_found_corrupt_on_a_read_ends_the_run_and_the_next_open_rebuilds_the_store(tmp_path):
    """A real RocksDB whose data block was flipped on disk: a read of it is no record's fault
    (not a dead letter): the run ends, and the next open starts the store afresh (from its
    changelog: empty here)."""
    path = tmp_path / "counts" / "0"
    backend = RocksBackend(path)
    backend.write({b"k%06d" % i: b"v" * 100 for i in range(20_000)})
    backend.db.flush()
    backend.close()
    del backend
    gc.collect()
    sst = next(path.glob("*.sst"))
    with sst.open("r+b") as f:
        f.seek(sst.stat().st_size // 3)
        f.write(b"\x00\xff" * 64)
    backend = RocksBackend(path)  # opens: the block is read only when asked for
    with pytest.raises(StoreCorrupt, match=r"is corrupt \(Corruption: block checksum mismatch.*the next start "
                                           r"rebuilds it from its changelog"):
        for i in range(0, 20_000, 97):
            backend.get(b"k%06d" % i)
    backend.close()
    assert corrupt_mark(path).exists()
    stores = Stores("app", tmp_path, {"counts": None}, NoChangelog, Metrics(), open_backend=RocksBackend)
    stores.restorer, stores.retention_ms = NoChangelog(), {"app-counts-changelog": 86_400_000}
    stores.recovery = Recovery(stores.restorer)
    store = stores._open("counts", 0)
    assert not corrupt_mark(path).exists() and store.backend.get(b"k000000") is None
    store.backend.close()


def test_a_state_directory_the_stores_cannot_write_ends_the_start_with_one_line(tmp_path):
    (tmp_path / "i1").write_text("a file where the instance's directory goes")
    stores = Stores("app", tmp_path / "i1", {"counts": None}, NoChangelog, Metrics())
    with pytest.raises(FatalError, match=f"state.dir: cannot write to {tmp_path}/i1: File exists"):
        stores.prepare(None, ["in"], -1, Event())


def test_a_store_another_process_holds_names_the_likely_cause_a_shared_instance_id(tmp_path):
    held = RocksBackend(tmp_path / "counts" / "0")  # as another instance with this instance_id would
    stores = Stores("app", tmp_path, {"counts": None}, NoChangelog, Metrics(), open_backend=RocksBackend)
    stores.restorer, stores.retention_ms = NoChangelog(), {"app-counts-changelog": 86_400_000}
    stores.recovery = Recovery(stores.restorer)
    with pytest.raises(FatalError, match="is in use by another process: two instances with the same "
                                         "instance_id on one state.dir. give each instance its own instance_id"):
        stores._open("counts", 0)
    held.close()
