"""Exactly-once Kafka stream processor. What a transform needs:

    from processor import Record, Output, Poison, Transient, dependency

Loaded on first use, so that `processor run` installs its signal handlers before the heavy
imports (see cli.py).
"""

from importlib import import_module

_HOMES = {"Output": "processor.transform", "Poison": "processor.transform",
          "Record": "processor.transform", "Transient": "processor.resilience",
          "dependency": "processor.resilience"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'processor' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
