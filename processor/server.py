"""HTTP endpoints for Prometheus and orchestrators: /metrics, /healthz, /readyz.

Served by a process of their own (endpoint.py), so that no number of clients can slow the
processing loop or starve the endpoint of the GIL. This side binds the port (so that a port
taken is this process's error), starts that process with the socket, and sends it a
snapshot of the metrics and health every `PUBLISH_S`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from processor.endpoint import frame

log = logging.getLogger("processor.server")
PUBLISH_S = 0.5


class EndpointServer:
    """Serves from construction on; port 0 picks a free port (`server_port`). `/healthz` is
    503 with the reason while `problem()` names one."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry,
                 problem: Callable[[], str | None], ready: Callable[[], bool]):
        self.registry, self.problem, self.ready = registry, problem, ready
        listening = socket.create_server((host, port))  # a port taken raises OSError here
        self.server_port = listening.getsockname()[1]
        read_end, write_end = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "processor.endpoint", str(listening.fileno()), str(read_end)],
            pass_fds=(listening.fileno(), read_end), stdin=subprocess.DEVNULL)
        os.close(read_end)
        listening.close()
        self.pipe = open(write_end, "wb")  # noqa: SIM115 - open for the life of the process
        self._publish()
        threading.Thread(target=self._keep_publishing, name="metrics-publisher", daemon=True).start()

    def _publish(self) -> None:
        self.pipe.write(frame(self.problem(), self.ready(), generate_latest(self.registry),
                              CONTENT_TYPE_LATEST))
        self.pipe.flush()

    def _keep_publishing(self) -> None:
        while True:
            time.sleep(PUBLISH_S)
            try:
                self._publish()
            except (OSError, ValueError):  # the endpoint process ended, or close() was called
                if self.pipe.closed:
                    return
                break
        log.error("stopping: the HTTP endpoint process ended (exit code %s)", self.process.wait())
        logging.shutdown()
        os._exit(1)

    def close(self) -> None:
        """End the endpoint process (it ends with the pipe) and wait for it."""
        self.pipe.close()
        self.process.wait(10)
