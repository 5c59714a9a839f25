"""`python -m localkafka {start|stop|kill|status|jars} [--data-dir D] [--port P]`."""

from __future__ import annotations

import argparse
import json
import sys

from localkafka.broker import BrokerError, LocalBroker
from localkafka.jars import ensure_jars, kafka_version

DEFAULT_DATA_DIR = ".kafka/default"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/kafka",
                                     description="A local Apache Kafka broker from Maven jars.")
    parser.add_argument("command", choices=["start", "stop", "kill", "status", "jars"])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                        help=f"broker state, data and logs (default {DEFAULT_DATA_DIR})")
    parser.add_argument("--port", type=int, help="client port (default: free, then kept)")
    parser.add_argument("--controller-port", type=int, help="KRaft controller port")
    args = parser.parse_args(argv)
    broker = LocalBroker(args.data_dir, args.port, args.controller_port)
    try:
        if args.command == "jars":
            print(f"Kafka {kafka_version()} jars in {ensure_jars(quiet=False)}")
        elif args.command == "start":
            was_running = broker.running()
            bootstrap = broker.start()
            how = "already running" if was_running else f"ready in {broker.ready_seconds:.1f}s"
            print(f"Kafka {kafka_version()} at {bootstrap} ({how}; log {broker.log_file})",
                  file=sys.stderr)
            print(bootstrap)
        elif args.command == "stop":
            broker.stop()
        elif args.command == "kill":
            broker.kill()
        else:
            print(json.dumps(broker.status(), indent=2))
    except (BrokerError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
