"""The README's demo: a local Kafka, sample orders with poison, the processor, a summary.

Run it with `scripts/demo`. It starts a fresh broker in a temporary directory, creates the
topics of config/example.yaml, feeds the orders, runs `processor run -c config/example.yaml`
until every input is committed, stops it with SIGTERM and reads the topics back with a
`read_committed` consumer.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from examples.orders import make_samples
from localkafka import LocalBroker, free_port
from localkafka.clients import committed_offsets, create_topics, end_offsets, produce, read_all, wait_for

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "example.yaml"


@contextmanager
def demo_broker(prefix: str) -> Iterator[tuple[Path, str]]:
    """A fresh local broker in a temporary work dir, for one demo: (work dir, bootstrap)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    broker = LocalBroker(workdir / "kafka")
    try:
        bootstrap = broker.start()
        print(f"Kafka {bootstrap} ready in {broker.ready_seconds:.1f}s (data in {workdir})")
        yield workdir, bootstrap
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def verdict(ok: bool, good: str) -> int:
    """Say how the demo ended; its exit code."""
    print(f"OK: {good}" if ok else "MISMATCH: see above")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    args = parser.parse_args()
    with demo_broker("processor-demo-") as (workdir, bootstrap):
        create_topics(bootstrap, ["orders"], partitions=3)
        create_topics(bootstrap, ["orders-enriched", "orders-dlq"], partitions=3)
        samples = make_samples(args.records, poison_per_kind=0.01)
        produce(bootstrap, "orders", [(s.key, s.value) for s in samples])
        kinds = Counter(s.kind for s in samples)
        print(f"fed {len(samples)} orders: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
        return run_processor(bootstrap, samples, workdir)


def run_processor(bootstrap: str, samples, workdir: Path) -> int:
    code = run_until_committed(CONFIG, bootstrap, "order-enricher", "orders", workdir)
    outputs = read_all(bootstrap, "orders-enriched")
    dead = read_all(bootstrap, "orders-dlq")
    stages = Counter(r.headers.get("__processor.errors.stage", b"?").decode() for r in dead)
    expected_out = sum(1 for s in samples if s.stage is None)
    print(f"read_committed: {len(outputs)} enriched orders (expected {expected_out}), "
          f"{len(dead)} dead letters by stage {dict(sorted(stages.items()))}")
    return verdict(code == 0 and len(outputs) == expected_out and len(dead) == len(samples) - expected_out,
                   "every order was processed exactly once")


def run_until_committed(config: Path, bootstrap: str, group: str, topic: str, workdir: Path,
                        env: dict[str, str] | None = None) -> int:
    """Run `processor run -c config` until every input of `topic` is committed, stop it
    with SIGTERM, say so; its exit code."""
    env = {**os.environ, "KAFKA_BOOTSTRAP": bootstrap, "METRICS_PORT": str(free_port()), **(env or {})}
    log_path = workdir / "processor.log"
    began = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "processor", "run", "-c", str(config)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ends = end_offsets(bootstrap, topic)
        wait_for(lambda: proc.poll() is not None or committed_offsets(bootstrap, group, topic) == ends,
                 timeout=120, what="the processor committing every input", interval=0.5)
        elapsed = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    print(f"processor exited with {code} after committing everything in {elapsed:.1f}s; "
          f"its last log line:\n  {log_path.read_text().strip().splitlines()[-1]}")
    return code


if __name__ == "__main__":
    sys.exit(main())
