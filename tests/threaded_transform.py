"""A transform whose module starts a thread that is not a daemon and never ends (a client
library's background poller, say): the processor must still exit after a stop."""

from __future__ import annotations

import threading
import time


def _forever() -> None:
    while True:
        time.sleep(1)


threading.Thread(target=_forever, name="transform-poller").start()


def transform(record):
    return record.value
