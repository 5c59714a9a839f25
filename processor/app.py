"""Wiring: config -> codecs, transform, clients, metrics; the run and check commands."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time

from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from processor.brokercheck import check_connection
from processor.codecs import Codec, SchemaError, build_codec
from processor.config import CodecConfig, Config, ConfigError, Problem, load_config
from processor.engine import STOP_SECONDS, Engine
from processor.hangwatch import HangWatch
from processor.kafka import (ClientErrors, FatalError, Stopped, client_settings, consumer_settings,
                             incremental_assignment, producer_settings)
from processor.logs import setup_logging
from processor.metrics import Metrics
from processor.pipeline import Pipeline
from processor.preflight import kafka_settings, metrics_endpoint, sagas, state_dir
from processor.resilience.build import configure as configure_resilience
from processor.resilience.dependency import REGISTRY
from processor.saga import SagaGauges
from processor.server import EndpointServer
from processor.state.build import build_stores
from processor.state.stores import Stores
from processor.transaction import Transactions
from processor.transform import TransformLoadError, load_transform
from processor.topiclimits import TopicLimits
from processor.txproducer import Reachability, TransactionalProducer
from processor.watchdog import EXIT_FATAL, watch

log = logging.getLogger("processor")
EXIT_OK, EXIT_CONFIG = 0, 2
WATCHDOG_MARGIN_S = 30.0


def _codec(config: CodecConfig, path: str, problems: list[Problem]) -> Codec | None:
    try:
        return build_codec(config)
    except SchemaError as exc:
        problems.append(Problem(path, str(exc)))
        return None


def build_pipeline(config: Config, metrics: Metrics | None = None, stores: Stores | None = None) -> Pipeline:
    """Load the transform and the schemas; every problem found is in the `ConfigError`."""
    problems: list[Problem] = configure_resilience(config, metrics)
    codecs = {f"{side}.{part}": _codec(getattr(getattr(config, side), part), f"{side}.{part}.schema",
                                       problems)
              for side in ("input", "output") for part in ("key", "value")}
    try:
        transform = load_transform(config.transform)
    except TransformLoadError as exc:
        problems.append(Problem("transform", str(exc)))
    problems += kafka_settings(config) + state_dir(config) + sagas(config)
    if problems:
        raise ConfigError(problems)
    return Pipeline(config.app_id, transform, codecs["input.key"], codecs["input.value"],
                    config.output.topic, codecs["output.key"], codecs["output.value"],
                    reuse_input_key=config.input.key == config.output.key,
                    record_deadline_s=config.processing.record_deadline_ms / 1000,
                    uses_deadlines=bool(config.resilience), stores=stores)


def check(config_path: str, connect: bool) -> list[Problem]:
    try:
        config = load_config(config_path)
        build_pipeline(config)
    except ConfigError as exc:
        return exc.problems
    return metrics_endpoint(config) or (check_connection(config) if connect else [])


def run(config_path: str, stopping: threading.Event) -> int:
    errors = ClientErrors()
    hooks = {"logger": logging.getLogger("librdkafka"), "error_cb": errors}
    try:
        config = load_config(config_path)
        metrics = Metrics()
        metrics.start_at_zero(config.input.topics)
        stores = build_stores(config, metrics, hooks)
        pipeline = build_pipeline(config, metrics, stores)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.logging.level, config.logging.format, config.app_id, config.secrets())
    def new_consumer() -> Consumer:
        return Consumer({**consumer_settings(config), **hooks})

    consumer = new_consumer()
    p = config.processing
    admin = AdminClient({**client_settings(config), **hooks})
    producer = producer_settings(config)
    compressed = str(producer.get("compression.type", producer.get("compression.codec", "none"))) != "none"
    limits = TopicLimits(None if compressed else admin)
    batch_size = limits.batch_size([config.output.topic, config.dead_letter.topic])
    if batch_size is not None:  # batches of small records within the smallest topic's limit
        producer["batch.size"] = min(batch_size, int(producer.get("batch.size", batch_size)))
    txp = TransactionalProducer(lambda extra: Producer({**producer, **hooks, **extra}),
                                call_timeout_s=p.transaction_timeout_ms / 2000,
                                reachability=Reachability(config.kafka.unreachable_timeout_ms / 1000,
                                                          errors))
    transactions = Transactions(consumer, txp, input_topics=config.input.topics,
                                output_topic=config.output.topic,
                                dead_letter_topic=config.dead_letter.topic, app_id=config.app_id,
                                commit_interval_s=p.commit_interval_ms / 1000,
                                max_batch_records=p.max_batch_records,
                                stacktrace_max_bytes=config.dead_letter.stacktrace_max_bytes,
                                metrics=metrics, auto_offset_reset=config.input.auto_offset_reset, limits=limits,
                                changelogs=stores.topics if stores else None,
                                hooks=[stores, SagaGauges(stores, metrics.sagas)] if stores else [])
    if stores:
        stores.produce = transactions.produce_to
    engine = Engine(consumer, transactions, pipeline, topics=config.input.topics,
                    concurrency=p.concurrency, retry_backoff_s=p.retry_backoff_ms / 1000,
                    seconds_until_probe=REGISTRY.seconds_until_probe,
                    incremental=incremental_assignment(config), new_consumer=new_consumer)
    threading.Thread(target=_on_stop_request, args=(stopping, txp.reachability), daemon=True).start()
    hangs = HangWatch(pipeline.fill.__code__, pipeline.record_deadline_s)

    def problem() -> str | None:
        return "stopping" if stopping.is_set() else hangs.problem() or transactions.streak.problem()

    def ready() -> bool:  # asked before each snapshot of the metrics: the gauge goes with it
        is_ready = engine.ready.is_set() and not (stores and stores.recovering)
        metrics.ready.set(1 if is_ready else 0)
        return is_ready

    if config.metrics.enabled:
        try:
            server = EndpointServer(config.metrics.host, config.metrics.port, metrics.registry,
                                    problem=problem, ready=ready)
        except OSError as exc:  # taken since `check`, or a host that is not ours
            log.error("stopping: cannot serve metrics on %s:%d: %s", config.metrics.host,
                      config.metrics.port, exc.strerror or exc)
            return EXIT_FATAL
        log.info("metrics on http://%s:%d/metrics", config.metrics.host, server.server_port)
    log.info("starting: %s -> %s (dead letters to %s), transactional.id %s",
             ",".join(config.input.topics), config.output.topic, config.dead_letter.topic,
             config.transactional_id)
    stall_bound = config.kafka.unreachable_timeout_ms / 1000 + WATCHDOG_MARGIN_S
    def mark(msg: Message) -> str:
        return transactions.marks.mark(msg, txp.new_producer)

    threading.Thread(target=watch, args=(lambda: engine.progressed, stall_bound, hangs, mark),
                     name="watchdog", daemon=True).start()
    began = time.monotonic()
    code = EXIT_FATAL  # until the run ends cleanly: only then are the stores checkpointed
    # what start-up built lives as long as the process: keep the collector from walking it
    # again and again while millions of short-lived messages pass (measured: ~10% of the loop)
    gc.collect()
    gc.freeze()
    try:
        if stores:
            stores.prepare(admin, config.input.topics,
                           config.state.replication_factor, stopping)
        engine.run(stopping)
        code = EXIT_OK
    except Stopped as exc:
        log.info("%s", exc)
        code = EXIT_OK
    except FatalError as exc:
        log.error("stopping: %s", exc)
        code = EXIT_FATAL
    finally:
        if stores:
            stores.close(checkpoint=code == EXIT_OK)
    t = metrics.totals
    log.info("stopped after %.1fs: %d records in, %d out, %d dead-lettered, "
             "%d transactions committed, %d aborted", time.monotonic() - began, t["consumed"],
             t["produced"], t["dead_lettered"], t["committed"], t["aborted"])
    return code


def _on_stop_request(stopping: threading.Event, reachability: Reachability) -> None:
    """From the stop request on, waiting on Kafka is bounded (the engine logs the stop)."""
    stopping.wait()
    reachability.stopping(STOP_SECONDS)

