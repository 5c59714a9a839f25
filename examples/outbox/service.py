"""The order service: an order and its "placed" event in one database transaction.

The event goes to the outbox table (aggregate type `order`, the order id as aggregate id),
never straight to Kafka: if the transaction rolls back, there is no event; if it commits,
the relay publishes it, once. The order row is written first: it locks the aggregate, so
events of one order are published in the order their transactions commit (docs/outbox.md).
"""

from __future__ import annotations

import json
import uuid

import psycopg

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id          text PRIMARY KEY,
    customer_id text NOT NULL,
    amount_cents bigint NOT NULL,
    placed_at   timestamptz NOT NULL DEFAULT now()
)"""


class Declined(Exception):
    """The order is refused inside its transaction: neither the order nor its event remain."""


def place_order(conn: psycopg.Connection, order_id: str, customer_id: str, amount_cents: int,
                declined: bool = False) -> None:
    """`conn` in autocommit mode; the transaction is this function's."""
    with conn.transaction():
        conn.execute("INSERT INTO orders (id, customer_id, amount_cents) VALUES (%s, %s, %s)",
                     (order_id, customer_id, amount_cents))
        event = {"order_id": order_id, "customer_id": customer_id, "amount_cents": amount_cents}
        conn.execute("INSERT INTO outbox (id, aggregatetype, aggregateid, type, payload) "
                     "VALUES (%s, 'order', %s, 'OrderPlaced', %s)",
                     (uuid.uuid4(), order_id, json.dumps(event)))
        if declined:  # a check that fails after the writes: the transaction rolls back
            raise Declined(order_id)
