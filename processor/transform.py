"""The transform API: what a user's function receives (`Record`) and may return or raise."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Headers = list[tuple[str, bytes]]


class Poison(Exception):
    """Raised by a transform for an input it can never process: it goes to the dead-letter topic."""


@dataclass(slots=True, frozen=True)
class Record:
    key: Any
    value: Any
    headers: Headers
    topic: str
    partition: int
    offset: int
    timestamp: int | None
    idempotency_key: str


_INPUT_KEY: Any = object()  # sentinel: the output keeps the input record's key


@dataclass(slots=True)
class Output:
    """An output record; `topic` defaults to output.topic, `key` to the input key, `headers`
    to the input headers."""

    value: Any
    key: Any = _INPUT_KEY
    topic: str | None = None
    headers: Headers | None = field(default=None)

    @property
    def keeps_input_key(self) -> bool:
        return self.key is _INPUT_KEY


Transform = Callable[[Record], None | Any | Output | Iterable[Output]]


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
    except Exception as exc:  # the module itself fails at import time
        raise TransformLoadError(
            f"importing module {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    function = getattr(module, attr, None)
    if function is None:
        raise TransformLoadError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(function):
        raise TransformLoadError(f"{spec} is a {type(function).__name__}, not a callable")
    return function
