"""Stateful throughput: a per-key count (JSON in and out, 1,000 keys, 3 partitions) by this
processor, Quix Streams and Kafka Streams, all exactly-once with RocksDB state, on one local
broker, run alternately.

    python -m bench.state --records 300000 --rounds 2
    python -m bench.state --records 1000000 --keys 1000000 --rounds 1 --only processor-eos-count

Each contender counts the same pre-filled input into an output topic of its own (one output
per input; Kafka Streams with its default record cache emits fewer) and writes its store's
changelog; the rate is measured as in bench/run.py, from the first output record to the
group committing the end offsets. The baseline of each round is the naive transactional
pass-through loop (bench/naive_copy.py) over the same input: the figures are records/s and
the ratio to it, medians over the rounds, and each contender's peak RSS (the second command:
a store of 1,000,000 keys).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import yaml

from bench.run import PARTITIONS, ROOT, alternate, java_classes, local_broker
from localkafka import ensure_jars
from localkafka.clients import create_topics, produce

def processor_config(path: Path, bootstrap: str, source: str, target: str, group: str) -> Path:
    path.write_text(yaml.safe_dump({
        "app_id": group, "instance_id": "bench",
        "kafka": {"bootstrap_servers": bootstrap},
        "input": {"topics": [source], "key": {"format": "string"}, "value": {"format": "json"}},
        "output": {"topic": target, "key": {"format": "string"}, "value": {"format": "json"}},
        "dead_letter": {"topic": target + "-dlq"},
        "transform": "bench.count:transform",
        "state": {"dir": str(path.parent / f"state-{group}"), "stores": {"counts": {}}},
        "metrics": {"enabled": False}, "logging": {"level": "WARNING"}}))
    return path


def contenders(bootstrap: str, workdir: Path, quix_python: Path) -> dict:
    classpath = f"{java_classes(workdir)}:{ensure_jars()}/*"
    found = {
        "naive-txn": lambda src, dst, group: [sys.executable, "-m", "bench.naive_copy", "txn",
                                              bootstrap, src, dst, group],
        "processor-eos-count": lambda src, dst, group: [
            sys.executable, "-m", "processor", "run", "-c",
            str(processor_config(workdir / f"{group}.yaml", bootstrap, src, dst, group))],
        "kafka-streams-eos-count": lambda src, dst, group: [
            "java", "-Xmx512m", "-cp", classpath, "Count", bootstrap, src, dst, group,
            str(workdir / f"state-{group}")],
    }
    if quix_python.exists():  # its own venv: it pins confluent-kafka
        found["quix-eos-count"] = lambda src, dst, group: [
            str(quix_python), "-m", "bench.quix_count", bootstrap, src, dst, group,
            str(workdir / f"state-{group}")]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keys", type=int, default=1_000, help="distinct keys (1,000,000: the memory figure)")
    parser.add_argument("--only", nargs="*", help="contender names to run (naive-txn always runs)")
    parser.add_argument("--quix-python", type=Path, default=ROOT / ".venv-quix" / "bin" / "python")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "state.json")
    args = parser.parse_args()
    with local_broker("bench-state-") as (workdir, bootstrap):
        create_topics(bootstrap, ["bench-count"], PARTITIONS)
        rng = random.Random(99)
        produce(bootstrap, "bench-count", (
            (f"k{key}".encode(), json.dumps({"order": i, "amount": rng.randint(1, 10_000)}).encode())
            for i, key in enumerate(rng.randrange(args.keys) for _ in range(args.records))))
        found = contenders(bootstrap, workdir, args.quix_python)
        names = [n for n in found if not args.only or n in args.only or n == "naive-txn"]
        peaks: dict[str, float] = {}
        runs, ratios = alternate(bootstrap, {n: found[n] for n in names}, args.rounds, workdir,
                                 source_of=lambda n: "bench-count", peaks=peaks)
        results = {n: {"records_per_s": statistics.median(runs[n]),
                       "ratio_to_naive_txn": statistics.median(ratios[n]),
                       "ratios_by_round": [round(x, 3) for x in ratios[n]],
                       "peak_rss_mb": round(peaks[n])} for n in names}
        print(f"\n{'contender':24s} {'records/s':>12s} {'x naive-txn':>12s} {'rounds':>11s} {'peak RSS MB':>12s}")
        for n, r in results.items():
            spread = f"{min(r['ratios_by_round']):.2f}-{max(r['ratios_by_round']):.2f}"
            print(f"{n:24s} {r['records_per_s']:12,.0f} {r['ratio_to_naive_txn']:12.2f} {spread:>11s} "
                  f"{r['peak_rss_mb']:12,d}")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"records": args.records, "keys": args.keys, "partitions": PARTITIONS,
                                         "rounds": args.rounds, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
