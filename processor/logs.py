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
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class Redact(logging.Filter):
    """Replaces secret values in every log line: defence in depth for messages from libraries."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(secret in message for secret in self.secrets):
            record.msg, record.args = self._redacted(message), None
        if record.exc_info and not record.exc_text:  # a traceback's text names what failed, secrets too
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redacted(record.exc_text)
        return True

    def _redacted(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def setup_logging(level: str, fmt: str, app_id: str, secrets: list[str]) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if secrets:
        handler.addFilter(Redact(secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter(app_id))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s [{app_id}] %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
