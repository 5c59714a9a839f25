"""A payment-gateway simulator on 127.0.0.1, with seeded faults and a ledger of charges.

POST /charge {"order_id", "amount_cents", "currency"} with an Idempotency-Key header charges
once per key: a replay of a key returns the first charge. Faults, drawn from a seeded RNG:
timeouts (no answer for `timeout_s`), 500/503, 429 with Retry-After, slow answers; `down()`
makes every request fail with 503 for a while. Used by the resilience tests and runnable
alone: `python -m examples.gateway --port 8080 --fault-rate 0.2`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Faults:
    rate: float = 0.0            # share of requests that fail (split evenly over the kinds)
    timeout_s: float = 3.0       # how long a "timeout" keeps the client waiting
    slow_rate: float = 0.0       # share of requests answered slowly (but successfully)
    slow_s: float = 0.3
    retry_after_s: float = 0.2


@dataclass
class Ledger:
    charges: dict[str, dict] = field(default_factory=dict)    # idempotency key -> charge
    requests: list[float] = field(default_factory=list)        # arrival times (monotonic)
    replays: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def orders_charged(self) -> list[str]:
        with self.lock:
            return [c["order_id"] for c in self.charges.values()]

    def max_requests_in(self, window_s: float) -> int:
        with self.lock:
            times = sorted(self.requests)
        best, start = 0, 0
        for end, t in enumerate(times):
            while t - times[start] > window_s:
                start += 1
            best = max(best, end - start + 1)
        return best


class _Server(ThreadingHTTPServer):
    """Callers that time out and go away are part of the simulation: no traceback for them."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Gateway:
    def __init__(self, faults: Faults | None = None, seed: int = 1, port: int = 0):
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.ledger = Ledger()
        self.down_until = 0.0
        self.server = _Server(("127.0.0.1", port), self._handler())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> Gateway:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def down(self, seconds: float) -> None:
        self.down_until = time.monotonic() + seconds

    def _draw(self) -> str:
        with self.ledger.lock:
            roll = self.rng.random()
        f = self.faults
        if time.monotonic() < self.down_until:
            return "503"
        if roll < f.rate:
            return ("timeout", "500", "503", "429")[int(roll / f.rate * 4)]
        if roll < f.rate + f.slow_rate:
            return "slow"
        return "ok"

    def charge(self, key: str, order: dict) -> dict:
        with self.ledger.lock:
            if key in self.ledger.charges:
                self.ledger.replays += 1
                return self.ledger.charges[key]
            charge = {"charge_id": f"ch_{len(self.ledger.charges) + 1:07d}", **order}
            self.ledger.charges[key] = charge
            return charge

    def _handler(self):
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                with gateway.ledger.lock:
                    gateway.ledger.requests.append(time.monotonic())
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                key = self.headers.get("Idempotency-Key")
                if self.path != "/charge" or not key:
                    return self._send(400, {"error": "POST /charge with an Idempotency-Key"})
                fate = gateway._draw()
                if fate != "ok" and fate != "slow":
                    with gateway.ledger.lock:
                        gateway.ledger.failed += 1
                if fate == "timeout":
                    time.sleep(gateway.faults.timeout_s)
                    return self._send(504, {"error": "timed out"})
                if fate in ("500", "503"):
                    return self._send(int(fate), {"error": "unavailable"})
                if fate == "429":
                    return self._send(429, {"error": "slow down"},
                                      {"Retry-After": str(gateway.faults.retry_after_s)})
                if fate == "slow":
                    time.sleep(gateway.faults.slow_s)
                self._send(200, gateway.charge(key, body))

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json",
                                    "Content-Length": str(len(data)), **(headers or {})}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="payment-gateway simulator")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    gateway = Gateway(Faults(rate=args.fault_rate), args.seed, args.port)
    print(f"payment gateway on {gateway.url}")
    gateway.server.serve_forever()


if __name__ == "__main__":
    main()
