"""Whether the topics outputs go to exist, asked of the cluster without creating them.

`produce()` does not refuse a record for a topic that does not exist (where the cluster
does not create topics): librdkafka holds it until it times out, so the transaction's commit
fails, the batch is processed again, and fails again, with no end and no clear error. So the
output and dead-letter topics are checked at start, and a topic an `Output` names when it
first appears (and again when producing to it fails).
"""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaError, KafkaException

METADATA_TIMEOUT_S = 10.0


class MissingTopic(Exception):
    """An output names a topic that does not exist: the record goes to the dead-letter topic."""


class Topics:
    def __init__(self, consumer: Consumer):
        self.consumer = consumer  # its metadata requests never create topics
        self.seen: set[str] = set()  # topics that existed: they are not asked about again

    def missing(self, topic: str, fresh: bool = False) -> bool:
        """Whether the cluster says `topic` does not exist (asking again if `fresh`); other
        errors raise KafkaException."""
        if topic in self.seen and not fresh:
            return False
        self.seen.discard(topic)
        meta = self.consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        if meta is None or (meta.error is not None
                            and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
            return True
        if meta.error is not None:
            raise KafkaException(meta.error)
        self.seen.add(topic)
        return False
