"""`processor dlq` against the real broker: dead letters of a run counted and listed, a
filtered replay after the fix gives each replayed record's output exactly once with its first
idempotency key, and a replay killed with kill -9 and run again with the same id sends each
dead letter once."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter

import pytest
from confluent_kafka.admin import AdminClient

from examples.orders import make_samples
from localkafka.clients import produce, read_all, wait_for
from processor.deadletter import Failure, dead_letter
from processor.transform import Poison
from tests.counts import feed
from tests.messages import message
from tests.processes import ROOT
from tests.transforms import singled_out

pytestmark = pytest.mark.kafka
JSON_IN = {"key": {"format": "string"}, "value": {"format": "json"}}


def dlq(*argv: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "processor", "dlq", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture
def fragile(pipe):
    return pipe(partitions=3, transform="tests.transforms:fragile", input_codec=JSON_IN,
                output_value={"format": "json"})


def test_dead_letters_of_every_stage_are_counted_and_listed(pipe, processors):
    p = pipe(partitions=3, transform="tests.transforms:oversized_sometimes")
    samples = make_samples(3_000, poison_per_kind=0.01, seed=21)
    p.feed(samples)
    p.drain(processors(p.config, "i1"))
    expected = Counter(s.stage for s in samples if s.stage is not None)
    expected["produce"] = sum(1 for s in samples if s.stage is None and singled_out(s.order_id))
    assert all(expected[stage] for stage in ("deserialize", "transform", "serialize", "produce")), expected
    stats = dlq("stats", "-c", str(p.config), "--json")
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["by_stage"] == dict(expected) and counts["foreign"] == 0
    assert counts["by_origin"] == {f"{p.input} [{n}]": sum(1 for r in read_all(p.bootstrap, p.dead_letter)
                                                           if r.headers["__processor.errors.partition"] == b"%d" % n)
                                   for n in range(3)}
    for stage, n in expected.items():
        listed = dlq("list", "-c", str(p.config), "--stage", stage).stdout.splitlines()
        assert len(listed) == n and all(f"  {stage}" in row for row in listed), (stage, listed[:3])
    table = dlq("stats", "-c", str(p.config)).stdout
    assert f"{sum(expected.values())} dead letters in {p.dead_letter}" in table


def test_dead_letters_are_counted_listed_shown_and_replayed_once_after_the_fix(fragile, processors):
    p = fragile
    feed(p.bootstrap, p.input, 0, 2_000)
    p.drain(processors(p.config, "i1"))
    stats = dlq("stats", "-c", str(p.config), "--json")
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["dead_letters"] == 200 and counts["by_stage"] == {"transform": 200}
    assert counts["by_exception"] == {"ValueError": 200} and sum(counts["by_origin"].values()) == 200
    listed = dlq("list", "-c", str(p.config), "--grep", r"seq 1\d0 ", "--partition", "0")
    lines = listed.stdout.splitlines()
    assert listed.returncode == 0 and lines and all("ValueError: seq 1" in row for row in lines), listed.stdout
    shown = dlq("show", "-c", str(p.config), "--limit", "1")
    assert '"seq": ' in shown.stdout and "stacktrace:" in shown.stdout, shown.stdout
    nothing = dlq("list", "-c", str(p.config), "--stage", "serialize")
    assert nothing.returncode == 0 and "no dead letter" in nothing.stdout
    first_keys = {json.loads(r.value)["seq"]: f"{p.app_id}:{r.headers['__processor.errors.topic'].decode()}:"
                  f"{r.headers['__processor.errors.partition'].decode()}:{r.headers['__processor.errors.offset'].decode()}"
                  for r in read_all(p.bootstrap, p.dead_letter)}

    replay = dlq("replay", "-c", str(p.config), "--stage", "transform", "--id", "fix-1")
    assert replay.returncode == 0 and "200 replayed" in replay.stdout, replay.stdout + replay.stderr
    again = dlq("replay", "-c", str(p.config), "--id", "fix-1")  # the same id: at the end already
    assert again.returncode == 0 and "at the end" in again.stdout, again.stdout + again.stderr
    fixed = processors(p.config, "i1", env={"FRAGILE_FIXED": "1"})
    # the replay's transaction markers follow its records: the committed offsets stop short of
    # the topic's end, so wait for the outputs instead
    wait_for(lambda: len(read_all(p.bootstrap, p.output)) >= 2_000, 120, "the replayed records' outputs")
    assert fixed.terminate() == 0, fixed.log()[-3000:]
    outputs = [json.loads(r.value) for r in read_all(p.bootstrap, p.output)]
    assert sorted(o["seq"] for o in outputs) == list(range(2_000))  # each once
    replayed = {o["seq"]: o["idempotency_key"] for o in outputs if o["seq"] % 10 == 0}
    assert replayed == first_keys  # the first attempt's key, not the replayed record's


def dead_letters(count: int) -> list[tuple]:
    """`count` dead letters as the processor writes them, of inputs orders [0..2] @i."""
    letters = []
    for i in range(count):
        msg = message("orders", i % 3, i, f"k{i}".encode(), json.dumps({"seq": i}).encode())
        letter = dead_letter(msg, Failure("transform", Poison(f"order {i} refused")), "app", 1024)
        letters.append((letter.key, letter.value, letter.headers))
    return letters


def test_a_replay_killed_and_run_again_with_its_id_sends_each_dead_letter_once(pipe, tmp_path):
    p = pipe(partitions=3)
    target = p.output
    produce(p.bootstrap, p.dead_letter, dead_letters(10_000))
    produce(p.bootstrap, p.dead_letter, [(b"x", b"written by something else")])
    argv = [sys.executable, "-m", "processor", "dlq", "replay", "-c", str(p.config), "--to", target,
            "--id", "resume", "--rate", "2500"]
    log = open(tmp_path / "replay.log", "wb")
    first = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_for(lambda: len(read_all(p.bootstrap, target)) >= 2_000, 60, "a part replayed")
    rng = random.Random(5)
    wait_for(lambda: rng.random() < 0.3, 5, "a random moment", interval=0.05)
    first.kill()
    first.wait()
    done_before = len(read_all(p.bootstrap, target))
    rest = dlq("replay", "-c", str(p.config), "--to", target, "--id", "resume", timeout=300)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    sent = Counter(r.headers.get("__processor.replay.offset") for r in read_all(p.bootstrap, target))
    assert None not in sent, "the record without the processor's headers was replayed"
    assert len(sent) == 10_000 and set(sent.values()) == {1}, "a dead letter was lost or sent twice"
    assert 0 < done_before < 10_000
    print(f"\nkilled after {done_before} replayed; the rerun: {rest.stdout.strip()}")


def test_bad_replays_are_one_line(pipe):
    p = pipe(partitions=1)
    produce(p.bootstrap, p.dead_letter, dead_letters(3))  # from "orders", which does not exist
    foreign = dlq("replay", "-c", str(p.config), "--include-foreign")
    assert foreign.returncode == 2 and "needs --to" in foreign.stderr
    unknown = dlq("replay", "-c", str(p.config), "--to", "no-such-topic")
    assert unknown.returncode == 2 and "'no-such-topic' does not exist" in unknown.stderr
    gone = dlq("replay", "-c", str(p.config), "--id", "gone")
    assert gone.returncode == 1 and "topic 'orders' does not exist" in gone.stderr, gone.stderr
    timer = dead_letter(message("__timers", 0, -1, b"k", b"{}"), Failure("transform", Poison("no")), "app", 1024)
    produce(p.bootstrap, p.dead_letter, [(timer.key, timer.value, timer.headers)])
    timers = dlq("replay", "-c", str(p.config), "--id", "timers", "--origin-topic", "__timers")
    assert timers.returncode == 1 and "is a timer's: a timer has no input topic to go back to: replay it with --to" \
        in timers.stderr, timers.stderr
    existing = AdminClient({"bootstrap.servers": p.bootstrap}).list_topics(timeout=30).topics
    assert "orders" not in existing and "__timers" not in existing  # asking never creates them
    missing = dlq("list", "-c", str(p.config), "--topic", "no-such-dlq")
    assert missing.returncode == 2 and missing.stderr.strip() == (
        "topic 'no-such-dlq' does not exist (or this client may not describe it)")
    dry = dlq("replay", "-c", str(p.config), "--to", p.output, "--dry-run")
    assert dry.returncode == 0 and "dry run: 4 dead letters would be replayed" in dry.stdout
    assert read_all(p.bootstrap, p.output) == []


def test_letters_the_target_refuses_are_named_and_skipped_and_the_others_replayed_once(pipe, new_topic):
    """A null key to a compacted topic, a record over its max.message.bytes: Kafka refuses the
    whole request they are in; each is found, named on a line, and left in the dead-letter topic."""
    p = pipe(partitions=1)
    target = new_topic("compacted", config={"cleanup.policy": "compact", "max.message.bytes": "4000"})
    letters, refused = [], []
    for i in range(40):
        key = None if i in (5, 17, 18) else f"k{i}".encode()
        value = b"x" * 5000 if i in (9, 30) else json.dumps({"seq": i}).encode()
        letter = dead_letter(message("orders", 0, i, key, value), Failure("transform", Poison("no")), "app", 1024)
        letters.append((letter.key, letter.value, letter.headers))
        if key is None or len(value) > 4000:
            refused.append(i)
    produce(p.bootstrap, p.dead_letter, letters)
    done = dlq("replay", "-c", str(p.config), "--to", target, "--id", "refusals", timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    named = [line for line in done.stderr.splitlines() if "not replayed" in line]
    assert sorted(int(line.split("@")[1].split()[0].rstrip(":")) for line in named) == refused, done.stderr
    assert "5 refused by their target" in done.stdout, done.stdout
    sent = Counter(int(r.headers["__processor.replay.offset"]) for r in read_all(p.bootstrap, target))
    assert sorted(sent) == [i for i in range(40) if i not in refused] and set(sent.values()) == {1}
