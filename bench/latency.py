"""End-to-end latency of one contender: records produced at a steady rate, each carrying its
send time, read back with read_committed; p50 and p99 of (arrival - send)."""

from __future__ import annotations

import io
import statistics
import struct
import subprocess
import threading
import time
from pathlib import Path

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from examples.orders import ORDER, SCHEMAS
from localkafka.clients import create_topics, unique_name, wait_for
from processor.codecs import load_schema

ENRICHED = load_schema(SCHEMAS / "order_enriched.avsc")
PADDING = b"x" * 192
WARM_UP_S = 1.0


def _value(avro: bool, i: int) -> bytes:
    now = time.time()
    if not avro:
        return struct.pack(">d", now) + PADDING
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, ORDER, {"order_id": f"l-{i}", "customer_id": "c-1",
                                               "amount_cents": 1000, "currency": "EUR",
                                               "created_at": int(now * 1000)})
    return buffer.getvalue()


def _sent_at(avro: bool, value: bytes) -> float:
    if not avro:
        return struct.unpack_from(">d", value)[0]
    created = fastavro.schemaless_reader(io.BytesIO(value), ENRICHED, None)["created_at"]
    return created.timestamp()


def _group_stable(bootstrap: str, group: str) -> bool:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=5)
    except Exception:  # noqa: BLE001 - not there yet
        return False
    return description.state == ConsumerGroupState.STABLE and bool(description.members)


def measure(bootstrap: str, command, partitions: int, workdir: Path, avro: bool,
            rate: int = 1000, seconds: float = 10.0) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    source, target, group = unique_name("lat-in"), unique_name("lat-out"), unique_name("lat-group")
    create_topics(bootstrap, [source, target, target + "-dlq"], partitions)
    log = open(workdir / f"{group}.log", "wb")
    proc = subprocess.Popen(command(source, target, group), stdout=log, stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parent.parent)
    total = int(rate * seconds)
    latencies: list[tuple[float, float]] = []  # (sent at, milliseconds to arrival)
    try:
        wait_for(lambda: proc.poll() is None and _group_stable(bootstrap, group), 60,
                 f"{group} joining its group", interval=0.5)
        # assigned, not subscribed: no group join delays the first reads
        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": unique_name("lat-reader"),
                           "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
        reader.assign([TopicPartition(target, p, OFFSET_BEGINNING) for p in range(partitions)])

        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        producer.list_topics(source, timeout=10)  # connected, with the topic's leaders known
        reader.poll(0.5)

        def feed() -> None:
            began = time.monotonic()
            for i in range(total):
                delay = began + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the load, not waiting on a race
                producer.produce(source, _value(avro, i), f"k{i}".encode())
                producer.poll(0)
            producer.flush(30)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        deadline = time.monotonic() + seconds + 60
        while len(latencies) < total and time.monotonic() < deadline:
            msg = reader.poll(0.2)  # one at a time: consume(n) would hold records back until n came
            if msg is not None and not msg.error():
                sent = _sent_at(avro, msg.value())
                latencies.append((sent, (time.time() - sent) * 1000))
        reader.close()
        feeder.join(10)
    finally:
        proc.kill()
        proc.wait()
    if len(latencies) < total:
        raise RuntimeError(f"{group}: only {len(latencies)} of {total} records came through")
    first_sent = min(sent for sent, _ in latencies)  # the first second warms every client up
    cut = statistics.quantiles([ms for sent, ms in latencies if sent >= first_sent + WARM_UP_S], n=100)
    return cut[49], cut[98]
