"""Format, start, stop and inspect one KRaft broker+controller bound to 127.0.0.1.

The broker's settings live in `<data_dir>/broker.json`; a later `start` on the same data dir
reuses them (so a restart keeps its ports and data) and refuses conflicting ones.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from localkafka.jars import LOG4J_CONFIG, ensure_jars, kafka_version

HOST = "127.0.0.1"
READY_LINE = "Kafka Server started"


class BrokerError(RuntimeError):
    """The local broker could not be started, stopped or reused as asked."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def pid_alive(pid: int) -> bool:
    """True while any thread of `pid` lives; reaps it when it is our own exited child."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        states = [Path(f"/proc/{pid}/task/{t}/stat").read_text().rsplit(")", 1)[1].split()[0]
                  for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return False
    return any(state != "Z" for state in states)


@dataclass
class BrokerSettings:
    port: int
    controller_port: int
    version: str
    cluster_id: str
    pid: int = 0


class LocalBroker:
    def __init__(self, data_dir: str | Path, port: int | None = None,
                 controller_port: int | None = None, heap: str = "512m"):
        self.data_dir = Path(data_dir).resolve()
        self.heap = heap
        self._asked = (port, controller_port)
        self.ready_seconds: float | None = None

    # -- paths -----------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.settings().port}"

    # -- state -----------------------------------------------------------------------------
    def settings(self) -> BrokerSettings:
        if not self.state_file.exists():
            raise BrokerError(f"no broker was formatted in {self.data_dir}")
        return BrokerSettings(**json.loads(self.state_file.read_text()))

    def _save(self, settings: BrokerSettings) -> None:
        self.state_file.write_text(json.dumps(asdict(settings), indent=2))

    def running(self) -> bool:
        if not self.state_file.exists():
            return False
        pid = self.settings().pid
        return pid > 0 and pid_alive(pid) and self._is_our_broker(pid)

    def _is_our_broker(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return "kafka.Kafka" in cmdline and str(self.properties_file) in cmdline

    def status(self) -> dict:
        if not self.state_file.exists():
            return {"data_dir": str(self.data_dir), "state": "absent"}
        s = self.settings()
        state = "running" if self.running() else "stopped"
        return {"data_dir": str(self.data_dir), "state": state, "bootstrap": f"{HOST}:{s.port}",
                "pid": s.pid if state == "running" else None, "version": s.version,
                "log": str(self.log_file)}

    # -- lifecycle -------------------------------------------------------------------------
    def _check_asked(self, s: BrokerSettings) -> None:
        port, cport = self._asked
        if (port and port != s.port) or (cport and cport != s.controller_port):
            raise BrokerError(
                f"{self.data_dir} holds a broker on port {s.port} (controller {s.controller_port}); "
                f"asked for {port} ({cport}): use another data dir or `stop` and delete it")

    def _prepare(self) -> BrokerSettings:
        port, cport = self._asked
        if self.state_file.exists():
            s = self.settings()
            self._check_asked(s)
            if s.version != kafka_version():
                raise BrokerError(f"{self.data_dir} was formatted by Kafka {s.version}, "
                                  f"the pinned version is {kafka_version()}: delete the data dir")
            return s
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        s = BrokerSettings(port=port or free_port(), controller_port=cport or free_port(),
                           version=kafka_version(), cluster_id=cluster_id)
        self._write_properties(s)
        self._format(s)
        self._save(s)
        return s

    def _write_properties(self, s: BrokerSettings) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{HOST}:{s.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{s.port},CONTROLLER://{HOST}:{s.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{s.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir / "kraft"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # a restarted node re-registers once its old session expired: keep that short
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "1000",
        }
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _java(self, main: str, *args: str, jvm: tuple[str, ...] = ()) -> list[str]:
        return ["java", *jvm, "-cp", f"{ensure_jars()}/*", main, *args]

    def _format(self, s: BrokerSettings) -> None:
        cmd = self._java("kafka.tools.StorageTool", "format", "--standalone", "-t", s.cluster_id,
                         "-c", str(self.properties_file),
                         jvm=(f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                              f"-Dkafka.logs.dir={self.log_dir}"))
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerError(f"formatting {self.data_dir} failed:\n{result.stdout}{result.stderr}")

    def start(self, timeout: float = 90.0) -> str:
        """Start (or find running) the broker and return its bootstrap address."""
        if self.running():
            self._check_asked(self.settings())
            return self.bootstrap
        s = self._prepare()
        for port in (s.port, s.controller_port):
            if port_open(port):
                raise BrokerError(f"port {port} is taken by another process (a broker left from "
                                  f"another run?); stop it or use other ports")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        jvm = (f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
               f"-Dkafka.logs.dir={self.log_dir}", f"-Dlog4j2.configurationFile={LOG4J_CONFIG}")
        began = time.monotonic()
        with open(self.log_dir / "stdout.log", "ab") as out:
            proc = subprocess.Popen(self._java("kafka.Kafka", str(self.properties_file), jvm=jvm),
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        s.pid = proc.pid
        self._save(s)
        deadline = began + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the broker exited with {proc.returncode}; see {self.log_file}")
            if port_open(s.port) and self._logged_since(log_offset, READY_LINE):
                self.ready_seconds = time.monotonic() - began
                return self.bootstrap
            time.sleep(0.1)
        self.kill()
        raise BrokerError(f"the broker was not ready within {timeout:.0f}s; see {self.log_file}")

    def _logged_since(self, offset: int, needle: str) -> bool:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return needle.encode() in f.read()
        except FileNotFoundError:
            return False

    def _signal_and_wait(self, sig: int, timeout: float) -> bool:
        pid = self.settings().pid
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        s = self.settings()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid) and not port_open(s.port) and not port_open(s.controller_port):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown; SIGKILL if it does not finish within `timeout`."""
        if self.running() and not self._signal_and_wait(signal.SIGTERM, timeout):
            self.kill()

    def kill(self) -> None:
        """Hard crash (SIGKILL), as a power cut would: the data dir is kept."""
        if self.state_file.exists() and self.settings().pid > 0:
            self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self, hard: bool = False, timeout: float = 90.0) -> str:
        self.kill() if hard else self.stop()
        return self.start(timeout)
