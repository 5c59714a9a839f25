"""Baselines: a naive confluent-kafka copy loop, at-least-once or transactional (the ceiling
of a Python exactly-once loop), the latter also with librdkafka's fetch defaults.
`python -m bench.naive_copy alo|txn|txn-untuned BOOTSTRAP IN OUT GROUP`."""

from __future__ import annotations

import signal
import sys
import time

from confluent_kafka import Consumer, Producer

# the processor's default: librdkafka's 1 s fetch.queue.backoff.ms would halve a fast loop's
# rate, and a ceiling should not be held back by it (txn-untuned keeps librdkafka's defaults)
FETCH_TUNING = {"fetch.queue.backoff.ms": 10}


def main() -> None:
    mode, bootstrap, source, target, group = sys.argv[1:6]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    transactional = mode.startswith("txn")
    tuning = {} if mode == "txn-untuned" else FETCH_TUNING
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "earliest", "enable.auto.commit": not transactional,
                         "auto.commit.interval.ms": 100,
                         "isolation.level": "read_committed", **tuning})
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                         **({"transactional.id": group} if transactional else {})})
    if transactional:
        producer.init_transactions()
    consumer.subscribe([source])
    in_txn, deadline = False, 0.0
    while not stop:
        for msg in consumer.consume(1000, 0.1):
            if msg.error():
                continue
            if transactional and not in_txn:
                producer.begin_transaction()
                in_txn, deadline = True, time.monotonic() + 0.1
            while True:
                try:
                    producer.produce(target, msg.value(), msg.key())
                    break
                except BufferError:
                    producer.poll(0.05)
        if transactional and in_txn and time.monotonic() >= deadline:
            producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                 consumer.consumer_group_metadata())
            producer.commit_transaction()
            in_txn = False
        producer.poll(0)
    producer.flush()
    consumer.close()


if __name__ == "__main__":
    main()
