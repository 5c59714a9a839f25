"""What `check --connect` asks the brokers: that they answer and accept our credentials,
that every configured topic exists, and that they speak the configured group protocol
(KIP-848's `consumer`)."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

from processor.config import Config, Problem
from processor.kafka import (NO_CONSUMER_PROTOCOL, QUIET_LOGGER, ClientErrors, client_settings,
                             consumer_settings, lacks_consumer_protocol)

PROTOCOL_PROBE_S = 15.0


def check_connection(config: Config, timeout: float = 15.0) -> list[Problem]:
    errors = ClientErrors()
    admin = AdminClient({**client_settings(config), "error_cb": errors, "logger": QUIET_LOGGER})
    try:
        topics = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        reason = errors.fatal or exc.args[0].str()
        return [Problem("kafka.bootstrap_servers",
                        f"cannot use the brokers at {config.kafka.bootstrap_servers}: {reason}")]
    wanted = {f"input.topics[{i}]": t for i, t in enumerate(config.input.topics)}
    wanted |= {"output.topic": config.output.topic, "dead_letter.topic": config.dead_letter.topic}
    problems = [Problem(path, f"topic {name!r} does not exist")
                for path, name in wanted.items() if name not in topics]
    if not problems and config.kafka.group_protocol == "consumer":
        problems += _consumer_protocol(config, admin)
    return problems


def _consumer_protocol(config: Config, admin: AdminClient) -> list[Problem]:
    """Join a group of our own with the consumer protocol until it assigns the inputs: a
    broker without it answers the heartbeat with UNSUPPORTED_VERSION (a fatal error)."""
    group = f"{config.group_id}.check-{uuid.uuid4().hex[:8]}"
    settings = {**consumer_settings(config), "group.id": group, "logger": QUIET_LOGGER}
    settings.pop("group.instance.id", None)
    consumer = Consumer(settings)
    consumer.subscribe(config.input.topics)
    deadline = time.monotonic() + PROTOCOL_PROBE_S
    problem = Problem("kafka.group_protocol", f"no partition assigned in {PROTOCOL_PROBE_S:.0f}s "
                                              f"with group_protocol consumer")
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            error = msg.error() if msg is not None else None
            if error is not None and lacks_consumer_protocol(error):
                problem = Problem("kafka.group_protocol", NO_CONSUMER_PROTOCOL)
                break
            if consumer.assignment():
                return []
    finally:
        consumer.close()
        admin.delete_consumer_groups([group])
    return [problem]
