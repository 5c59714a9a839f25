"""Exactly-once Kafka stream processor. What a transform needs:

    from processor import Record, Timer, Output, Poison, Transient, dependency
    from processor import Saga, Step, Command, Ended      # sagas (on state and timers)

Loaded on first use, so that `processor run` installs its signal handlers before the heavy
imports (see cli.py).
"""

from importlib import import_module

_HOMES = {"Output": "processor.transform", "Poison": "processor.transform",
          "Record": "processor.transform", "Timer": "processor.transform",
          "Transient": "processor.resilience", "dependency": "processor.resilience",
          "Saga": "processor.saga", "Step": "processor.saga", "Command": "processor.saga",
          "Ended": "processor.saga"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'processor' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
