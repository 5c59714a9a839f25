"""Secrets never reach a log line: the message, its arguments and a traceback, in both formats."""

from __future__ import annotations

import io
import json
import logging

import pytest

from processor.logs import JsonFormatter, Redact


@pytest.mark.parametrize("formatter", [JsonFormatter("app"), logging.Formatter("%(message)s")])
def test_secrets_are_replaced_in_messages_arguments_and_tracebacks(formatter):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(Redact(["s3cret", "hunter2"]))
    handler.setFormatter(formatter)
    log = logging.getLogger("test.redact")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("connecting with s3cret")
        log.warning("the DSN is %s", "postgresql://u:hunter2@db/x")
        try:
            raise ValueError("password authentication failed for hunter2")
        except ValueError:
            log.exception("failed")
        log.warning("nothing to hide")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "s3cret" not in text and "hunter2" not in text, text
    assert text.count("***") >= 3 and "nothing to hide" in text
    if isinstance(formatter, JsonFormatter):
        lines = [json.loads(line) for line in text.splitlines()]
        assert lines[1]["message"] == "the DSN is postgresql://u:***@db/x"
        assert "ValueError: password authentication failed for ***" in lines[2]["exception"]
