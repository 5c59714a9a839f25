"""Quix Streams with processing_guarantee="exactly-once", copying bytes.
`python -m bench.quix_copy BOOTSTRAP IN OUT GROUP`."""

from __future__ import annotations

import sys

from quixstreams import Application


def main() -> None:
    bootstrap, source, target, group = sys.argv[1:5]
    app = Application(broker_address=bootstrap, consumer_group=group,
                      processing_guarantee="exactly-once", auto_offset_reset="earliest",
                      commit_interval=0.1,  # as Kafka Streams under EOS and this processor
                      auto_create_topics=False, use_changelog_topics=False,
                      consumer_extra_config={"fetch.queue.backoff.ms": 10})  # as all Python contenders
    input_topic = app.topic(source, value_deserializer="bytes", key_deserializer="bytes")
    output_topic = app.topic(target, value_serializer="bytes", key_serializer="bytes")
    app.dataframe(input_topic).to_topic(output_topic)
    app.run()


if __name__ == "__main__":
    main()
