"""Idempotent order creation: one order per client idempotency key, however often it comes.

Clients send order requests (JSON `{customer_id, items: [{sku, qty}], amount_cents}`) with
their own `Idempotency-Key` header, keyed by that key (so its repeats reach the same
partition), and may send a request again: after a timeout, after their own crash. The first
request with a key creates the order (to `orders-created`, or $ORDERS_CREATED_TOPIC); a repeat with the same payload
gets the original order id back with status `duplicate`, a reuse of the key with another
payload gets `conflict` (to `order-responses`, one response per request). Keys are
remembered for the `requests` store's TTL (config/order-requests.yaml).
"""

from __future__ import annotations

import hashlib
import json
import os
import random

from processor import Output, Poison, Record

HEADER = "Idempotency-Key"
ORDERS_CREATED = os.environ.get("ORDERS_CREATED_TOPIC", "orders-created")


def transform(record: Record) -> list[Output]:
    key = dict(record.headers).get(HEADER)
    if not key:
        raise Poison(f"no {HEADER} header")
    key = key.decode("utf-8", "replace")
    request = record.value
    if not isinstance(request, dict) or not request.get("customer_id") or not request.get("items"):
        raise Poison("an order request needs customer_id and items")

    def create() -> dict:  # deterministic: a record processed again creates the same order
        order_id = "ord-" + hashlib.sha256(record.idempotency_key.encode()).hexdigest()[:16]
        return {"order_id": order_id, "customer_id": request["customer_id"], "items": request["items"],
                "amount_cents": request.get("amount_cents", 0), "idempotency_key": key}

    outcome = record.state("requests").once(key, request, create)
    response = {"idempotency_key": key, "status": outcome.status, "order_id": outcome.result["order_id"]}
    outputs = [Output(response)]  # to output.topic: order-responses
    if outcome.status == "created":
        outputs.append(Output(outcome.result, topic=ORDERS_CREATED))
    return outputs


def make_requests(keys: int, seed: int = 1, conflicts: float = 0.05) -> list[tuple[bytes, bytes, list]]:
    """(Kafka key, value, headers) of `keys` clients' requests, interleaved: each sent 1 to 3
    times, and a `conflicts` share of the keys then reused with another payload; a key's
    requests keep their order."""
    rng = random.Random(seed)
    timed = []
    for n in range(keys):
        key = f"idem-{n:06d}"
        request = {"customer_id": f"c-{rng.randrange(500):03d}", "amount_cents": rng.randrange(100, 90_000),
                   "items": [{"sku": f"sku-{rng.randrange(50)}", "qty": rng.randrange(1, 4)}]}
        payloads = [request] * rng.randint(1, 3)
        if rng.random() < conflicts:
            payloads.append({**request, "amount_cents": request["amount_cents"] + 1})
        at = rng.random()
        for payload in payloads:
            timed.append((at, key, payload))
            at += rng.random() * 0.1  # a retry comes a little later
    return [(key.encode(), json.dumps(payload).encode(), [(HEADER, key.encode())])
            for _, key, payload in sorted(timed)]
