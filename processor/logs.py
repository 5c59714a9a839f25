"""Logging set-up: JSON lines (default) or text on stdout, librdkafka's logs included."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone

RECORD_FIELDS = ("topic", "partition", "offset")


class JsonFormatter(logging.Formatter):
    def __init__(self, app_id: str):
        super().__init__()
        self.app_id = app_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "app_id": self.app_id,
        }
        for name in RECORD_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: str, app_id: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(app_id))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{app_id}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
