"""confluent-kafka client settings from the config, and the classification of Kafka errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from threading import Event
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException

from processor.config import CommandConfig, Config

# settings the exactly-once guarantee depends on: raw overrides may not change them
_CONSUMER_FIXED = {"isolation.level": "read_committed", "enable.auto.commit": False,
                   "enable.auto.offset.store": False}
_PRODUCER_FIXED = {"enable.idempotence": True, "acks": "all"}
# a newer instance with the same instance_id took over: the producer's transactional.id or,
# for a static member, the consumer's group.instance.id
_FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.FENCED_INSTANCE_ID,
                 KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED}
FENCED_BY = "fenced by a newer instance with the same instance_id"
# the client could not reach Kafka at all (a broker down or restarting)
UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._TIMED_OUT,
               KafkaError._RESOLVE}


class FatalError(Exception):
    """Processing cannot go on in this process (fenced, fatal Kafka error, ...): exit non-zero."""


_DENIED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED,
           KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED,
           KafkaError.CLUSTER_AUTHORIZATION_FAILED, KafkaError._SSL}


class MemberFenced(FatalError):
    """The broker fenced this consumer's static group membership (its group.instance.id):
    a newer instance took over, or the broker fenced the member itself after its session
    timed out while the broker restarted (librdkafka makes both fatal)."""


class ClientErrors:
    """librdkafka's client-wide errors (its `error_cb`). librdkafka retries a refused login
    forever; here a refused login, a denied authorization or a fatal error ends the process;
    a fenced static member is told apart (`check_member`: the engine decides)."""

    def __init__(self) -> None:
        self.fatal: str | None = None
        self.member_fenced: str | None = None

    def __call__(self, error: KafkaError) -> None:
        if is_member_fenced(error):
            self.member_fenced = self.member_fenced or f"{FENCED_BY}: {error.str()}"
        elif lacks_consumer_protocol(error):
            self.fatal = self.fatal or NO_CONSUMER_PROTOCOL
        elif is_fatal(error) or error.code() in _DENIED:
            self.fatal = self.fatal or (f"{FENCED_BY}: {error.str()}" if is_fenced(error)
                                        else f"Kafka refused this client: {error.str()}")

    def check(self) -> None:
        if self.fatal is not None:
            raise FatalError(self.fatal)

    def check_member(self) -> None:
        if self.member_fenced is not None:
            fenced, self.member_fenced = self.member_fenced, None
            raise MemberFenced(fenced)


def client_settings(config: CommandConfig) -> dict[str, Any]:
    k = config.kafka
    settings: dict[str, Any] = {"bootstrap.servers": k.bootstrap_servers,
                                "security.protocol": k.security_protocol,
                                "client.id": f"{config.app_id}-{config.instance_id}"}
    if k.sasl is not None:
        settings.update({"sasl.mechanism": k.sasl.mechanism, "sasl.username": k.sasl.username,
                         "sasl.password": k.sasl.password.get_secret_value()})
    if k.ssl is not None:
        for name in ("ca_location", "certificate_location", "key_location"):
            value = getattr(k.ssl, name)
            if value is not None:
                settings[f"ssl.{name.replace('_', '.')}"] = str(value)
        if k.ssl.key_password is not None:
            settings["ssl.key.password"] = k.ssl.key_password.get_secret_value()
    return settings


def _check_overrides(section: str, overrides: dict[str, Any], fixed: dict[str, Any]) -> None:
    for name, value in overrides.items():
        if name in fixed and str(value).lower() != str(fixed[name]).lower():
            raise ValueError(f"kafka.{section}.{name} must stay {fixed[name]} for exactly-once")


# librdkafka stops fetching for fetch.queue.backoff.ms (1 s by default) whenever its local
# queue holds queued.min.messages: a fast loop drains 100,000 records well within that second
# and then waits out the rest of it (measured: half the run time of a pass-through)
CONSUMER_DEFAULTS = {"fetch.queue.backoff.ms": 10}
# Classic protocol: a static member (group.instance.id) that restarts takes its partitions back
# at once, without a rebalance, even after kill -9; one that does not come back keeps them
# until its session times out: 10 s here (librdkafka's 45 s stalled them that long after every
# crash). A heartbeat a second lets the others learn of a rebalance soon after.
# Consumer protocol (KIP-848): the broker refuses a static member's instance id until the
# session of a killed predecessor expires (UNRELEASED_INSTANCE_ID), and keeps a static
# member's partitions for the whole session after a clean close; the session timeout is the
# broker's (45 s at least by default). So there members are dynamic by default: a clean close
# hands the partitions over at once, and a crash waits out the broker's session timeout.
TIMERS_FETCH_WAIT_MS = 100
CLASSIC_GROUP_DEFAULTS = {"session.timeout.ms": 10_000, "heartbeat.interval.ms": 1_000}
# the processor creates no topics, not even by producing to one that was deleted
PRODUCER_DEFAULTS = {"linger.ms": 5, "allow.auto.create.topics": False}


def consumer_settings(config: Config) -> dict[str, Any]:
    _check_overrides("consumer", config.kafka.consumer, _CONSUMER_FIXED)
    k = config.kafka
    group: dict[str, Any] = {"group.id": config.group_id, "group.protocol": k.group_protocol}
    if k.static:
        group["group.instance.id"] = config.instance_id
    if k.group_protocol == "classic":
        group.update(CLASSIC_GROUP_DEFAULTS)
    # with timers, the loop learns where each partition ends (timers wait for the records before
    # them): the end comes with an empty fetch, which the broker holds up to fetch.wait.max.ms
    timers = ({"fetch.wait.max.ms": TIMERS_FETCH_WAIT_MS}, {"enable.partition.eof": True}) if config.state.timers else ({}, {})
    return {**client_settings(config), **group, "auto.offset.reset": config.input.auto_offset_reset,
            **CONSUMER_DEFAULTS, **timers[0], **k.consumer, **_CONSUMER_FIXED, **timers[1]}


def incremental_assignment(config: Config) -> bool:
    """Whether the group assigns partitions by increments (the consumer protocol always does)."""
    strategy = str(consumer_settings(config).get("partition.assignment.strategy", ""))
    return config.kafka.group_protocol == "consumer" or "cooperative" in strategy


def producer_settings(config: Config) -> dict[str, Any]:
    return transactional_settings(config, config.transactional_id, config.processing.transaction_timeout_ms)


def transactional_settings(config: CommandConfig, transactional_id: str, timeout_ms: int) -> dict[str, Any]:
    """A transactional producer's (the processor's, the outbox relay's); ValueError for an
    override exactly-once cannot live with."""
    _check_overrides("producer", config.kafka.producer, _PRODUCER_FIXED)
    return {**client_settings(config), "transactional.id": transactional_id, "transaction.timeout.ms": timeout_ms,
            **PRODUCER_DEFAULTS, **config.kafka.producer, **_PRODUCER_FIXED}


def kafka_error(exc: KafkaException) -> KafkaError:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return error
    return KafkaError(KafkaError._FAIL, str(exc))


def is_fatal(error: KafkaError) -> bool:
    """A consumer reports its fatal error as `_FATAL` without the fatal flag."""
    return error.fatal() or error.code() == KafkaError._FATAL


def is_fenced(error: KafkaError) -> bool:
    return error.code() in _FENCED_CODES or is_member_fenced(error)


def is_member_fenced(error: KafkaError) -> bool:
    # a consumer's fatal error hides its code behind `_FATAL`: only its text names it
    return error.code() == KafkaError._FATAL and "fenced by other consumer" in error.str()


# for clients built only to ask something (check, preflight): their log lines are not the run's
QUIET_LOGGER = logging.getLogger("processor.quiet.librdkafka")
QUIET_LOGGER.addHandler(logging.NullHandler())
QUIET_LOGGER.propagate = False

NO_CONSUMER_PROTOCOL = ("the brokers do not support group_protocol consumer (KIP-848: Kafka 4.0+, "
                        "or 3.7+ with group.coordinator.rebalance.protocols including consumer): "
                        "set kafka.group_protocol to classic")


def lacks_consumer_protocol(error: KafkaError) -> bool:
    """The broker refused KIP-848's heartbeat (a consumer's fatal error, named in its text)."""
    return (is_fatal(error) or error.code() == KafkaError.UNSUPPORTED_VERSION) and \
        "ConsumerGroupHeartbeat" in error.str()


T = TypeVar("T")
ASK_AGAIN_S = 1.0


class KafkaAway(Exception):
    """Kafka did not answer (a broker restarting, say): worth asking again."""


class Stopped(Exception):
    """A stop was asked for while waiting for Kafka or a database to answer: nothing is left
    half done, so it is a clean stop (exit 0)."""


def ask_until_answered(ask: Callable[[], T], seconds: float, what: str, stopping: Event | None = None) -> T:
    """`ask()`, again every second while it raises KafkaAway, for up to `seconds`; then a
    FatalError saying `what` failed and why. A stop meanwhile: Stopped."""
    give_up = time.monotonic() + seconds
    stopping = stopping or Event()
    while True:
        try:
            return ask()
        except KafkaAway as exc:
            if time.monotonic() > give_up:
                raise FatalError(f"{what}: {exc} (Kafka did not answer for {seconds:.0f}s)") from exc
            logging.getLogger("processor").warning("%s: %s; asking again", what, exc)
            if stopping.wait(ASK_AGAIN_S):  # Kafka is away: pace the questions
                raise Stopped(f"stopped while Kafka did not answer ({what}: {exc})") from exc
