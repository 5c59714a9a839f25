"""The local broker is a real, transactional Apache Kafka bound to loopback."""

from __future__ import annotations

import subprocess

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer

from localkafka.clients import create_topics, read_all, unique_name, wait_for

pytestmark = pytest.mark.kafka


def transactional_producer(bootstrap: str, txn_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": txn_id})
    producer.init_transactions(30)
    return producer


def test_read_committed_sees_only_committed_batches(kafka_bootstrap, new_topic):
    topic = new_topic()
    producer = transactional_producer(kafka_bootstrap, unique_name("txn"))
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, f"aborted-{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)

    committed = [r.value for r in read_all(kafka_bootstrap, topic, "read_committed")]
    uncommitted = [r.value for r in read_all(kafka_bootstrap, topic, "read_uncommitted")]

    assert committed == [f"committed-{i}".encode() for i in range(5)]
    assert uncommitted == committed + [f"aborted-{i}".encode() for i in range(5)]


def test_second_producer_with_same_transactional_id_fences_the_first(kafka_bootstrap, new_topic):
    topic = new_topic()
    txn_id = unique_name("txn")
    first = transactional_producer(kafka_bootstrap, txn_id)
    first.begin_transaction()
    first.produce(topic, b"zombie")
    first.flush(30)

    second = transactional_producer(kafka_bootstrap, txn_id)  # aborts the first's transaction
    second.begin_transaction()
    second.produce(topic, b"successor")
    second.commit_transaction(30)

    with pytest.raises(KafkaException) as caught:
        first.produce(topic, b"late")
        first.commit_transaction(30)
    error: KafkaError = caught.value.args[0]
    assert error.fatal() or error.code() == KafkaError._FENCED
    assert [r.value for r in read_all(kafka_bootstrap, topic)] == [b"successor"]


def test_broker_listens_on_loopback_only(kafka_bootstrap):
    port = kafka_bootstrap.rsplit(":", 1)[1]
    listeners = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    ours = [line.split()[3] for line in listeners.splitlines() if line.split()[3].endswith(f":{port}")]
    assert ours, f"nothing listens on port {port}"
    assert all(addr.rsplit(":", 1)[0] in ("127.0.0.1", "[::ffff:127.0.0.1]") for addr in ours), ours


def test_private_broker_restarts_on_the_same_data_dir(private_broker):
    topic = unique_name("restart")
    create_topics(private_broker.bootstrap, [topic])
    producer = transactional_producer(private_broker.bootstrap, unique_name("txn"))
    producer.begin_transaction()
    producer.produce(topic, b"before")
    producer.commit_transaction(30)

    private_broker.restart(hard=True)

    # after an unclean restart the partition's high watermark is restored once its leader recovers
    wait_for(lambda: [r.value for r in read_all(private_broker.bootstrap, topic)] == [b"before"],
             timeout=60, what="the committed record visible again after a hard restart")
