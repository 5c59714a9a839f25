"""Quix Streams exactly-once with its RocksDB state: the per-key count of bench/state.py.
`python -m bench.quix_count BOOTSTRAP IN OUT GROUP STATE_DIR`."""

from __future__ import annotations

import sys

from quixstreams import Application


def count(value: dict, key: str, timestamp: int, headers, state) -> dict:
    n = state.get("count", 0) + 1
    state.set("count", n)
    return {"key": key, "count": n}


def main() -> None:
    bootstrap, source, target, group, state_dir = sys.argv[1:6]
    app = Application(broker_address=bootstrap, consumer_group=group, state_dir=state_dir,
                      processing_guarantee="exactly-once", auto_offset_reset="earliest",
                      commit_interval=0.1,  # as Kafka Streams under EOS and this processor
                      consumer_extra_config={"fetch.queue.backoff.ms": 10})  # as all Python contenders
    input_topic = app.topic(source, value_deserializer="json", key_deserializer="str")
    output_topic = app.topic(target, value_serializer="json", key_serializer="str")
    app.dataframe(input_topic).apply(count, stateful=True, metadata=True).to_topic(output_topic)
    app.run()


if __name__ == "__main__":
    main()
