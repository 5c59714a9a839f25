"""The largest record each topic takes (its `max.message.bytes`), so that a record over it is
refused before it is sent, as the client refuses one over its own `message.max.bytes`: it is
dead-lettered alone. Sent, it would fail the whole produce request it is in, abort the
transaction, and be found by bisection (refusals.py), at ~10 aborts a record. The producer's
batches are kept within the smallest limit of the output and dead-letter topics too, or
batches of small records would be refused as well.

A topic whose setting cannot be read (no DescribeConfigs permission) is left to the
bisection, with one warning line. With compression the size on the wire is not known
before sending: no check then.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from processor.kafka import kafka_error

log = logging.getLogger("processor")
TIMEOUT_S = 5.0  # at start: Kafka away then leaves the limits unknown, and a stop is not held up
# a record batch's header, and a record's framing at most (varints of its length, timestamp,
# offset, key and value lengths, header count), besides its key, value and headers
BATCH_OVERHEAD, RECORD_OVERHEAD, HEADER_OVERHEAD = 61, 36, 10
CLIENT_LIMIT = 1_000_000  # librdkafka's message.max.bytes: it refuses larger records itself


class TopicLimits:
    def __init__(self, admin: AdminClient | None):
        """`admin` None: no limits are known (compression, or unit tests)."""
        self.admin = admin
        self.limits: dict[str, int | None] = {}

    def of(self, topic: str) -> int | None:
        """The topic's max.message.bytes, read once (None: unknown; Kafka away then too)."""
        if topic not in self.limits:
            self.read([topic])
        return self.limits[topic]

    def read(self, topics: list[str]) -> None:
        """Read the limits of `topics` not known yet, in one request."""
        topics = [topic for topic in topics if topic not in self.limits]
        if not topics:
            return
        if self.admin is None:
            self.limits.update(dict.fromkeys(topics))
            return
        futures = self.admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, t) for t in topics])
        deadline = time.monotonic() + TIMEOUT_S
        for resource, future in futures.items():
            topic = resource.name
            try:
                configs = future.result(timeout=max(deadline - time.monotonic(), 0.0))
                self.limits[topic] = int(configs["max.message.bytes"].value)
                continue
            except KafkaException as exc:
                why = kafka_error(exc).str()
            except TimeoutError:
                why = f"no answer in {TIMEOUT_S:.0f}s"
            except (KeyError, ValueError) as exc:
                why = repr(exc)
            log.warning("the max.message.bytes of topic %r cannot be read (%s): a record over it is found "
                        "by aborting transactions", topic, why)
            self.limits[topic] = None

    def forget(self, topic: str) -> None:
        """The broker refused a record as too large: the topic's limit is read again before
        the next record to it (it may have been lowered since)."""
        if self.admin is not None:
            self.limits.pop(topic, None)

    def batch_size(self, topics: list[str]) -> int | None:
        """The producer's batch.size that keeps every batch within these topics' limits, if
        one of them is below the client's own."""
        self.read(topics)
        limits = [limit for limit in map(self.of, topics) if limit is not None]
        smallest = min(limits, default=CLIENT_LIMIT)
        return smallest - BATCH_OVERHEAD if smallest < CLIENT_LIMIT else None

    def tight(self, topic: str) -> bool:
        """Whether records to `topic` need the check (its limit is below the client's own)."""
        limit = self.of(topic)
        return limit is not None and limit < CLIENT_LIMIT

    def check(self, topic: str, value: bytes | None, key: bytes | None, headers) -> None:
        """Raise what the client raises for a record too large (KafkaException,
        MSG_SIZE_TOO_LARGE), naming the topic's limit."""
        limit = self.of(topic)
        if limit is None:
            return
        size = (BATCH_OVERHEAD + RECORD_OVERHEAD + len(value or b"") + len(key or b"")
                + sum(HEADER_OVERHEAD + len(name) + len(data or b"") for name, data in headers or ()))
        if size > limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE,
                                            f"a record of {size} bytes is over the max.message.bytes of "
                                            f"topic {topic!r} ({limit})"))
