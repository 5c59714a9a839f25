"""Format, start, stop and inspect a one-broker KRaft cluster bound to 127.0.0.1.

Two JVMs, as in production: a KRaft controller (node 1) and a broker (node 2). Keeping the
controller up while the broker is killed lets the controller fence the dead broker before a
new one starts; with a combined node, a restarted broker could start its transaction
coordinator on stale leadership and drop pending commit markers, leaving the last
stable offset stuck (seen with 4.4.0). The settings live in `<data_dir>/broker.json`; a
later `start` on the same data dir reuses them and refuses conflicting ones.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from localkafka.jars import LOG4J_CONFIG, ensure_jars, kafka_version
from localkafka.procs import HOST, free_port, pid_alive, port_open

READY_LINE = "Kafka Server started"
SESSION_TIMEOUT_MS = 3000
NODES = ("controller", "broker")
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"


class BrokerError(RuntimeError):
    """The local broker could not be started, stopped or reused as asked."""


@dataclass
class BrokerSettings:
    port: int
    controller_port: int
    version: str
    cluster_id: str
    pids: dict[str, int] = field(default_factory=dict)
    sasl_port: int | None = None  # a SASL_PLAINTEXT (SCRAM-SHA-512) listener, when users were given


class LocalBroker:
    def __init__(self, data_dir: str | Path, port: int | None = None,
                 controller_port: int | None = None, scram_users: dict[str, str] | None = None,
                 broker_properties: dict[str, str] | None = None, authorizer: bool = False):
        """`scram_users` (name -> password, set when the data dir is formatted) adds a
        SASL_PLAINTEXT listener with SCRAM-SHA-512 next to the PLAINTEXT one;
        `broker_properties` are added to (or replace) the broker's settings; `authorizer`
        turns ACLs on (both nodes): the PLAINTEXT listener's clients are super users, and a
        SCRAM user may do what no ACL denies it."""
        self.data_dir = Path(data_dir).resolve()
        self._asked = (port, controller_port)
        self.scram_users = scram_users or {}
        self.broker_properties = broker_properties or {}
        self.authorizer = authorizer
        self.ready_seconds: float | None = None

    # -- paths and state -------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.data_dir / "broker.json"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "broker.log"

    def properties(self, node: str) -> Path:
        return self.data_dir / f"{node}.properties"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.settings().port}"

    @property
    def sasl_bootstrap(self) -> str:
        port = self.settings().sasl_port
        if port is None:
            raise BrokerError(f"the broker in {self.data_dir} was formatted without SCRAM users")
        return f"{HOST}:{port}"

    def settings(self) -> BrokerSettings:
        if not self.state_file.exists():
            raise BrokerError(f"no broker was formatted in {self.data_dir}")
        return BrokerSettings(**json.loads(self.state_file.read_text()))

    def _save(self, settings: BrokerSettings) -> None:
        self.state_file.write_text(json.dumps(asdict(settings), indent=2))

    def node_running(self, node: str) -> bool:
        if not self.state_file.exists():
            return False
        pid = self.settings().pids.get(node, 0)
        return pid > 0 and pid_alive(pid) and self._is_our_node(pid, node)

    def running(self) -> bool:
        return all(self.node_running(node) for node in NODES)

    def _is_our_node(self, pid: int, node: str) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return False
        return "kafka.Kafka" in cmdline and str(self.properties(node)) in cmdline

    def status(self) -> dict:
        if not self.state_file.exists():
            return {"data_dir": str(self.data_dir), "state": "absent"}
        s = self.settings()
        return {"data_dir": str(self.data_dir), "state": "running" if self.running() else "stopped",
                "bootstrap": f"{HOST}:{s.port}", "version": s.version,
                "pids": {n: s.pids.get(n) for n in NODES if self.node_running(n)},
                "log": str(self.log_file)}

    # -- formatting ------------------------------------------------------------------------
    def _check_asked(self, s: BrokerSettings) -> None:
        port, cport = self._asked
        if (port and port != s.port) or (cport and cport != s.controller_port):
            raise BrokerError(
                f"{self.data_dir} holds a broker on port {s.port} (controller {s.controller_port}); "
                f"asked for {port} ({cport}): use another data dir or `stop` and delete it")

    def _prepare(self) -> BrokerSettings:
        if self.state_file.exists():
            s = self.settings()
            self._check_asked(s)
            if s.version != kafka_version():
                raise BrokerError(f"{self.data_dir} was formatted by Kafka {s.version}, "
                                  f"the pinned version is {kafka_version()}: delete the data dir")
            return s
        port, cport = self._asked
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _cluster_id()
        s = BrokerSettings(port=port or free_port(), controller_port=cport or free_port(),
                           version=kafka_version(), cluster_id=cluster_id,
                           sasl_port=free_port() if self.scram_users else None)
        self._write_properties(s)
        scram = [arg for name, password in self.scram_users.items()
                 for arg in ("-S", f"SCRAM-SHA-512=[name={name},password={password}]")]
        self._format("controller", s, "--standalone", *scram)
        self._format("broker", s, "--no-initial-controllers")
        self._save(s)
        return s

    def _write_properties(self, s: BrokerSettings) -> None:
        common = {
            "controller.quorum.bootstrap.servers": f"{HOST}:{s.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "broker.session.timeout.ms": str(SESSION_TIMEOUT_MS),
            "broker.heartbeat.interval.ms": "1000",
        }
        controller = {
            "process.roles": "controller",
            "node.id": "1",
            "listeners": f"CONTROLLER://{HOST}:{s.controller_port}",
            "log.dirs": str(self.data_dir / "controller-data"),
        }
        broker = {
            "process.roles": "broker",
            "node.id": "2",
            "listeners": f"PLAINTEXT://{HOST}:{s.port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{s.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir / "broker-data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            **self.broker_properties,
        }
        if s.sasl_port is not None:
            broker["listeners"] += f",SASL_PLAINTEXT://{HOST}:{s.sasl_port}"
            broker["advertised.listeners"] += f",SASL_PLAINTEXT://{HOST}:{s.sasl_port}"
            broker["sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
            broker["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;")
            common["listener.security.protocol.map"] += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
        if self.authorizer:  # the controller decides CreateTopics and CreateAcls in KRaft
            common.update({"authorizer.class.name": AUTHORIZER, "super.users": "User:ANONYMOUS",
                           "allow.everyone.if.no.acl.found": "true"})
        for node, props in (("controller", controller), ("broker", broker)):
            text = "".join(f"{k}={v}\n" for k, v in {**common, **props}.items())
            self.properties(node).write_text(text)

    def _java(self, node: str, main: str, *args: str, heap: str | None = None) -> list[str]:
        jvm = [f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", f"-Dkafka.logs.dir={self.log_dir}",
               f"-Dlocalkafka.node={node}", "-Djava.awt.headless=true"]
        if heap:
            jvm += [f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC"]
        return ["java", *jvm, "-cp", f"{ensure_jars()}/*", main, *args]

    def _format(self, node: str, s: BrokerSettings, mode: str, *extra: str) -> None:
        cmd = self._java(f"format-{node}", "kafka.tools.StorageTool", "format", mode,
                         "-t", s.cluster_id, "-c", str(self.properties(node)), *extra)
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise BrokerError(f"formatting the {node} in {self.data_dir} failed:\n"
                              f"{result.stdout}{result.stderr}")

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 90.0) -> str:
        """Start whatever is not running and return the bootstrap address once ready."""
        if self.state_file.exists():
            self._check_asked(self.settings())
        if self.running():
            return self.bootstrap
        began = time.monotonic()
        s = self._prepare()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.node_running("controller"):
            self._launch("controller", s, s.controller_port, "256m", began + timeout,
                         ready=lambda _offset: port_open(s.controller_port))
        if not self.node_running("broker"):
            self._launch("broker", s, s.port, "512m", began + timeout,
                         ready=lambda offset: port_open(s.port)
                         and self._logged_since(self.log_file, offset, READY_LINE))
        self.ready_seconds = time.monotonic() - began
        return self.bootstrap

    def _launch(self, node: str, s: BrokerSettings, port: int, heap: str, deadline: float,
                ready) -> None:
        if port_open(port):
            raise BrokerError(f"port {port} is taken by another process (a broker left from "
                              f"another run?); stop it or use other ports")
        log = self.log_dir / f"{node}.log"
        offset = log.stat().st_size if log.exists() else 0
        with open(self.log_dir / f"{node}.stdout", "ab") as out:
            proc = subprocess.Popen(
                self._java(node, "kafka.Kafka", str(self.properties(node)), heap=heap),
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        s.pids[node] = proc.pid
        self._save(s)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the {node} exited with {proc.returncode}; see {log}")
            if ready(offset):
                return
            time.sleep(0.1)
        self.stop()
        raise BrokerError(f"the {node} was not ready in time; see {log}")

    @staticmethod
    def _logged_since(log: Path, offset: int, needle: str) -> bool:
        try:
            with open(log, "rb") as f:
                f.seek(offset)
                return needle.encode() in f.read()
        except FileNotFoundError:
            return False

    def _signal(self, node: str, sig: int, timeout: float) -> bool:
        s = self.settings()
        pid = s.pids.get(node, 0)
        if pid <= 0 or not self.node_running(node):
            return True
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return True
        port = s.port if node == "broker" else s.controller_port
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid) and not port_open(port):
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown of the broker, then the controller; SIGKILL past `timeout`."""
        if not self.state_file.exists():
            return
        for node in NODES[::-1]:
            if not self._signal(node, signal.SIGTERM, timeout):
                self._signal(node, signal.SIGKILL, 10.0)

    def kill(self) -> None:
        """Hard crash of the broker (SIGKILL, as a power cut); the controller and data stay."""
        if self.state_file.exists():
            self._signal("broker", signal.SIGKILL, 10.0)

    def restart(self, hard: bool = False, timeout: float = 90.0) -> str:
        """Stop (or kill) the broker and start it again on the same data dir and ports."""
        if hard:
            self.kill()
            time.sleep(SESSION_TIMEOUT_MS / 1000 + 1)  # let the controller fence the dead broker
        elif not self._signal("broker", signal.SIGTERM, timeout):
            self.kill()
        return self.start(timeout)


def _cluster_id() -> str:
    """A random Kafka cluster id, never starting with "-" (the storage tool would take it
    for an option; Kafka's own Uuid.randomUuid() avoids those too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id
