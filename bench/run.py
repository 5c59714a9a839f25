"""Throughput of this processor against baselines, on one local broker, run alternately.

    python -m bench.run --records 300000 --rounds 2

Every contender copies the same pre-filled input (3 partitions, ~200-byte values) to an
output topic of its own, as a subprocess, timed from its start until its consumer group has
committed the end offsets. Figures are records/s and the ratio to the naive transactional
loop of the same round (the machine is noisy; compare ratios, not absolute numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from examples.orders import make_samples
from localkafka import LocalBroker
from localkafka.clients import committed_offsets, create_topics, end_offsets, produce, unique_name, wait_for

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 3


def processor_config(path: Path, bootstrap: str, source: str, target: str, group: str,
                     avro: bool) -> Path:
    value = ({"format": "avro", "schema": str(ROOT / "schemas" / "order.avsc")} if avro
             else {"format": "bytes"})
    out = ({"format": "avro", "schema": str(ROOT / "schemas" / "order_enriched.avsc")} if avro
           else {"format": "bytes"})
    path.write_text(yaml.safe_dump({
        "app_id": group, "instance_id": "bench",
        "kafka": {"bootstrap_servers": bootstrap},
        "input": {"topics": [source], "value": value},
        "output": {"topic": target, "value": out},
        "dead_letter": {"topic": target + "-dlq"},
        "transform": "examples.enrich:transform" if avro else "bench.passthrough:transform",
        "metrics": {"enabled": False}, "logging": {"level": "WARNING"}}))
    return path


def contenders(bootstrap: str, workdir: Path, quix_python: Path | None) -> dict:
    def naive(mode):
        return lambda src, dst, group: [sys.executable, "-m", "bench.naive_copy", mode, bootstrap, src, dst, group]

    def processor(avro):
        return lambda src, dst, group: [sys.executable, "-m", "processor", "run", "-c", str(
            processor_config(workdir / f"{group}.yaml", bootstrap, src, dst, group, avro))]

    found = {"naive-alo": naive("alo"), "naive-txn": naive("txn"),
             "processor-eos-bytes": processor(False), "processor-eos-avro": processor(True)}
    if quix_python is not None and quix_python.exists():  # its own venv: it pins confluent-kafka
        found["quix-eos"] = lambda src, dst, group: [str(quix_python), "-m", "bench.quix_copy",
                                                     bootstrap, src, dst, group]
    return found


def run_one(bootstrap: str, command, source: str, workdir: Path) -> float:
    target, group = unique_name("bench-out"), unique_name("bench-group")
    create_topics(bootstrap, [target, target + "-dlq"], PARTITIONS)
    ends = end_offsets(bootstrap, source)
    log = open(workdir / f"{group}.log", "wb")
    began = time.monotonic()
    proc = subprocess.Popen(command(source, target, group), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(lambda: proc.poll() is not None or committed_offsets(bootstrap, group, source) == ends,
                 600, f"{command} finishing", interval=0.1)
        elapsed = time.monotonic() - began
        if proc.poll() is not None:
            raise RuntimeError(f"{group} exited with {proc.returncode}; see {log.name}")
    finally:
        proc.kill()
        proc.wait()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="contender names to run")
    parser.add_argument("--quix-python", type=Path, default=ROOT / ".venv-quix" / "bin" / "python",
                        help="a Python with quixstreams installed (scripts/bench makes one)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "throughput.json")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    broker = LocalBroker(workdir / "kafka")
    bootstrap = broker.start()
    try:
        samples = make_samples(args.records, poison_per_kind=0.0, seed=99)
        create_topics(bootstrap, ["bench-avro", "bench-bytes"], PARTITIONS)
        produce(bootstrap, "bench-avro", [(s.key, s.value) for s in samples])
        produce(bootstrap, "bench-bytes", [(s.key, s.value.ljust(200, b"x")) for s in samples])
        runs: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        found = contenders(bootstrap, workdir, args.quix_python)
        names = [n for n in found if not args.only or n in args.only or n == "naive-txn"]
        for round_no in range(args.rounds):
            order = names if round_no % 2 == 0 else names[::-1]
            rates = {}
            for name in order:
                source = "bench-avro" if name.endswith("avro") else "bench-bytes"
                rates[name] = args.records / run_one(bootstrap, found[name], source, workdir)
                print(f"round {round_no + 1}: {name:22s} {rates[name]:10,.0f} records/s", flush=True)
            for name, rate in rates.items():
                runs.setdefault(name, []).append(rate)
                ratios.setdefault(name, []).append(rate / rates["naive-txn"])
        report = {"records": args.records, "partitions": PARTITIONS, "rounds": args.rounds,
                  "machine": f"{os.cpu_count()} cores", "results": {
                      n: {"records_per_s": statistics.median(runs[n]),
                          "ratio_to_naive_txn": statistics.median(ratios[n])} for n in names}}
        print(f"\n{'contender':22s} {'records/s':>12s} {'x naive-txn':>12s}")
        for n, r in report["results"].items():
            print(f"{n:22s} {r['records_per_s']:12,.0f} {r['ratio_to_naive_txn']:12.2f}")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwritten to {args.json}")
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
