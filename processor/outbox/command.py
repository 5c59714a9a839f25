"""`processor outbox -c FILE [--create-table | --check]`: run the relay until SIGTERM.

Exit 0 after a clean stop, 1 when Kafka or the database stays away past its bound, Kafka
refuses a row, or another relay took over; 2 for a bad config or outbox table, with one line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from processor.config import ConfigError, load_config
from processor.kafka import ClientErrors, FatalError, Stopped, client_settings, transactional_settings
from processor.logs import setup_logging
from processor.outbox.gauges import RelayMetrics
from processor.outbox.progress import ensure_progress_topic
from processor.outbox.relay import Relay
from processor.outbox.settings import RelayConfig
from processor.outbox.table import OutboxTable, Refused, TableError
from processor.server import EndpointServer
from processor.txproducer import Reachability, TransactionalProducer

log = logging.getLogger("processor.outbox")
EXIT_OK, EXIT_FATAL, EXIT_CONFIG = 0, 1, 2


def main(args, stopping: threading.Event) -> int:
    try:
        config: RelayConfig = load_config(args.config, RelayConfig)
        producer = transactional_settings(config, config.transactional_id, config.outbox.transaction_timeout_ms)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:  # an override exactly-once cannot live with
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.logging.level, config.logging.format, config.app_id, config.secrets())
    o = config.outbox
    table = OutboxTable(o.dsn.get_secret_value(), o.table, o.database_unreachable_timeout_ms / 1000, stopping)
    try:
        try:
            if args.create_table:
                table.create()
                print(f"table {o.table}: ready")
                return EXIT_OK
            table.check()
        except Refused as exc:  # at start: the config's DSN or its secret is wrong
            raise TableError(str(exc)) from exc
        if args.check:
            print(f"{args.config}: OK (table {o.table} as the relay needs it)")
            return EXIT_OK
        return _relay(config, producer, table, stopping)
    except TableError as exc:
        print(f"outbox error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except Stopped as exc:
        log.info("%s", exc)
        return EXIT_OK
    except FatalError as exc:
        log.error("stopping: %s", exc)
        return EXIT_FATAL
    finally:
        table.close()


def _relay(config: RelayConfig, producer: dict, table: OutboxTable, stopping: threading.Event) -> int:
    errors = ClientErrors()
    hooks = {"logger": logging.getLogger("librdkafka"), "error_cb": errors}
    settings = {**client_settings(config), **hooks}
    o = config.outbox
    reachability = Reachability(config.kafka.unreachable_timeout_ms / 1000, errors)
    txp = TransactionalProducer(
        lambda extra: Producer({**producer, **hooks, **extra}),
        call_timeout_s=o.transaction_timeout_ms / 2000, reachability=reachability)
    metrics = RelayMetrics()
    relay = Relay(table, txp, config.progress_topic, o.route, o.batch_rows, o.poll_interval_ms / 1000,
                  metrics)

    def problem() -> str | None:
        if stopping.is_set():
            return "stopping"
        down_since = relay.database_down_since()
        if down_since is not None:
            return f"the database has not answered for {time.monotonic() - down_since:.0f}s"
        if reachability.since is not None:
            return f"Kafka has not answered for {time.monotonic() - reachability.since:.0f}s"
        return None

    def ready() -> bool:
        is_ready = relay.ready.is_set() and problem() is None
        metrics.ready.set(1 if is_ready else 0)
        return is_ready

    server = None
    if config.metrics.enabled:
        try:
            server = EndpointServer(config.metrics.host, config.metrics.port, metrics.registry,
                                    problem=problem, ready=ready)
        except OSError as exc:
            log.error("stopping: cannot serve metrics on %s:%d: %s", config.metrics.host,
                      config.metrics.port, exc.strerror or exc)
            return EXIT_FATAL
        log.info("metrics on http://%s:%d/metrics", config.metrics.host, server.server_port)
    log.info("starting: outbox %s -> %s, progress in %s, transactional.id %s", o.table, o.route,
             config.progress_topic, config.transactional_id)
    ensure_progress_topic(AdminClient(settings), config.progress_topic, o.replication_factor, stopping)
    threading.Thread(target=lambda: (stopping.wait(), reachability.stopping(10.0)), daemon=True).start()
    try:
        relay.run(stopping, settings)
    finally:
        if server is not None:
            server.close()
    return EXIT_OK
