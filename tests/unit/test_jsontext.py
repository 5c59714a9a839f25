"""Fast JSON reads and writes every value as the standard library does."""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import IntEnum

import pytest

from processor import jsontext


class Level(IntEnum):
    HIGH = 2


@pytest.mark.parametrize("text", [
    b'{"a":1,"b":[1.5,null,true],"c":"\xc3\xa9"}', b"123456789012345678901234567890",
    b'{"id":-98765432109876543210}', b"NaN", b'{"a":1e400}', b'"\\ud800"', b"-0", b"1e16"])
def test_reads_what_json_reads_as_json_reads_it(text):
    ours, theirs = jsontext.loads(text), json.loads(text)
    assert repr(ours) == repr(theirs) and type(ours) is type(theirs)


@pytest.mark.parametrize("text", [b"", b"{", b"[1,]", b"\xff"])
def test_refuses_what_json_refuses(text):
    with pytest.raises(ValueError):
        jsontext.loads(text)


@pytest.mark.parametrize("value", [
    {"a": 1, "b": [1.5, None, True], "c": "é"}, {"a": None, 1.5: [None]}, 2**70, {1: 2, None: 3}, (1, 2), Level.HIGH, "x" * 3])
def test_writes_what_json_writes(value):
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert json.loads(jsontext.dumps(value)) == json.loads(expected)


@pytest.mark.parametrize("value", [math.nan, {"x": [math.inf], "y": None}, {math.nan: 1}, (None, -math.inf),
                                   datetime(2026, 1, 1), object(), {1, 2}])
def test_refuses_what_json_refuses_to_write(value):
    with pytest.raises((TypeError, ValueError)):
        jsontext.dumps(value)
