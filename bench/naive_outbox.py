"""The naive outbox poller the relay is measured against: SELECT the oldest rows, produce
them, flush, DELETE them, until the table is empty. At least once (a crash between the
flush and the DELETE publishes again) and it skips nothing only because nothing writes
while it drains; the usual hand-written relay.

    python -m bench.naive_outbox BOOTSTRAP DSN TABLE BATCH
"""

from __future__ import annotations

import sys

import psycopg
from confluent_kafka import Producer


def main(bootstrap: str, dsn: str, table: str, batch: int) -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5})
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            rows = conn.execute(f"SELECT id::text, aggregatetype, aggregateid, type, payload::text FROM {table} "
                                "ORDER BY seq LIMIT %s", (batch,)).fetchall()
            if not rows:
                return 0
            for row_id, aggregatetype, aggregateid, kind, payload in rows:
                while True:
                    try:
                        producer.produce(f"outbox.{aggregatetype}", payload.encode(), aggregateid.encode(),
                                         headers=[("id", row_id.encode()), ("type", kind.encode())])
                        break
                    except BufferError:
                        producer.poll(0.1)
            if producer.flush(60) != 0:
                raise RuntimeError("records not delivered in 60 s")
            conn.execute(f"DELETE FROM {table} WHERE id = ANY(%s::uuid[])", ([row[0] for row in rows],))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
