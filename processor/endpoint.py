"""The HTTP endpoint's own process: /metrics, /healthz and /readyz from the latest snapshot
the processor sent (server.py starts it with the listening socket and a pipe).

A scrape endpoint, not a web server, and apart from the processing loop: in the same
process, every socket call of a server thread waits for the GIL behind a busy loop (5 ms a
turn), so a few thousand connections made /healthz time out; and any number of clients
here costs the loop nothing but CPU on another core. One asyncio loop serves every
connection. Each must send its request head (at most `MAX_HEAD_BYTES`) within
`HEAD_TIMEOUT_S` and take the answer within `WRITE_TIMEOUT_S`; at most `MAX_CONNECTIONS` are
open, and a new one closes the oldest still waiting for its request. Clients that go away
are no error. A snapshot older than `STALE_S` makes /healthz fail (the processor is stuck
even for its own threads); the end of the pipe ends this process.

Usage (by server.py only): python -m processor.endpoint LISTEN_FD PIPE_FD
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import time

MAX_CONNECTIONS = 256
MAX_HEAD_BYTES = 8192
HEAD_TIMEOUT_S = 2.0
WRITE_TIMEOUT_S = 10.0
ACCEPT_BATCH = 32  # connections one turn of the loop accepts: well below MAX_CONNECTIONS
LISTEN_BACKLOG = 4096  # the kernel queues a burst rather than drop it (capped by somaxconn)
STALE_S = 10.0
FRAME = struct.Struct("!II")  # a snapshot: the lengths of its JSON state and of its metrics text
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def frame(problem: str | None, ready: bool, metrics: bytes, content_type: str) -> bytes:
    """A snapshot as the processor writes it to the pipe."""
    state = json.dumps({"problem": problem, "ready": ready, "content_type": content_type}).encode()
    return FRAME.pack(len(state), len(metrics)) + state + metrics


class Endpoint:
    def __init__(self) -> None:
        self.problem: str | None = "starting"
        self.ready = False
        self.metrics, self.content_type = b"", "text/plain"
        self.updated = time.monotonic()
        self.waiting: dict[asyncio.StreamWriter, None] = {}  # before their request, oldest first
        self.open = 0

    async def serve(self, listening: socket.socket, pipe_fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda loop, context: None)  # clients' errors are theirs
        server = await asyncio.start_server(self._connection, sock=listening, backlog=ACCEPT_BATCH,
                                            limit=MAX_HEAD_BYTES)
        listening.listen(LISTEN_BACKLOG)  # asyncio listens with its accept batch
        snapshots = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(snapshots),
                                     os.fdopen(pipe_fd, "rb", buffering=0))
        try:
            while True:
                state_len, metrics_len = FRAME.unpack(await snapshots.readexactly(FRAME.size))
                state = json.loads(await snapshots.readexactly(state_len))
                self.metrics = await snapshots.readexactly(metrics_len)
                self.problem, self.ready, self.content_type = state["problem"], state["ready"], state["content_type"]
                self.updated = time.monotonic()
        except asyncio.IncompleteReadError:  # the processor is gone
            server.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        if self.open > MAX_CONNECTIONS:
            if not self.waiting:  # all busy answering: this one waits for nobody
                self.open -= 1
                writer.transport.abort()
                return
            oldest = next(iter(self.waiting))
            del self.waiting[oldest]
            oldest.transport.abort()
        self.waiting[writer] = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            self.waiting.pop(writer, None)
            writer.write(self._answer(head))
            writer.close()  # once the answer is sent
            await asyncio.wait_for(writer.wait_closed(), WRITE_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()  # gone, too slow or too big: closed without an answer
        finally:
            self.waiting.pop(writer, None)
            self.open -= 1

    def _answer(self, head: bytes) -> bytes:
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        silent = time.monotonic() - self.updated
        stale = f"the processor has not reported for {silent:.0f}s" if silent > STALE_S else None
        content_type = "text/plain"
        if method != b"GET":
            status, body = 405, b"GET only\n"
        elif path == b"/metrics":
            status, body, content_type = 200, self.metrics, self.content_type
        elif path == b"/healthz":
            why = stale or self.problem
            status, body = (200, b"ok\n") if why is None else (503, f"unhealthy: {why}\n".encode())
        elif path == b"/readyz":
            ok = self.ready and stale is None
            status, body = (200, b"ok\n") if ok else (503, b"not ready\n")
        else:
            status, body = 404, b"not found\n"
        return (f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def main(listen_fd: int, pipe_fd: int) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):  # it ends with the pipe, after the processor
        signal.signal(signum, signal.SIG_IGN)
    listening = socket.socket(fileno=listen_fd)
    asyncio.run(Endpoint().serve(listening, pipe_fd))


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
