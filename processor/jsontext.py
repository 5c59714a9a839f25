"""JSON as the standard library reads and writes it, at orjson's speed.

orjson parses and writes JSON several times faster than `json`, but differs at the edges:
it reads integers beyond 64 bits as floats (a silent loss of digits), rejects `NaN` and
lone surrogates, writes NaN and infinities as `null`, and refuses integers beyond 64 bits.
Those cases go to `json` instead, so every value reads and writes as `json` would have it
(compact separators, UTF-8, NaN refused on output).
"""

from __future__ import annotations

import json
from typing import Any

import orjson

# digits to "9", all else to " ": 20 nines in a row are a number that may not fit in 64 bits
_DIGITS = bytes(0x39 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_NUMBER = b"9" * 20
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS \
    | orjson.OPT_PASSTHROUGH_SUBCLASS  # what `json` refuses, orjson must refuse too


def loads(data: bytes) -> Any:
    if _LONG_NUMBER not in data.translate(_DIGITS):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NaN, a lone surrogate, or not JSON at all: `json` decides
    return json.loads(data)


def dumps(value: Any) -> bytes:
    """Raises TypeError or ValueError for what `json.dumps(allow_nan=False)` refuses."""
    try:
        data = orjson.dumps(value, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits, a subclass: `json` decides
        data = None
    if data is None or (b"null" in data and _not_finite(value)):  # orjson wrote NaN as null
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    return data


def _not_finite(value: Any) -> bool:
    """Whether a NaN or an infinity is in `value`, keys included (a loop: no call per item)."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is float:
            if item - item != 0.0:  # NaN - NaN and inf - inf are NaN
                return True
        elif kind is dict:
            stack.extend(item)
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
    return False
