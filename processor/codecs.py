"""Key and value codecs: bytes, string, json and Avro (fastavro, schemaless or Confluent framing).

A codec turns Kafka bytes into the value a transform sees and back. Any exception a codec
raises marks the record as poison (stage deserialize or serialize). `None` (a null key or a
tombstone) passes through every codec unchanged.
"""

from __future__ import annotations

import io
import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import fastavro
from fastavro.validation import ValidationError, validate

from processor import jsontext
from processor.config import CodecConfig

CONFLUENT_MAGIC = 0
_CONFLUENT_HEADER = struct.Struct(">bI")


class CodecError(ValueError):
    """Bytes that do not decode, or a value that does not encode, under the configured format."""


class SchemaError(Exception):
    """An Avro schema file that is missing or invalid."""


class Codec(Protocol):
    def decode(self, data: bytes | None) -> Any: ...
    def encode(self, value: Any) -> bytes | None: ...


class BytesCodec:
    def decode(self, data: bytes | None) -> bytes | None:
        return data

    def encode(self, value: Any) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        raise CodecError(f"format bytes needs bytes, got {type(value).__name__}")


class StringCodec:
    def decode(self, data: bytes | None) -> str | None:
        return None if data is None else data.decode("utf-8")

    def encode(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise CodecError(f"format string needs str, got {type(value).__name__}")
        return value.encode("utf-8")


class JsonCodec:
    def decode(self, data: bytes | None) -> Any:
        return None if data is None else jsontext.loads(data)

    def encode(self, value: Any) -> bytes | None:
        return None if value is None else jsontext.dumps(value)


class AvroCodec:
    """Avro binary, validated on encode; decoding must consume every byte."""

    def __init__(self, schema: dict, confluent_schema_id: int | None = None):
        self.schema = schema
        self.schema_id = confluent_schema_id
        self._prefix = (b"" if confluent_schema_id is None
                        else _CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, confluent_schema_id))

    def decode(self, data: bytes | None) -> Any:
        if data is None:
            return None
        if self._prefix:
            if len(data) < 5 or data[0] != CONFLUENT_MAGIC:
                raise CodecError("not in the Confluent wire format (no magic byte 0)")
            if data[:5] != self._prefix:
                schema_id = _CONFLUENT_HEADER.unpack_from(data)[1]
                raise CodecError(f"written with schema id {schema_id}, expected {self.schema_id}")
        buffer = io.BytesIO(data)
        buffer.seek(len(self._prefix))
        value = fastavro.schemaless_reader(buffer, self.schema, None)
        if buffer.tell() != len(data):
            raise CodecError(f"{len(data) - buffer.tell()} bytes left over after the Avro record: "
                             f"written with another schema?")
        return value

    def encode(self, value: Any) -> bytes | None:
        if value is None:
            return None
        try:
            validate(value, self.schema, raise_errors=True)
        except ValidationError as exc:
            raise CodecError("; ".join(map(str, exc.errors)) or "does not match the schema") from None
        buffer = io.BytesIO()
        buffer.write(self._prefix)
        fastavro.schemaless_writer(buffer, self.schema, value, strict=True)
        return buffer.getvalue()


@lru_cache(maxsize=None)
def load_schema(path: Path) -> dict:
    """Parse an .avsc file once per path."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SchemaError(f"schema file not found: {path}") from None
    except OSError as exc:
        raise SchemaError(f"cannot read schema file {path}: {exc.strerror}") from None
    try:
        return fastavro.parse_schema(json.loads(text))
    except json.JSONDecodeError as exc:
        raise SchemaError(f"{path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    except Exception as exc:  # fastavro raises several types for a bad schema
        raise SchemaError(f"{path} is not a valid Avro schema: {type(exc).__name__}: {exc}") from None


def build_codec(config: CodecConfig) -> Codec:
    if config.format == "avro":
        assert config.schema_path is not None  # enforced by CodecConfig
        schema_id = config.schema_id if config.wire_format == "confluent" else None
        return AvroCodec(load_schema(config.schema_path), schema_id)
    return {"bytes": BytesCodec, "string": StringCodec, "json": JsonCodec}[config.format]()
