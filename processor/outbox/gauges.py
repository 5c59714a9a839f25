"""The relay's Prometheus metrics, in a registry of their own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RelayMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.published = Counter("processor_outbox_rows_published", "Outbox rows committed to Kafka",
                                 ["topic"], registry=r)
        self.transactions = Counter("processor_outbox_transactions", "Kafka transactions by outcome",
                                    ["outcome"], registry=r)
        self.deleted = Counter("processor_outbox_rows_deleted", "Published rows deleted from the table",
                               registry=r)
        self.lag_rows = Gauge("processor_outbox_lag_rows", "Committed outbox rows not published yet",
                              registry=r)
        self.oldest_unpublished = Gauge("processor_outbox_oldest_unpublished_seconds",
                                        "Age of the oldest committed row not published yet (0: none)",
                                        registry=r)
        self.lag_seconds = Gauge("processor_outbox_lag_seconds", "From insertion to Kafka commit, "
                                 "of the last row published", registry=r)
        self.commit_seconds = Histogram("processor_outbox_commit_seconds",
                                        "Time to commit a Kafka transaction", registry=r)
        self.ready = Gauge("processor_ready", "1 while /readyz answers 200 (publishing), else 0",
                           registry=r)
        for outcome in ("committed", "aborted"):
            self.transactions.labels(outcome)
