"""Codecs round-trip what they should and refuse what they must."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from examples.orders import REFUND, SCHEMAS, _avro
from processor.codecs import AvroCodec, BytesCodec, CodecError, JsonCodec, StringCodec, load_schema

ORDER = load_schema(SCHEMAS / "order.avsc")
AN_ORDER = {"order_id": "o-1", "customer_id": "c-1", "amount_cents": 1250, "currency": "EUR",
            "created_at": 1_790_000_000_000}


@pytest.mark.parametrize("codec, value", [
    (BytesCodec(), b"\x00\xff"), (StringCodec(), "zürich"), (JsonCodec(), {"a": [1, 2.5, None]}),
    (AvroCodec(ORDER), AN_ORDER), (AvroCodec(ORDER, confluent_schema_id=42), AN_ORDER),
])
def test_round_trip_and_none_passes_through(codec, value):
    data = codec.encode(value)
    decoded = codec.decode(data)
    if isinstance(codec, AvroCodec):  # timestamp-millis comes back as an aware datetime
        assert decoded["created_at"] == datetime.fromtimestamp(value["created_at"] / 1000, timezone.utc)
        decoded = {**decoded, "created_at": value["created_at"]}
    assert decoded == value and codec.encode(decoded) == data
    assert codec.encode(None) is None and codec.decode(None) is None


def test_round_trips_are_byte_exact():
    assert StringCodec().encode("zürich") == "zürich".encode()
    assert JsonCodec().decode(b'{"a": 1}') == {"a": 1}
    assert AvroCodec(ORDER, confluent_schema_id=42).encode(AN_ORDER)[5:] == AvroCodec(ORDER).encode(AN_ORDER)


@pytest.mark.parametrize("codec, data, error, message", [
    (StringCodec(), b"\xff\xfe", UnicodeDecodeError, "can't decode byte 0xff"),
    (JsonCodec(), b"{not json", ValueError, "Expecting property name"),
    (AvroCodec(ORDER), b"\xff\xfe not avro", EOFError, "Expected -270272 bytes"),
    (AvroCodec(ORDER), _avro(REFUND, {"refund_id": 2**40, "approved": True, "ratio": 0.5}),
     EOFError, "Expected 1099511627776 bytes"),
    (AvroCodec(ORDER), AvroCodec(ORDER).encode(AN_ORDER) + b"\x00", CodecError,
     "1 bytes left over after the Avro record"),
    (AvroCodec(ORDER, confluent_schema_id=42), AvroCodec(ORDER).encode(AN_ORDER), CodecError,
     "not in the Confluent wire format"),
    (AvroCodec(ORDER, confluent_schema_id=42), AvroCodec(ORDER, confluent_schema_id=7).encode(AN_ORDER),
     CodecError, "written with schema id 7, expected 42"),
])
def test_undecodable_bytes_raise(codec, data, error, message):
    with pytest.raises(error, match=message):
        codec.decode(data)


@pytest.mark.parametrize("codec, value, error, message", [
    (BytesCodec(), "text", CodecError, "format bytes needs bytes, got str"),
    (StringCodec(), b"bytes", CodecError, "format string needs str, got bytes"),
    (JsonCodec(), {"x": float("nan")}, ValueError, "Out of range float values"),
    (JsonCodec(), {"x": object()}, TypeError, "not JSON serializable"),
    (AvroCodec(ORDER), {**AN_ORDER, "amount_cents": 12.5}, CodecError, "amount_cents is <12.5>"),
    (AvroCodec(ORDER), {**AN_ORDER, "amount_cents": 2**63}, CodecError, "expected long"),
    (AvroCodec(ORDER), {k: v for k, v in AN_ORDER.items() if k != "currency"}, CodecError,
     r"Field\(com.example.orders.Order.currency\) is None"),
])
def test_unencodable_values_raise(codec, value, error, message):
    with pytest.raises(error, match=message):
        codec.encode(value)


def test_confluent_framing():
    data = AvroCodec(ORDER, confluent_schema_id=258).encode(AN_ORDER)
    assert data[:5] == b"\x00\x00\x00\x01\x02"
    with pytest.raises(CodecError, match="schema id 258, expected 7"):
        AvroCodec(ORDER, confluent_schema_id=7).decode(data)
