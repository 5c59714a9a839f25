"""The transform API: what a user's function receives (`Record`) and may return or raise."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

Headers = list[tuple[str, bytes]]
REPLAY_PREFIX = "__processor.replay."  # headers of a dead letter sent back (processor/dlq/replay.py)
_REPLAYED_KEY = REPLAY_PREFIX + "idempotency_key"


class Poison(Exception):
    """Raised by a transform for an input it can never process: it goes to the dead-letter topic."""


class Call:
    """What a transform may use in any call: the state and the timers of the call's partition."""

    __slots__ = ()
    _app_id = ""  # set by `of_app`: one argument less to pass per call
    _stores: Any = None  # the application's state stores (processor.state.Stores), if any
    partition: int
    key: Any

    @classmethod
    def of_app(cls, app_id: str, stores: Any = None):
        """The class of one application's calls (its id goes into idempotency keys)."""
        return type(cls.__name__, (cls,), {"__slots__": (), "_app_id": app_id, "_stores": stores})

    def state(self, name: str) -> Any:
        """The partition of store `name` that belongs to this call's partition:
        `get(key, default=None)`, `set(key, value)`, `delete(key)`, `key in store`."""
        return self._state().partition(name, self.partition)

    @property
    def timers(self) -> Any:
        """This partition's timers: `schedule(name, at_ms=|after_ms=, key=, payload=)`,
        `cancel(name, key=)`, `due_ms(name, key=)`; `key` defaults to this call's key."""
        return self._state().timers.of(self.partition, self.key)

    def _state(self) -> Any:
        if self._stores is None:
            from processor.state.stores import UnknownStore  # noqa: PLC0415 - state is optional
            raise UnknownStore("state and timers need a state section in the config")
        return self._stores


class Record(Call):
    """One input record as the transform sees it: `key` and `value` decoded; `headers`,
    `topic`, `partition`, `offset`, `timestamp` (ms or None) as consumed; and
    `idempotency_key`, the same for this record after any retry, abort, crash or rebalance,
    and after its dead letter is replayed.
    Fields other than key and value are read from the message only when asked for."""

    __slots__ = ("key", "value", "_msg")

    def __init__(self, key: Any, value: Any, msg: Message):
        self.key, self.value, self._msg = key, value, msg

    @property
    def headers(self) -> Headers:
        return self._msg.headers() or []

    @property
    def topic(self) -> str:
        return self._msg.topic()

    @property
    def partition(self) -> int:
        return self._msg.partition()

    @property
    def offset(self) -> int:
        return self._msg.offset()

    @property
    def timestamp(self) -> int | None:
        ts_type, ts = self._msg.timestamp()
        return None if ts_type == TIMESTAMP_NOT_AVAILABLE else ts

    @property
    def idempotency_key(self) -> str:
        """The first attempt's, for a dead letter sent back (`processor dlq replay`)."""
        msg = self._msg
        for name, value in msg.headers() or ():
            if name == _REPLAYED_KEY:
                return value.decode("utf-8", "replace")
        return f"{self._app_id}:{msg.topic()}:{msg.partition()}:{msg.offset()}"

    def __repr__(self) -> str:
        return (f"Record(topic={self.topic!r}, partition={self.partition}, offset={self.offset}, "
                f"key={self.key!r}, value={self.value!r})")


class Timer(Call):
    """A timer that came due, passed to the transform in place of a `Record` (tell them apart
    with `isinstance(call, Timer)` or `match call: case Timer(): ...`): `name`, `key` and
    `payload` as scheduled, `due_ms` (ms since the epoch), `partition`. It fires once: its
    removal commits with the outputs and state changes of this call."""

    __slots__ = ("name", "key", "payload", "due_ms", "partition")
    __match_args__ = ("name", "key", "payload")

    def __init__(self, name: str, key: Any, payload: Any, due_ms: int, partition: int):
        self.name, self.key, self.payload, self.due_ms, self.partition = name, key, payload, due_ms, partition

    @property
    def idempotency_key(self) -> str:
        return f"{self._app_id}:timer:{self.partition}:{self.name}:{self.key!r}:{self.due_ms}"

    def __repr__(self) -> str:
        return (f"Timer(name={self.name!r}, key={self.key!r}, due_ms={self.due_ms}, "
                f"partition={self.partition}, payload={self.payload!r})")


INPUT_KEY: Any = object()  # sentinel: the output keeps the input record's key


@dataclass(slots=True)
class Output:
    """An output record; `topic` defaults to output.topic, `key` to the input key, `headers`
    to the input headers."""

    value: Any
    key: Any = INPUT_KEY
    topic: str | None = None
    headers: Headers | None = field(default=None)



Transform = Callable[[Record | Timer], None | Any | Output | Iterable[Output]]


class TransformLoadError(Exception):
    """The `module:callable` of the config cannot be imported or is not callable."""


def load_transform(spec: str, search_path: Path | None = None) -> Transform:
    """Import `module:callable`; the working directory is importable, as with `python -m`."""
    module_name, _, attr = spec.partition(":")
    root = str(search_path or Path.cwd())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TransformLoadError(f"cannot import module {module_name!r}: {exc}") from None
    except BaseException as exc:  # the module itself fails (or exits) at import time
        raise TransformLoadError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, attr, None)
    if function is None:
        raise TransformLoadError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(function):
        raise TransformLoadError(f"{spec} is a {type(function).__name__}, not a callable")
    return function
