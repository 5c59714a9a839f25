"""The idempotent order creation example, end to end: a local Kafka, client requests with
retries and conflicts, the processor with config/order-requests.yaml, a summary.

Run it with `.venv/bin/python -m examples.order_requests_demo [--keys N]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from examples.demo import ROOT, demo_broker, run_until_committed, verdict
from examples.order_requests import make_requests
from localkafka.clients import create_topics, produce, read_all

CONFIG = ROOT / "config" / "order-requests.yaml"
TOPICS = ["order-requests", "order-responses", "orders-created", "order-requests-dlq"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=2000, help="clients' idempotency keys")
    args = parser.parse_args()
    with demo_broker("order-requests-demo-") as (workdir, bootstrap):
        create_topics(bootstrap, TOPICS, partitions=3)
        requests = make_requests(args.keys)
        produce(bootstrap, "order-requests", requests)
        keys = {key for key, _, _ in requests}
        print(f"fed {len(requests)} requests for {len(keys)} idempotency keys (repeats and conflicts mixed in)")
        code = run_until_committed(CONFIG, bootstrap, "order-requests", "order-requests", workdir,
                                   {"STATE_DIR": str(workdir / "state")})
        created = [json.loads(r.value) for r in read_all(bootstrap, "orders-created")]
        statuses = Counter(json.loads(r.value)["status"] for r in read_all(bootstrap, "order-responses"))
        print(f"read_committed: {len(created)} orders created for {len(keys)} keys; "
              f"responses {dict(sorted(statuses.items()))} for {len(requests)} requests")
        return verdict(code == 0 and len(created) == len(keys) and sum(statuses.values()) == len(requests),
                       "one order per key, one response per request")


if __name__ == "__main__":
    sys.exit(main())
