"""Dead letters replayed per second (`processor dlq replay`), against the naive transactional
pass-through loop over the same dead-letter topic, on one local broker.

    python -m bench.replay --letters 200000 --rounds 2

The dead letters are written as the processor writes them (~200-byte values, the error
headers with a 1 KB stack trace). The replay's rate runs from its first replayed record to
its last (by their timestamps: start-up left out, as for the baseline in bench/run.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from confluent_kafka import Message

from bench.run import PARTITIONS, ROOT, Rounds, round_parser, local_broker, naive_txn_rate, record_times
from localkafka.clients import create_topics, produce, unique_name
from processor.deadletter import Failure, dead_letter
from processor.transform import Poison


def letters(count: int):
    for i in range(count):
        msg = Message(topic="orders", partition=i % PARTITIONS, offset=i, key=f"order-{i}".encode(),
                      value=json.dumps({"seq": i, "pad": "x" * 180}).encode(), timestamp=(1, 1_790_000_000_000))
        letter = dead_letter(msg, Failure("transform", Poison(f"order {i} refused")), "bench", 1024)
        yield letter.key, letter.value, letter.headers


def replay_rate(bootstrap: str, workdir: Path, source: str, count: int) -> float:
    target = unique_name("bench-replayed")
    create_topics(bootstrap, [target], PARTITIONS)
    config = workdir / f"{target}.yaml"
    config.write_text(yaml.safe_dump({
        "app_id": "bench", "kafka": {"bootstrap_servers": bootstrap},
        "input": {"topics": ["orders"]}, "output": {"topic": target}, "dead_letter": {"topic": source},
        "transform": "examples.enrich:transform", "metrics": {"enabled": False}}))
    done = subprocess.run([sys.executable, "-m", "processor", "dlq", "replay", "-c", str(config), "--to", target,
                           "--id", target], cwd=ROOT, capture_output=True, text=True, check=True)
    print(f"  {done.stdout.strip()}", flush=True)
    stamps = record_times(bootstrap, target)
    assert len(stamps) == count, f"{len(stamps)} replayed of {count}"
    return count / ((max(stamps) - min(stamps)) / 1000)


def main() -> int:
    args = round_parser(__doc__, "letters", 200_000, "replay.json").parse_args()
    rounds = Rounds("dead letters")
    with local_broker("bench-replay-") as (workdir, bootstrap):
        source = "bench-dlq"
        create_topics(bootstrap, [source], PARTITIONS)
        produce(bootstrap, source, letters(args.letters))
        for _ in range(args.rounds):
            naive = naive_txn_rate(bootstrap, source, workdir)
            rounds.add(replay_rate(bootstrap, workdir, source, args.letters), naive)
    rounds.summarize(args.json, {"letters": args.letters})
    return 0


if __name__ == "__main__":
    sys.exit(main())
