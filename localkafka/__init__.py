"""A real single-node Apache Kafka (KRaft) broker assembled from Maven Central jars.

Used by the demo, the tests and the benchmarks. Standard library only, so it runs before
the project's virtualenv exists. The broker binds to 127.0.0.1 and nothing else.
"""

from localkafka.broker import BrokerError, LocalBroker
from localkafka.procs import free_port
from localkafka.jars import ensure_jars

__all__ = ["BrokerError", "LocalBroker", "ensure_jars", "free_port"]
