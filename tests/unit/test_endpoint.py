"""The HTTP endpoint's process on real sockets (no broker): what it answers, what it closes
without an answer, and that it ends with the processor."""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import CollectorRegistry, Counter

from localkafka.clients import wait_for
from processor.endpoint import HEAD_TIMEOUT_S, MAX_HEAD_BYTES, STALE_S
from processor.server import EndpointServer
from tests.http import get


@pytest.fixture
def endpoint():
    registry = CollectorRegistry()
    Counter("things", "things counted", registry=registry).inc(3)
    state = {"problem": None, "ready": True}
    server = EndpointServer("127.0.0.1", 0, registry, lambda: state["problem"], lambda: state["ready"])
    yield server, state
    server.close()


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """What the endpoint answers to `data` (b"" if it closes without an answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def test_it_answers_metrics_health_and_readiness_from_the_latest_snapshot(endpoint):
    server, state = endpoint
    port = server.server_port
    status, body = get(port, "/metrics")
    assert status == 200 and "things_total 3.0" in body
    assert get(port, "/healthz") == (200, "ok\n") and get(port, "/readyz") == (200, "ok\n")
    assert get(port, "/metrics?name[]=things_total")[0] == 200
    assert get(port, "/nothing") == (404, "not found\n")
    state.update(problem="a record is stuck", ready=False)
    wait_for(lambda: get(port, "/healthz") == (503, "unhealthy: a record is stuck\n"), 5, "503")
    assert get(port, "/readyz") == (503, "not ready\n")
    assert raw(port, b"POST /healthz HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")


def test_slow_and_oversized_requests_are_closed_without_an_answer(endpoint):
    server, _ = endpoint
    began = time.monotonic()
    assert raw(server.server_port, b"GET /healthz HTTP/1.1\r\n") == b""  # never ends its head
    assert HEAD_TIMEOUT_S <= time.monotonic() - began < HEAD_TIMEOUT_S + 3
    assert raw(server.server_port, b"GET /healthz HTTP/1.1\r\nX: " + b"y" * MAX_HEAD_BYTES) == b""
    assert get(server.server_port, "/healthz")[0] == 200  # and it serves on


def test_a_processor_that_stops_reporting_fails_its_health(endpoint):
    server, _ = endpoint
    server._publish = lambda: None  # as when the processor's threads cannot run
    wait_for(lambda: get(server.server_port, "/healthz")[0] == 503, STALE_S + 5, "stale snapshot")
    status, body = get(server.server_port, "/healthz")
    assert body.startswith("unhealthy: the processor has not reported for ")
    assert get(server.server_port, "/readyz")[0] == 503


def test_the_endpoint_process_ends_with_the_processor_and_frees_the_port(endpoint):
    server, _ = endpoint
    server.close()  # as the processor's exit, even by kill -9, closes the pipe
    assert server.process.returncode == 0
    with socket.create_server(("127.0.0.1", server.server_port)):
        pass  # the port is free again
