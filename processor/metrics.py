"""The Prometheus metrics of SPEC section 7, in a registry of their own.

Counters move once per committed transaction (what a downstream `read_committed` reader
can see), never per record, so the hot path pays nothing for them.
"""

from __future__ import annotations

from collections import Counter as Tally

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("processor_records_consumed", "Input records committed",
                                ["topic"], registry=r)
        self.produced = Counter("processor_records_produced", "Output records committed",
                                ["topic"], registry=r)
        self.dead_lettered = Counter("processor_records_dead_lettered",
                                     "Inputs committed to the dead-letter topic",
                                     ["topic", "stage"], registry=r)
        self.transactions = Counter("processor_transactions", "Transactions by outcome",
                                    ["outcome"], registry=r)
        self.commit_seconds = Histogram("processor_transaction_commit_seconds",
                                        "Time to send offsets and commit a transaction",
                                        registry=r)
        self.batch_records = Histogram("processor_batch_records", "Input records per transaction",
                                       buckets=(1, 10, 100, 500, 1000, 5000, 10000, 50000),
                                       registry=r)
        self.lag = Gauge("processor_consumer_lag", "High watermark minus the committed position",
                         ["topic", "partition"], registry=r)
        self.rebalances = Counter("processor_rebalances", "Partition assignment changes",
                                  ["kind"], registry=r)
        self.retries = Counter("processor_retries", "Retried calls to external dependencies",
                               registry=r)
        self.circuit_state = Gauge("processor_circuit_state",
                                   "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                                   ["breaker"], registry=r)
        self.bulkhead_in_flight = Gauge("processor_bulkhead_in_flight",
                                        "Calls in flight through a bulkhead", ["bulkhead"],
                                        registry=r)
        self.state_recovery_remaining = Gauge("processor_state_recovery_records_remaining",
                                              "Changelog offsets a recovering store partition has left",
                                              ["store", "partition"], registry=r)
        self.state_restored = Counter("processor_state_restored_records",
                                      "Changelog records applied while recovering stores",
                                      ["store"], registry=r)
        self.ready = Gauge("processor_ready", "1 while /readyz answers 200 (partitions assigned, "
                           "stores recovered), else 0", registry=r)
        self.sagas = Gauge("processor_sagas", "Sagas of the partitions held here by state: "
                           "running:<step>, compensating:<step>, stuck (running too long), and "
                           "confirmed, cancelled (ended)", ["saga", "state"], registry=r)
        self.totals: Tally = Tally()  # for the summary logged at exit

    def start_at_zero(self, input_topics: list[str]) -> None:
        """Export the counters alerts take `increase()` of at 0 from the start: a series that
        first appears at 3 shows no increase, and its alert would never fire."""
        for topic in input_topics:
            for stage in ("deserialize", "transform", "serialize", "produce"):
                self.dead_lettered.labels(topic, stage)
        for outcome in ("committed", "aborted"):
            self.transactions.labels(outcome)

    def committed(self, consumed: Tally, produced: Tally, dead_lettered: Tally,
                  inputs: int, seconds: float) -> None:
        for topic, n in consumed.items():
            self.consumed.labels(topic).inc(n)
        for topic, n in produced.items():
            self.produced.labels(topic).inc(n)
        for (topic, stage), n in dead_lettered.items():
            self.dead_lettered.labels(topic, stage).inc(n)
        self.transactions.labels("committed").inc()
        self.commit_seconds.observe(seconds)
        self.totals.update(consumed=sum(consumed.values()), produced=sum(produced.values()),
                           dead_lettered=sum(dead_lettered.values()), committed=1)
        self.batch_records.observe(inputs)

    def aborted(self) -> None:
        self.transactions.labels("aborted").inc()
        self.totals["aborted"] += 1
