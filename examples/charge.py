"""Example transform that calls a flaky service: charge each order at the payment gateway.

The call goes through the `payment-gateway` dependency (retries with backoff and jitter,
circuit breaker, bulkhead, rate limit, see config/charge.yaml) and carries the record's
idempotency key, so a replay after an abort or a crash never charges twice.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

from processor import Poison, Record, Transient, dependency

gateway = dependency("payment-gateway")
GATEWAY_URL = os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080")
TIMEOUT_S = float(os.environ.get("GATEWAY_TIMEOUT_S", "1.0"))


def _charge(order: dict, idempotency_key: str) -> dict:
    body = json.dumps({k: order[k] for k in ("order_id", "amount_cents", "currency")}).encode()
    request = urllib.request.Request(f"{GATEWAY_URL}/charge", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Idempotency-Key": idempotency_key})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 429 or exc.code >= 500:
            retry_after = exc.headers.get("Retry-After")
            raise Transient(f"gateway answered {exc.code}",
                            float(retry_after) if retry_after else None) from None
        raise Poison(f"gateway refused the charge: {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise Transient(f"gateway unreachable: {exc}") from None


def transform(record: Record) -> dict:
    order = record.value
    if order["amount_cents"] <= 0:
        raise Poison(f"order {order['order_id']} has a non-positive amount")
    charge = gateway.call(_charge, order, record.idempotency_key)
    return {"order_id": order["order_id"], "charge_id": charge["charge_id"],
            "amount_cents": order["amount_cents"], "currency": order["currency"]}
