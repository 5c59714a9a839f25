"""Codecs round-trip what they should and refuse what they must."""

from __future__ import annotations

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
    assert codec.encode(codec.decode(data)) == data
    assert codec.encode(None) is None and codec.decode(None) is None


@pytest.mark.parametrize("codec, data", [
    (StringCodec(), b"\xff\xfe"),
    (JsonCodec(), b"{not json"),
    (AvroCodec(ORDER), b"\xff\xfe not avro"),
    (AvroCodec(ORDER), _avro(REFUND, {"refund_id": 2**40, "approved": True, "ratio": 0.5})),
    (AvroCodec(ORDER), AvroCodec(ORDER).encode(AN_ORDER) + b"\x00"),
    (AvroCodec(ORDER, confluent_schema_id=42), AvroCodec(ORDER).encode(AN_ORDER)),
    (AvroCodec(ORDER, confluent_schema_id=42), AvroCodec(ORDER, confluent_schema_id=7).encode(AN_ORDER)),
])
def test_undecodable_bytes_raise(codec, data):
    with pytest.raises(Exception):
        codec.decode(data)


@pytest.mark.parametrize("codec, value", [
    (BytesCodec(), "text"), (StringCodec(), b"bytes"), (JsonCodec(), {"x": float("nan")}),
    (JsonCodec(), {"x": object()}),
    (AvroCodec(ORDER), {**AN_ORDER, "amount_cents": 12.5}),
    (AvroCodec(ORDER), {**AN_ORDER, "amount_cents": 2**63}),
    (AvroCodec(ORDER), {k: v for k, v in AN_ORDER.items() if k != "currency"}),
])
def test_unencodable_values_raise(codec, value):
    with pytest.raises((CodecError, TypeError, ValueError)):
        codec.encode(value)


def test_confluent_framing():
    data = AvroCodec(ORDER, confluent_schema_id=258).encode(AN_ORDER)
    assert data[:5] == b"\x00\x00\x00\x01\x02"
    with pytest.raises(CodecError, match="schema id 258, expected 7"):
        AvroCodec(ORDER, confluent_schema_id=7).decode(data)
