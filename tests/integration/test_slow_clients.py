"""Thousands of slow clients on the HTTP endpoint (slowloris: connections that send a request
head a byte at a time and never finish it) neither slow the processing loop much nor keep
/healthz from answering, and leave no traceback behind."""

from __future__ import annotations

import socket
import sys
import threading
import time

import pytest

from examples.orders import make_samples
from localkafka import free_port
from localkafka.clients import wait_for
from tests.http import get

pytestmark = [pytest.mark.kafka, pytest.mark.serial]  # bounds on time: run alone
CONNECTIONS = 3000
WINDOW_S = 12.0
HOLD_S = 8
INPUTS = 300_000


class Slowloris:
    """Opens `CONNECTIONS` connections to the port, sends on each a header line a second
    for `HOLD_S` and never ends the request, then closes them all; again and again."""

    def __init__(self, port: int):
        self.port = port
        self.stop = threading.Event()
        self.opened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Slowloris:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(30)

    def _connect(self) -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        self.opened += 1
        return sock

    def _run(self) -> None:
        while not self.stop.is_set():
            socks = [self._connect() for _ in range(CONNECTIONS)]
            for n in range(HOLD_S):
                if self.stop.wait(1.0):
                    break
                for sock in socks:
                    try:
                        sock.send(b"GET /healthz HTTP/1.1\r\n" if n == 0 else b"X-%d: y\r\n" % n)
                    except OSError:  # not connected (yet), or closed by the server
                        pass
            for sock in socks:
                sock.close()


def rate(p, seconds: float) -> float:
    """Inputs committed per second over `seconds`."""
    start, began = p.committed_total(), time.monotonic()
    time.sleep(seconds)
    return (p.committed_total() - start) / (time.monotonic() - began)


def test_slow_clients_do_not_slow_the_loop_nor_block_healthz(pipe, processors):
    port = free_port()
    p = pipe(partitions=2, metrics_port=port, transform="tests.transforms:busy",
             output_value={"format": "json"})
    p.feed(make_samples(INPUTS, poison_per_kind=0.0, seed=44))
    proc = processors(p.config, "i1")
    wait_for(lambda: p.committed_total() > 5_000, 120, "processing under way")

    alone = rate(p, WINDOW_S)
    latencies: list[float] = []
    with Slowloris(port) as attack:
        wait_for(lambda: attack.opened >= CONNECTIONS, 30, "slow connections opened")
        began = time.monotonic()
        attacked_rate = [0.0]
        measure = threading.Thread(target=lambda: attacked_rate.__setitem__(0, rate(p, WINDOW_S)))
        measure.start()
        while measure.is_alive() or time.monotonic() - began < WINDOW_S:
            t = time.monotonic()
            status, body = get(port, "/healthz", timeout=10)
            latencies.append(time.monotonic() - t)
            assert status == 200, f"/healthz answered {status} {body!r} under attack"
            time.sleep(0.2)
        measure.join()
    assert p.committed_total() < INPUTS, "the inputs ran out: the rates are not comparable"
    worst = max(latencies)
    print(f"\n{CONNECTIONS} slow connections ({attack.opened} opened): loop {attacked_rate[0]:.0f}/s "
          f"vs {alone:.0f}/s alone (ratio {attacked_rate[0] / alone:.2f}); /healthz worst "
          f"{worst * 1000:.0f} ms over {len(latencies)} requests", file=sys.stderr)
    assert attacked_rate[0] >= 0.5 * alone
    assert worst < 2.0
    assert get(port, "/metrics")[0] == 200
    assert proc.terminate() == 0
    assert "Traceback" not in proc.log() and "BrokenPipe" not in proc.log()
