"""What `run` needs from its environment, checked before it touches Kafka, so that `check`
agrees with `run`: librdkafka's own verdict on the raw client settings (the clients are
built with no brokers to reach, then dropped), a metrics endpoint that can be served, a
state directory that can be written, and what the transform's sagas need of the config."""

from __future__ import annotations

import socket

from confluent_kafka import Consumer, KafkaException, Producer

from processor.config import Config, Problem
from processor.kafka import QUIET_LOGGER, consumer_settings, kafka_error, producer_settings
from processor.state.stores import unwritable



def kafka_settings(config: Config) -> list[Problem]:
    """One problem per client whose settings we or librdkafka refuse."""
    problems = []
    for section, settings_of, client in (("consumer", consumer_settings, Consumer),
                                         ("producer", producer_settings, Producer)):
        try:
            settings = settings_of(config)
        except ValueError as exc:
            problems.append(Problem(f"kafka.{section}", str(exc)))
            continue
        try:
            built = client({**settings, "bootstrap.servers": "", "logger": QUIET_LOGGER})
        except (KafkaException, ValueError, TypeError) as exc:
            reason = kafka_error(exc).str() if isinstance(exc, KafkaException) else str(exc)
            problems.append(Problem(f"kafka.{section}", f"librdkafka refuses the settings: {reason}"))
            continue
        if isinstance(built, Consumer):
            built.close()
    return problems


def metrics_endpoint(config: Config) -> list[Problem]:
    """The metrics host resolves and its port can be bound (nothing else holds it)."""
    m = config.metrics
    if not m.enabled:
        return []
    try:
        family, kind, proto, _, address = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        return [Problem("metrics.host", f"cannot resolve {m.host!r}: {exc.strerror or exc}")]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            return [Problem("metrics.port", f"cannot listen on {m.host}:{m.port}: {exc.strerror or exc}")]
    return []


def state_dir(config: Config) -> list[Problem]:
    """The state directory can be created and written (when there are stores)."""
    if not config.state.stores and not config.state.timers:
        return []
    problem = unwritable(config.state.dir / config.instance_id)
    return [Problem("state.dir", problem)] if problem else []


def sagas(config: Config) -> list[Problem]:
    """The sagas the transform defines have their store and timers (checked once it is loaded)."""
    from processor.saga import SAGAS  # noqa: PLC0415 - defined by the transform's import

    problems = []
    for saga in SAGAS.values():
        if saga.store not in config.state.stores:
            problems.append(Problem("state.stores", f"saga {saga.name!r} keeps its sagas in store "
                                                    f"{saga.store!r}: declare it"))
        if not config.state.timers:
            problems.append(Problem("state.timers", f"saga {saga.name!r} needs timers: set it to true"))
    return problems
