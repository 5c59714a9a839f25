"""How store keys and values become bytes, in the local database and in the changelog alike.

A key is tagged with its type, so that `1`, `"1"` and `b"1"` are three keys. A value is its
expiry (ms since the epoch, 0 for never: 8 bytes, so that a TTL can be set later without a
migration), a tag, and its bytes or its JSON.
"""

from __future__ import annotations

import struct

from processor import jsontext

Key = str | bytes | int
_EXPIRY = struct.Struct(">q")
NEVER = 0
# an entry goes to the changelog as one record: key and value with the record's overhead must
# fit in the producer's message.max.bytes (librdkafka: 1,000,000), below the topic's limit
MAX_ENTRY_BYTES = 1_000_000 - 1_000


def encode_key(key: Key) -> bytes:
    if isinstance(key, str):
        return b"s" + key.encode("utf-8")
    if isinstance(key, bytes):
        return b"b" + key
    if isinstance(key, int) and not isinstance(key, bool):
        return b"i" + str(key).encode()
    raise TypeError(f"a store key is a str, bytes or int, not {type(key).__name__}")


def decode_key(data: bytes) -> Key:
    tag, raw = data[:1], data[1:]
    if tag == b"s":
        return raw.decode("utf-8")
    return raw if tag == b"b" else int(raw)


def encode_value(value, expires_at_ms: int) -> bytes:
    """Raises TypeError/ValueError for a value that is neither bytes nor JSON-serializable:
    the record fails, nothing of it is written."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = _EXPIRY.pack(expires_at_ms) + b"b" + bytes(value)
    else:
        data = _EXPIRY.pack(expires_at_ms) + b"j" + jsontext.dumps(value)
    return data


def expiry(data: bytes) -> int:
    return _EXPIRY.unpack_from(data)[0]


def decode_value(data: bytes):
    tag, raw = data[8:9], data[9:]
    return raw if tag == b"b" else jsontext.loads(raw)
