"""Example transform: add tax and a risk band to each order; refuse orders that make no sense."""

from __future__ import annotations

from processor import Poison, Record

TAX_RATE_PERCENT = {"EUR": 20, "GBP": 20, "USD": 8}
HIGH_RISK_CENTS = 100_000


def transform(record: Record) -> dict:
    order = record.value
    if order["amount_cents"] <= 0:
        raise Poison(f"order {order['order_id']} has a non-positive amount {order['amount_cents']}")
    rate = TAX_RATE_PERCENT.get(order["currency"])
    if rate is None:
        raise Poison(f"order {order['order_id']}: no tax rate for currency {order['currency']!r}")
    tax = order["amount_cents"] * rate // 100
    return {
        **order,
        "tax_cents": tax,
        "total_cents": order["amount_cents"] + tax,
        "risk": "HIGH" if order["amount_cents"] >= HIGH_RISK_CENTS else "LOW",
        "source_offset": f"{record.topic}:{record.partition}:{record.offset}",
    }
