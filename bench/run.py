"""Throughput of this processor against baselines, on one local broker, run alternately.

    python -m bench.run --records 300000 --rounds 2
    python -m bench.run --records 1000000 --rounds 12 --only processor-eos-bytes --latency-rate 0

Every contender copies the same pre-filled input (3 partitions, ~200-byte values) to an
output topic of its own, as a subprocess; its rate is measured from its first output record
to its group committing the end offsets (start-up excluded). Every exactly-once contender
commits every 100 ms (Kafka Streams' default under EOS, ours; Quix is set to it). Figures are
records/s and the ratio to the naive transactional loop of the same round, medians over the
rounds, with the range of the ratios. The machine is noisy (on 2 cores shared with the
broker, one round's ratio has a standard deviation of ~0.15): the second command above runs
the processor and the naive loop alone over 12 rounds (~80 s), for a median that means
something; run it more than once.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bench.latency import measure
from examples.orders import make_samples
from localkafka import LocalBroker, ensure_jars
from localkafka.clients import COORDINATOR_MOVING, create_topics, end_offsets, produce, unique_name, wait_for

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

    found = {"naive-alo": naive("alo"), "naive-txn": naive("txn"), "naive-txn-untuned": naive("txn-untuned"),
             "processor-eos-bytes": processor(False), "processor-eos-avro": processor(True)}
    classpath = f"{java_classes(workdir)}:{ensure_jars()}/*"
    found["kafka-copier-eos"] = lambda src, dst, group: [
        "java", "-Xmx512m", "-cp", classpath, "org.apache.kafka.tools.TransactionalMessageCopier",
        "--broker-list", bootstrap, "--input-topic", src, "--input-partition", "0",
        "--output-topic", dst, "--consumer-group", group, "--transactional-id", group,
        "--transaction-size", "5000", "--group-mode", "--use-group-metadata", "--max-messages", "-1"]
    found["kafka-streams-eos"] = lambda src, dst, group: [
        "java", "-Xmx512m", "-cp", classpath, "PassThrough", bootstrap, src, dst, group,
        str(workdir / f"state-{group}")]
    if quix_python is not None and quix_python.exists():  # its own venv: it pins confluent-kafka
        found["quix-eos"] = lambda src, dst, group: [str(quix_python), "-m", "bench.quix_copy",
                                                     bootstrap, src, dst, group]
    return found


def java_classes(workdir: Path) -> Path:
    """Compile bench/java/*.java against the Kafka jars the local broker uses."""
    classes = workdir / "classes"
    if not classes.exists():
        subprocess.run(["javac", "-d", str(classes), "-cp", f"{ensure_jars()}/*",
                        *map(str, sorted((ROOT / "bench" / "java").glob("*.java")))], check=True)
    return classes


class Watch:
    """How far a contender got, asked through one long-lived client: a client per check
    (connections, threads: tens of ms of CPU on 2 cores) slowed whoever was measured."""

    def __init__(self, bootstrap: str, group: str, source: str, target: str):
        # read_uncommitted: else each offset fetch waits out the contender's pending commit
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                                  "enable.auto.commit": False, "isolation.level": "read_uncommitted"})
        self.inputs = [TopicPartition(source, p) for p in range(PARTITIONS)]
        self.outputs = [TopicPartition(target, p) for p in range(PARTITIONS)]

    def produced(self) -> int:
        """Output records written so far (transactional markers included: only >0 matters)."""
        return sum(self.consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self.outputs)

    def committed(self) -> int:
        """Inputs the group has committed."""
        try:
            return sum(max(tp.offset, 0) for tp in self.consumer.committed(self.inputs, timeout=10))
        except KafkaException as exc:  # the group's coordinator is not there yet
            if exc.args[0].retriable() or exc.args[0].code() in COORDINATOR_MOVING:
                return 0
            raise

    def close(self) -> None:
        self.consumer.close()


def run_one(bootstrap: str, command, source: str, workdir: Path) -> tuple[float, float]:
    """Records/s from the contender's first output record to its last committed input:
    start-up and group join are left out, so a JVM is not charged for its warm-up; and the
    contender's peak RSS in MB."""
    target, group = unique_name("bench-out"), unique_name("bench-group")
    create_topics(bootstrap, [target, target + "-dlq"], PARTITIONS)
    total = sum(end_offsets(bootstrap, source).values())
    end_offsets(bootstrap, target)  # its leaders are in place
    watch = Watch(bootstrap, group, source, target)
    began: list[float] = []

    def finished() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{group} exited with {proc.returncode}; see {log.name}")
        if not began:
            if watch.produced() > 0:
                began.append(time.monotonic())
            return False
        return watch.committed() == total

    log = open(workdir / f"{group}.log", "wb")
    proc = subprocess.Popen(command(source, target, group), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for(finished, 900, f"{group} finishing", interval=0.02)
        ended = time.monotonic()
        peak_mb = peak_rss_mb(proc.pid)
    finally:
        proc.kill()
        proc.wait()
        watch.close()
    return total / (ended - began[0]), peak_mb


def naive_txn_rate(bootstrap: str, source: str, workdir: Path) -> float:
    """The naive transactional loop's records/s over `source`: a round's baseline."""
    rate, _ = run_one(bootstrap, lambda src, dst, group: [sys.executable, "-m", "bench.naive_copy", "txn",
                                                          bootstrap, src, dst, group], source, workdir)
    return rate


def record_times(bootstrap: str, topic: str) -> list[int]:
    """When each record of `topic` was produced (ms): the rate comes from the records (the
    first command sent to the last result), not from polling."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("times"),
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    consumer.subscribe([topic])
    stamps, ended = [], set()
    try:
        while len(ended) < PARTITIONS:
            for msg in consumer.consume(1000, 1.0):
                if msg.error() is None:
                    stamps.append(msg.timestamp()[1])
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    ended.add(msg.partition())
    finally:
        consumer.close()
    return stamps


def round_parser(doc: str, count: str, default: int, results: str) -> argparse.ArgumentParser:
    """The command line of a benchmark run in rounds: `--<count>`, `--rounds`, `--json`."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(f"--{count}", type=int, default=default)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / results)
    return parser


class Rounds:
    """One contender's rate per round and its ratio to the naive loop of the same round."""

    def __init__(self, what: str, baseline: str = "naive-txn", baseline_what: str = "records",
                 baseline_is: str = "the naive transactional loop"):
        self.what, self.rates, self.ratios = what, [], []
        self.baseline, self.baseline_what, self.baseline_is = baseline, baseline_what, baseline_is

    def add(self, rate: float, naive: float) -> None:
        self.rates.append(rate)
        self.ratios.append(rate / naive)
        print(f"round {len(self.rates)}: {rate:10,.0f} {self.what}/s; {self.baseline} {naive:10,.0f} "
              f"{self.baseline_what}/s; ratio {rate / naive:.4f}", flush=True)

    def summarize(self, path: Path, facts: dict) -> None:
        """Print the medians; write them to `path`."""
        rate, ratio = statistics.median(self.rates), statistics.median(self.ratios)
        print(f"\n{self.what}/s (median of {len(self.rates)}): {rate:,.0f}, {ratio:.4f} of "
              f"{self.baseline_is}'s {self.baseline_what}/s")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**facts, "partitions": PARTITIONS, "per_s": rate,
                                    f"ratio_to_{self.baseline.replace('-', '_')}": ratio,
                                    "rates_by_round": [round(r) for r in self.rates]}, indent=2))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def local_broker(prefix: str) -> Iterator[tuple[Path, str]]:
    """A broker of its own in a new work dir: (work dir, bootstrap). The dir goes after a
    run (gigabytes of broker data) and stays, with the contenders' logs, after a failure."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = LocalBroker(workdir / "kafka")
    try:
        yield workdir, broker.start()
    except BaseException:
        print(f"the broker's data and the contenders' logs are kept in {workdir}", file=sys.stderr)
        raise
    finally:
        broker.stop()
    shutil.rmtree(workdir)


def alternate(bootstrap: str, contenders: dict, rounds: int, workdir: Path,
              source_of, peaks: dict[str, float] | None = None
              ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each contender's rate per round (in turn, the order reversed every other round) and
    its ratio to the naive transactional loop's rate of the same round; `peaks` gets each
    one's highest peak RSS (MB)."""
    runs: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    peaks = {} if peaks is None else peaks
    names = list(contenders)
    for round_no in range(rounds):
        rates = {}
        for name in names if round_no % 2 == 0 else names[::-1]:
            rates[name], peak = run_one(bootstrap, contenders[name], source_of(name), workdir)
            peaks[name] = max(peaks.get(name, 0.0), peak)
            print(f"round {round_no + 1}: {name:24s} {rates[name]:10,.0f} records/s", flush=True)
        for name, rate in rates.items():
            runs.setdefault(name, []).append(rate)
            ratios.setdefault(name, []).append(rate / rates["naive-txn"])
    return runs, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", nargs="*", help="contender names to run")
    parser.add_argument("--latency-rate", type=int, default=1000,
                        help="records/s of the latency phase (0: skip it)")
    parser.add_argument("--quix-python", type=Path, default=ROOT / ".venv-quix" / "bin" / "python",
                        help="a Python with quixstreams installed (scripts/bench makes one)")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "throughput.json")
    args = parser.parse_args()
    with local_broker("bench-") as (workdir, bootstrap):
        samples = make_samples(args.records, poison_per_kind=0.0, seed=99)
        create_topics(bootstrap, ["bench-avro", "bench-bytes"], PARTITIONS)
        produce(bootstrap, "bench-avro", [(s.key, s.value) for s in samples])
        produce(bootstrap, "bench-bytes", [(s.key, s.value.ljust(200, b"x")) for s in samples])
        found = contenders(bootstrap, workdir, args.quix_python)
        names = [n for n in found if not args.only or n in args.only or n == "naive-txn"]
        runs, ratios = alternate(bootstrap, {n: found[n] for n in names}, args.rounds, workdir,
                                 source_of=lambda n: "bench-avro" if n.endswith("avro") else "bench-bytes")
        latency = {}
        for name in names if args.latency_rate else []:
            if name == "kafka-copier-eos":  # it copies what the input held when it started
                print("latency of kafka-copier-eos: not measured (it needs a pre-filled input)")
                continue
            try:
                latency[name] = measure(bootstrap, found[name], PARTITIONS, workdir,
                                        avro=name.endswith("avro"), rate=args.latency_rate)
            except (RuntimeError, TimeoutError) as exc:
                print(f"latency of {name}: not measured: {exc}", flush=True)
                continue
            print(f"latency at {args.latency_rate}/s: {name:22s} p50 {latency[name][0]:7.1f} ms, "
                  f"p99 {latency[name][1]:7.1f} ms", flush=True)
        report = {"records": args.records, "partitions": PARTITIONS, "rounds": args.rounds,
                  "latency_rate": args.latency_rate, "machine": f"{os.cpu_count()} cores",
                  "results": {n: {"records_per_s": statistics.median(runs[n]),
                                  "ratio_to_naive_txn": statistics.median(ratios[n]),
                                  "ratios_by_round": [round(x, 3) for x in ratios[n]],
                                  "p50_ms": latency.get(n, (None, None))[0],
                                  "p99_ms": latency.get(n, (None, None))[1]} for n in names}}
        print(f"\n{'contender':22s} {'records/s':>12s} {'x naive-txn':>12s} {'rounds':>11s} "
              f"{'p50 ms':>8s} {'p99 ms':>8s}")
        for n, r in report["results"].items():
            p50, p99 = (f"{r[k]:8.1f}" if r[k] is not None else f"{'-':>8s}" for k in ("p50_ms", "p99_ms"))
            spread = f"{min(r['ratios_by_round']):.2f}-{max(r['ratios_by_round']):.2f}"
            print(f"{n:22s} {r['records_per_s']:12,.0f} {r['ratio_to_naive_txn']:12.2f} {spread:>11s} {p50} {p99}")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
