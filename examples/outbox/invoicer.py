"""Invoicing: one invoice per placed order, from the order events the outbox relay publishes.

Each event carries the outbox row's id (header `id`); `store.once` keyed by it makes the
invoice once even if an event came twice (a relay run from a lost progress topic, a replay
by hand), so the path from the database to `invoices` is exactly once end to end.
"""

from __future__ import annotations

from processor import Output, Poison, Record


def transform(record: Record) -> list[Output]:
    event_id = dict(record.headers).get("id")
    if not event_id:
        raise Poison("an outbox event without its id header")
    event = record.value
    if dict(record.headers).get("type") != b"OrderPlaced":
        return []

    def create() -> dict:
        return {"invoice_id": f"inv-{event['order_id']}", "order_id": event["order_id"],
                "customer_id": event["customer_id"], "amount_cents": event["amount_cents"]}

    outcome = record.state("events").once(event_id.decode(), event, create)
    return [Output(outcome.result)] if outcome.status == "created" else []
