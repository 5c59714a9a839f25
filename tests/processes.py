"""Run `processor run` as a real child process on a config written for one test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from localkafka.clients import wait_for

ROOT = Path(__file__).resolve().parent.parent


def write_config(path: Path, bootstrap: str, *, input_topic: str, output_topic: str,
                 dead_letter_topic: str, app_id: str, transform: str = "examples.enrich:transform",
                 processing: dict | None = None,
                 metrics_port: int | None = None, unreachable_timeout_ms: int = 120_000,
                 kafka: dict | None = None, output_value: dict | None = None,
                 input_codec: dict | None = None, resilience: dict | None = None,
                 state: dict | None = None) -> Path:
    """A config as users write it: the group settings are the shipped defaults."""
    def codec(schema: str) -> dict:
        return {"format": "avro", "schema": str(ROOT / "schemas" / schema)}

    config = {
        "app_id": app_id,
        "kafka": {"bootstrap_servers": bootstrap,
                  "unreachable_timeout_ms": unreachable_timeout_ms, **(kafka or {})},
        "input": {"topics": [input_topic], **(input_codec or {"key": {"format": "string"},
                                                              "value": codec("order.avsc")})},
        "output": {"topic": output_topic, "key": {"format": "string"},
                   "value": output_value or codec("order_enriched.avsc")},
        "dead_letter": {"topic": dead_letter_topic},
        "transform": transform,
        "processing": processing or {},
        "resilience": resilience or {},
        **({"state": state} if state else {}),
        "metrics": ({"enabled": False} if metrics_port is None
                    else {"host": "127.0.0.1", "port": metrics_port}),
        "logging": {"level": "INFO", "format": "json"},
    }
    path.write_text(yaml.safe_dump(config))
    return path


class ProcessorProcess:
    """One `processor run` child; its output goes to a log file the test can read."""

    def __init__(self, config: Path, instance_id: str, log_path: Path, env: dict | None = None,
                 command: str = "run"):
        """`command`: `run`, or `outbox` for the outbox relay."""
        self.config, self.instance_id, self.log_path = config, instance_id, log_path
        self.command = command
        self.env = {**os.environ, "PROCESSOR__INSTANCE_ID": instance_id, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> ProcessorProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "processor", self.command, "-c", str(self.config)],
                                         cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, once the process can take it: its handlers are in place before it logs
        anything (in the first ~0.1 s of Python's start-up, SIGTERM simply kills)."""
        wait_for(lambda: not self.running() or self.log_path.stat().st_size > 0, 60,
                 "the processor's first log line")
        if self.running():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.running():
            self.proc.kill()
            self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_lines(self) -> list[dict]:
        """The JSON log lines (librdkafka's own stderr lines and tracebacks left out)."""
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def errors(self, logger: str = "processor") -> list[str]:
        """Its own ERROR lines (`processor.outbox` for the relay's)."""
        return [line["message"] for line in self.log_lines()
                if line["level"] == "ERROR" and line["logger"] == logger]

    def held_partitions(self) -> set[str]:
        """The partitions (`topic[n]`) it holds, or held when asked to stop, from its log."""
        held: set[str] = set()
        for line in self.log_lines():
            if line["message"].startswith("stop requested"):
                break
            kind, _, names = line["message"].partition(" ")
            if kind in ("assigned", "revoked", "lost") and line["logger"] == "processor.engine":
                parts = set(names.split(", ")) - {"nothing"}
                held = held | parts if kind == "assigned" else held - parts
        return held
