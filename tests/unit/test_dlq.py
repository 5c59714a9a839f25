"""`processor dlq` without a broker: dead letters parsed from their headers, the filters, and
what stats, list and show print (against the real broker: tests/integration/test_dlq.py)."""

from __future__ import annotations

import argparse
import json

import pytest

from processor.codecs import JsonCodec
from processor.deadletter import Failure, dead_letter
from processor.dlq.arguments import add_dlq_parser
from processor.dlq.letters import letter_of
from processor.dlq.report import line, show, stats, stats_table
from processor.dlq.select import BadFilter, Selection, parse_time
from processor.transform import Poison
from tests.messages import message

T0 = 1_790_000_000_000  # 2026-09-21, UTC


def letter(offset: int, stage: str = "transform", error: BaseException | None = None, *,
           origin=("orders", 1), key=b"k1", value=b'{"amount": -5}', when=T0, headers=None):
    """The dead letter the processor writes for input `origin` @offset, read back at `offset`."""
    failure = Failure(stage, error or Poison(f"amount must be positive (order {offset})"))
    msg = message(origin[0], origin[1], offset, key, value, headers)
    written = dead_letter(msg, failure, "app", 8192)
    return letter_of(message("dlq", 0, offset, written.key, written.value, written.headers, timestamp=when))


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dlq_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["dlq", *argv, "-c", "x.yaml"])


def test_a_dead_letter_knows_its_origin_and_error_and_a_foreign_one_says_so():
    one = letter(7, headers=[("trace", b"abc")])
    assert one.origin == ("orders", 1, 7) and not one.foreign
    assert (one.error("stage"), one.error("exception")) == ("transform", "Poison")
    assert one.own_headers == [("trace", b"abc")]
    other = letter_of(message("dlq", 0, 3, b"k", b"v", [("x", b"y")]))
    assert other.foreign and other.origin is None and other.error("stage") == ""


def test_filters_select_by_stage_exception_origin_time_key_and_message():
    letters = [letter(0), letter(1, "deserialize", ValueError("not JSON"), key=b"k2"),
               letter(2, origin=("refunds", 0), when=T0 + 60_000), letter(3, "produce", when=T0 + 120_000)]

    def picked(*argv):
        return [one.offset for one in Selection.of_args(parse("list", *argv)).pick(letters)]
    assert picked() == [0, 1, 2, 3]
    assert picked("--stage", "transform") == [0, 2]
    assert picked("--exception", "ValueError") == [1]
    assert picked("--origin-topic", "orders", "--partition", "1") == [0, 1, 3]
    assert picked("--since", str(T0 + 60_000)) == [2, 3]
    assert picked("--until", str(T0 + 60_000)) == [0, 1]
    assert picked("--key", "k2") == [1]
    assert picked("--grep", r"\(order \d\)$") == [0, 2, 3]
    assert picked("--limit", "2") == [0, 1]


@pytest.mark.parametrize("argv, why", [(("--since", "yesterday"), "neither an ISO 8601 time"),
                                       (("--grep", "("), "--grep"), (("--limit", "0"), "at least 1")])
def test_a_filter_that_cannot_be_understood_says_why(argv, why):
    with pytest.raises(BadFilter, match=why):
        Selection.of_args(parse("list", *argv))


def test_times_are_utc_unless_they_say_otherwise():
    assert parse_time("2026-12-01T10:00:00") == parse_time("2026-12-01T11:00:00+01:00") == 1_796_119_200_000


def test_stats_count_by_stage_exception_and_origin():
    letters = [letter(0), letter(1), letter(2, "deserialize", ValueError("x")),
               letter_of(message("dlq", 0, 9, None, b"?", None, timestamp=T0 + 5_000))]
    counts = stats(letters, "dlq")
    assert counts["dead_letters"] == 4 and counts["foreign"] == 1
    assert counts["by_stage"] == {"transform": 2, "deserialize": 1}
    assert counts["by_exception"] == {"Poison": 2, "ValueError": 1}
    assert counts["by_origin"] == {"orders [1]": 3}
    assert counts["first"].startswith("2026-09-21T") and json.dumps(counts)
    table = stats_table(counts)
    assert "4 dead letters in dlq, 1 without the processor's headers" in table and "by stage:" in table


def test_list_is_one_line_each_and_show_decodes_what_it_can():
    good, garbage = letter(4), letter(5, "deserialize", ValueError("bad"), value=b"\xff not json")
    assert line(good).split()[:2] == ["0@4", good.when]
    assert "orders [1] @4  transform   Poison: amount must be positive (order 4)" in line(good)
    shown = show(good, "dlq", JsonCodec(), "json")
    assert 'value:     {"amount": -5}' in shown and "stacktrace:" in shown and "Poison" in shown
    assert "(not json:" in show(garbage, "dlq", JsonCodec(), "json")


def test_a_replayed_record_keeps_its_headers_and_its_first_idempotency_key():
    from processor.dlq.replay import replay_context, replayed_headers  # noqa: PLC0415
    first = letter(7, headers=[("trace", b"abc")])
    headers = dict(replayed_headers(first, "dlq", replay_context("fix-1")))
    assert headers["trace"] == b"abc" and not any(name.startswith("__processor.errors.") for name in headers)
    assert headers["__processor.replay.idempotency_key"] == b"app:orders:1:7"
    assert (headers["__processor.replay.topic"], headers["__processor.replay.offset"]) == (b"orders", b"7")
    assert headers["__processor.replay.dead_letter"] == b"dlq [0] @7" and headers["__processor.replay.id"] == b"fix-1"
    # replayed, failed again at offset 40 of the origin, dead-lettered, replayed again
    again = letter(40, headers=list(replayed_headers(first, "dlq", replay_context("fix-1"))))
    second = replayed_headers(again, "dlq", replay_context("fix-2"))
    assert dict(second)["__processor.replay.idempotency_key"] == b"app:orders:1:7"
    assert [name for name, _ in second].count("__processor.replay.id") == 1 and dict(second)["trace"] == b"abc"


def test_the_transform_sees_the_first_attempts_idempotency_key():
    from processor.transform import Record  # noqa: PLC0415
    record_of = Record.of_app("app")
    plain = record_of(b"k", b"v", message("orders", 1, 40, b"k", b"v"))
    replayed = record_of(b"k", b"v", message("orders", 1, 40, b"k", b"v",
                                             [("__processor.replay.idempotency_key", b"app:orders:1:7")]))
    assert (plain.idempotency_key, replayed.idempotency_key) == ("app:orders:1:40", "app:orders:1:7")


def test_a_letter_whose_partition_and_offset_headers_are_damaged_is_listed_shown_and_replayed():
    from processor.dlq.replay import Replay  # noqa: PLC0415
    damaged = letter(7)
    damaged.raw_errors["partition"], damaged.raw_errors["offset"] = b"one", b""
    assert damaged.origin == ("orders", -1, -1) and not damaged.foreign
    assert "orders [-1] @-1  transform" in line(damaged)
    assert "origin:    orders [-1] @-1" in show(damaged, "dlq", JsonCodec(), "json")
    replay = Replay({}, "app", "dlq", "fix-1", Selection.of_args(parse("replay")))
    assert replay.target(damaged) == ("orders", None)  # to the origin topic, by its key
