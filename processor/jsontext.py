"""JSON as the standard library reads and writes it, at orjson's speed.

orjson parses and writes JSON several times faster than `json`, but differs at the edges:
it reads integers beyond 64 bits as floats (a silent loss of digits), rejects `NaN` and
lone surrogates, writes NaN and infinities as `null`, and refuses integers beyond 64 bits.
Those cases go to `json` instead, so every value reads and writes as `json` would have it
(compact separators, UTF-8, NaN refused on output).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_LONG_NUMBER = re.compile(rb"\d{20}")  # may not fit in 64 bits: orjson would round it
_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS \
    | orjson.OPT_PASSTHROUGH_SUBCLASS  # what `json` refuses, orjson must refuse too


def loads(data: bytes) -> Any:
    if _LONG_NUMBER.search(data) is None:
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
    if data is None or b"null" in data:  # a null may be a NaN or an infinity orjson let by
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")
    return data
