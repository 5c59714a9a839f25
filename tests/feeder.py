"""Producing a test's input over time, so that processors work on a live stream."""

from __future__ import annotations

import threading
import time

from localkafka.clients import produce

FEED_CHUNK_SECONDS = 0.5


class Feeder(threading.Thread):
    """Produces the input: at once, or spread over `seconds` so faults land mid-stream
    however fast the processors are."""

    def __init__(self, bootstrap: str, topic: str, samples: list, seconds: float):
        super().__init__(name="feeder", daemon=True)
        self.bootstrap, self.topic, self.samples, self.seconds = bootstrap, topic, samples, seconds
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        if seconds <= 0:
            self.run()
        else:
            self.start()

    def run(self) -> None:
        chunks = max(1, int(self.seconds / FEED_CHUNK_SECONDS))
        size = -(-len(self.samples) // chunks)
        began = time.monotonic()
        try:
            for n, i in enumerate(range(0, len(self.samples), size)):
                produce(self.bootstrap, self.topic, [(s.key, s.value, getattr(s, "headers", None))
                                                     for s in self.samples[i:i + size]])
                pause = began + (n + 1) * self.seconds / chunks - time.monotonic()
                if self.stopping.wait(max(pause, 0)):  # pacing the load, not waiting on a race
                    return
        except BaseException as exc:  # noqa: BLE001 - raised by finish()
            self.error = exc

    def done(self) -> bool:
        return not self.is_alive()

    def stop(self) -> None:
        """Produce no more (what was produced stays)."""
        self.stopping.set()
        self.finish()

    def finish(self) -> None:
        if self.is_alive():
            self.join()
        if self.error is not None:
            raise self.error
