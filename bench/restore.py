"""How fast stores recover from their changelogs, and the memory a recovered store costs.

    python -m bench.restore --changes 1000000 --keys 1000000 --rounds 3

A compacted changelog of `--changes` changes over `--keys` keys (3 partitions, values as the
stores write them) is restored into empty RocksDB store partitions by the processor's own
recovery (processor/state/recovery.py, the restorer's consumer settings). The baseline in the
same run reads the same changelog with the same consumer and does nothing with it: what Kafka
and librdkafka cost alone. Each side runs in a fresh process, alternately; the figures are
changes/s (medians), the ratio restore / bare read, and the restoring process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from bench.run import local_broker
from localkafka.clients import create_topics, produce, unique_name
from processor.state.backend import RocksBackend
from processor.state.codec import NEVER, encode_key, encode_value
from processor.state.recovery import CONSUMER_SETTINGS, Recovery
from processor.state.store import StorePartition

PARTITIONS = 3


def restorer(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("restore"), **CONSUMER_SETTINGS})


def bare_read(bootstrap: str, topic: str) -> int:
    consumer = restorer(bootstrap)
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    read, ended = 0, 0
    while ended < PARTITIONS:
        for msg in consumer.consume(10_000, 0.5):
            if msg.error() is None:
                read += 1
            elif msg.error().code() == KafkaError._PARTITION_EOF:
                ended += 1
    consumer.close()
    return read


def restore(bootstrap: str, topic: str, directory: Path) -> int:
    recovery = Recovery(restorer(bootstrap))
    for p in range(PARTITIONS):
        store = StorePartition("bench", p, RocksBackend(directory / str(p)), None, lambda s: None)
        recovery.add(store, topic, 86_400_000, lambda n: None)
    restored = 0
    while recovery.jobs:
        restored += sum(job.restored for job in recovery.step(0.5))
    recovery.consumer.close()
    return restored


def child(side: str, bootstrap: str, topic: str, directory: str) -> None:
    began = time.monotonic()
    changes = bare_read(bootstrap, topic) if side == "read" else restore(bootstrap, topic, Path(directory))
    seconds = time.monotonic() - began
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"changes": changes, "seconds": seconds, "peak_rss_mb": peak_mb}))


def run_child(side: str, bootstrap: str, topic: str, workdir: Path) -> dict:
    directory = tempfile.mkdtemp(prefix=f"{side}-", dir=workdir)
    out = subprocess.run([sys.executable, "-m", "bench.restore", "--child", side, bootstrap, topic, directory],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fill(bootstrap: str, changes: int, keys: int) -> str:
    topic = unique_name("changelog")
    create_topics(bootstrap, [topic], partitions=PARTITIONS, config={"cleanup.policy": "compact"})
    records = ((encode_key(f"key-{i % keys}"), encode_value({"count": i // keys + 1}, NEVER))
               for i in range(changes))
    produce(bootstrap, topic, records)
    return topic


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "BOOTSTRAP", "TOPIC", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0
    with local_broker("bench-restore-") as (workdir, bootstrap):
        topic = fill(bootstrap, args.changes, args.keys)
        rounds: dict[str, list[dict]] = {"read": [], "restore": []}
        for _ in range(args.rounds):
            for side in rounds:
                result = run_child(side, bootstrap, topic, workdir)
                assert result["changes"] == args.changes, result
                rounds[side].append(result)
    rate = {side: statistics.median(r["changes"] / r["seconds"] for r in results)
            for side, results in rounds.items()}
    ratios = [r["changes"] / r["seconds"] / (b["changes"] / b["seconds"])
              for r, b in zip(rounds["restore"], rounds["read"])]
    print(f"{args.changes:,} changes over {args.keys:,} keys, {PARTITIONS} partitions, {args.rounds} rounds")
    print(f"bare read: {rate['read']:,.0f} changes/s; restore: {rate['restore']:,.0f} changes/s "
          f"(ratio {statistics.median(ratios):.2f}, range {min(ratios):.2f}-{max(ratios):.2f}); "
          f"restoring process peak RSS {max(r['peak_rss_mb'] for r in rounds['restore']):.0f} MB "
          f"(bare read {max(r['peak_rss_mb'] for r in rounds['read']):.0f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
