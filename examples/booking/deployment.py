"""The booking deployment on one broker: the topics, the orchestrator and the three services
as `processor run` children, bookings in, results out. Used by the demo, the chaos run and
the benchmark."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from examples.booking import REQUESTS, RESULTS, STEPS, TOPICS
from localkafka import free_port
from localkafka.clients import create_topics, produce, read_all

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("orchestrator", *STEPS)
DEAD_LETTERS = "booking-dlq"


def bookings(count: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    """`count` booking requests as (key, value), keyed by booking id."""
    rng = random.Random(seed)
    requests = []
    for i in range(count):
        booking_id = f"b-{seed}-{i:07d}"
        request = {"booking_id": booking_id, "hotel": f"hotel-{rng.randrange(50)}",
                   "flight": f"LH{rng.randrange(100, 999)}", "car": rng.choice(["compact", "van", "suv"])}
        requests.append((booking_id.encode(), json.dumps(request).encode()))
    return requests


class Deployment:
    """`faults`: BOOKING_* settings (see examples/booking/__init__.py) for every process."""

    def __init__(self, bootstrap: str, workdir: Path, faults: dict[str, str] | None = None,
                 partitions: int = 3):
        self.bootstrap, self.workdir, self.faults = bootstrap, workdir, faults or {}
        self.partitions = partitions
        self.procs: dict[str, subprocess.Popen] = {}
        self.metrics_ports: dict[str, int] = {}

    def create_topics(self) -> None:
        create_topics(self.bootstrap, [*TOPICS, DEAD_LETTERS], partitions=self.partitions)

    def start(self, role: str) -> None:
        """Start `role` (again: the same instance id, so it fences what is left of the last)."""
        config = "booking-orchestrator.yaml" if role == "orchestrator" else "booking-service.yaml"
        self.metrics_ports[role] = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP": self.bootstrap, "METRICS_PORT": str(self.metrics_ports[role]),
               "STATE_DIR": str(self.workdir / "state" / role), "BOOKING_SERVICE": role,
               "PROCESSOR__INSTANCE_ID": "i1", **self.faults}
        with open(self.workdir / f"{role}.log", "ab") as log:
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", "processor", "run", "-c", str(ROOT / "config" / config)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def start_all(self) -> None:
        for role in ROLES:
            self.start(role)

    def kill(self, role: str) -> None:
        proc = self.procs.pop(role)
        proc.kill()
        proc.wait(10)

    def exited(self) -> dict[str, int]:
        """Processes that ended by themselves, with their exit codes."""
        return {role: proc.returncode for role, proc in self.procs.items() if proc.poll() is not None}

    def stop_all(self, timeout: float = 60) -> dict[str, int]:
        """SIGTERM to every process; their exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = {role: proc.wait(timeout) for role, proc in self.procs.items()}
        self.procs.clear()
        return codes

    def dump_stacks(self) -> None:
        """Every process writes its threads' stacks to its log (SIGUSR1)."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGUSR1)

    def feed(self, requests: list[tuple[bytes, bytes]]) -> None:
        produce(self.bootstrap, REQUESTS, requests)

    def results(self) -> int:
        return len(read_all(self.bootstrap, RESULTS, timeout=30))

    def log_tail(self, role: str, lines: int = 5) -> str:
        return "\n".join((self.workdir / f"{role}.log").read_text(errors="replace").splitlines()[-lines:])
