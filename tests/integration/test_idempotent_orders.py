"""The idempotent order creation example (config/order-requests.yaml) against the real
broker: one order per idempotency key, one response per request (created, duplicate with
the original order id, or conflict), through kill -9 at random moments."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from examples.order_requests import make_requests
from localkafka.clients import create_topics, read_all, unique_name
from tests.conftest import Pipe
from tests.feeder import Feeder

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent.parent
TOPICS = ("order-requests", "order-responses", "orders-created", "order-requests-dlq")


@pytest.fixture
def example(kafka_bootstrap, tmp_path):
    """config/order-requests.yaml with topics of this test's own; (pipe, orders-created
    topic, environment)."""
    names = {topic: unique_name(topic) for topic in TOPICS}
    create_topics(kafka_bootstrap, list(names.values()), 3)
    config = yaml.safe_load((ROOT / "config" / "order-requests.yaml").read_text())
    app_id = unique_name("orders")
    config.update(app_id=app_id, kafka={"bootstrap_servers": kafka_bootstrap}, metrics={"enabled": False})
    config["input"]["topics"] = [names["order-requests"]]
    config["output"]["topic"] = names["order-responses"]
    config["dead_letter"]["topic"] = names["order-requests-dlq"]
    config["state"]["dir"] = str(tmp_path / "state")
    path = tmp_path / "order-requests.yaml"
    path.write_text(yaml.safe_dump(config))
    pipe = Pipe(kafka_bootstrap, names["order-requests"], names["order-responses"],
                names["order-requests-dlq"], app_id, path)
    return pipe, names["orders-created"], {"ORDERS_CREATED_TOPIC": names["orders-created"]}


def test_one_order_per_key_and_one_response_per_request_through_kill_9(example, processors):
    p, orders_created, env = example
    requests = make_requests(3_000, seed=5)
    feeder = Feeder(p.bootstrap, p.input, [SimpleNamespace(key=k, value=v, headers=h) for k, v, h in requests],
                    seconds=15)
    kills = p.kill_at_random_moments(lambda config, instance: processors(config, instance, env=env),
                                     "i1", feeder, 4, seed=5)
    feeder.finish()
    p.drain(processors(p.config, "i1", env=env))
    assert kills >= 3

    created = [json.loads(r.value) for r in read_all(p.bootstrap, orders_created)]
    responses = [json.loads(r.value) for r in read_all(p.bootstrap, p.output)]
    assert read_all(p.bootstrap, p.dead_letter) == []
    keys = Counter(key for key, _, _ in requests)
    assert Counter(o["idempotency_key"] for o in created) == Counter({k.decode(): 1 for k in keys})
    order_of = {o["idempotency_key"]: o["order_id"] for o in created}
    by_key = defaultdict(list)
    for response in responses:
        by_key[response["idempotency_key"]].append(response)
        assert response["order_id"] == order_of[response["idempotency_key"]]
    sent = defaultdict(list)
    for key, value, _ in requests:
        sent[key.decode()].append(json.loads(value))
    for key, payloads in sent.items():
        expected = ["created"] + ["duplicate" if payload == payloads[0] else "conflict" for payload in payloads[1:]]
        assert [r["status"] for r in by_key[key]] == expected, key
