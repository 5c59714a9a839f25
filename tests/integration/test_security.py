"""SASL/SCRAM-SHA-512 against the real broker; a wrong password is a clear, secret-free exit, and
so is a changelog topic the user may not create (ACLs)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType)

from examples.orders import make_samples
from localkafka import LocalBroker
from localkafka.clients import create_topics, unique_name
from tests.conftest import Pipe
from tests.processes import ROOT, write_config

pytestmark = pytest.mark.kafka
PASSWORD = "Sup3r-s3cret-pw"
SASL = {"security_protocol": "SASL_PLAINTEXT",
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": "svc", "password": "${KAFKA_PASSWORD}"}}


@pytest.fixture
def scram_broker(tmp_path_factory):
    broker = LocalBroker(tmp_path_factory.mktemp("scram-kafka"), scram_users={"svc": PASSWORD})
    broker.start()
    yield broker
    broker.stop()


def sasl_pipe(broker: LocalBroker, tmp_path, **config) -> Pipe:
    topics = [unique_name(label) for label in ("in", "out", "dlq")]
    create_topics(broker.bootstrap, topics, partitions=2)  # admin over the PLAINTEXT listener
    app_id = unique_name("app")
    path = write_config(tmp_path / "config.yaml", broker.sasl_bootstrap, input_topic=topics[0],
                        output_topic=topics[1], dead_letter_topic=topics[2], app_id=app_id,
                        kafka=SASL, **config)
    return Pipe(broker.bootstrap, *topics, app_id, path)


def test_processes_over_sasl_scram(scram_broker, tmp_path, processors):
    p = sasl_pipe(scram_broker, tmp_path)
    samples = make_samples(2_000, poison_per_kind=0.01, seed=13)
    p.feed(samples)
    proc = processors(p.config, "sasl", env={"KAFKA_PASSWORD": PASSWORD})
    p.drain(proc, 120)
    assert p.verify(samples).ok
    assert PASSWORD not in proc.log()


def test_wrong_password_exits_non_zero_with_a_clear_message(scram_broker, tmp_path, processors):
    p = sasl_pipe(scram_broker, tmp_path)
    proc = processors(p.config, "sasl", env={"KAFKA_PASSWORD": "not-the-password"})
    assert proc.proc.wait(90) == 1
    log = proc.log()
    assert "Kafka refused this client" in log and "Authentication failed" in log, log[-2000:]
    assert "not-the-password" not in log


def test_check_connect_reports_a_refused_login_without_the_secret(scram_broker, tmp_path):
    p = sasl_pipe(scram_broker, tmp_path)
    result = subprocess.run([sys.executable, "-m", "processor", "check", "-c", str(p.config), "--connect"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "KAFKA_PASSWORD": "not-the-password"})
    assert result.returncode == 2, result
    assert "kafka.bootstrap_servers" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr


@pytest.fixture
def acl_broker(tmp_path_factory):
    broker = LocalBroker(tmp_path_factory.mktemp("acl-kafka"), scram_users={"svc": PASSWORD},
                         authorizer=True)
    broker.start()
    yield broker
    broker.stop()


def deny_creating_topics(bootstrap: str, user: str) -> None:
    """Everything on topics and the cluster but CREATE (an ACL on a resource means no more
    "allow everyone" there: the rest must be allowed explicitly)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    acls = [AclBinding(kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation, permission)
            for kind, name in ((ResourceType.BROKER, "kafka-cluster"), (ResourceType.TOPIC, "*"))
            for operation, permission in ((AclOperation.ALL, AclPermissionType.ALLOW),
                                          (AclOperation.CREATE, AclPermissionType.DENY))]
    for future in admin.create_acls(acls).values():
        future.result(timeout=30)


def test_a_changelog_topic_it_may_not_create_ends_the_start_in_one_line(acl_broker, tmp_path, processors):
    p = sasl_pipe(acl_broker, tmp_path, transform="tests.transforms:count_per_key",
                  input_codec={"key": {"format": "string"}, "value": {"format": "json"}},
                  output_value={"format": "json"},
                  state={"dir": str(tmp_path / "state"), "stores": {"counts": {}}})
    deny_creating_topics(acl_broker.bootstrap, "svc")
    proc = processors(p.config, "i1", env={"KAFKA_PASSWORD": PASSWORD})
    assert proc.proc.wait(90) == 1
    log = proc.log()
    changelog = f"{p.app_id}-counts-changelog"
    assert f"cannot create the changelog topic '{changelog}'" in log, log[-3000:]
    assert "Authorization failed" in log and "create it (cleanup.policy=compact, 2 partitions)" in log
    assert "Traceback" not in log, log[-3000:]
    assert changelog not in AdminClient({"bootstrap.servers": acl_broker.bootstrap}).list_topics(timeout=30).topics
