"""Which dead letters a `processor dlq` command works on: the filters of its command line."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from processor.dlq.letters import Letter


class BadFilter(ValueError):
    """A filter that cannot be understood (exit 2)."""


def parse_time(text: str) -> int:
    """ms since the epoch, from an ISO 8601 time (UTC unless it says) or a number of ms."""
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(f"{text!r} is neither an ISO 8601 time (2026-12-01T10:00:00) nor ms since the epoch") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class Selection:
    stage: str | None = None
    exception: str | None = None
    origin_topic: str | None = None
    partition: int | None = None  # of the origin topic
    since_ms: int | None = None  # dead-lettered at or after
    until_ms: int | None = None  # dead-lettered before
    key: str | None = None  # the record's key, as UTF-8 text
    grep: re.Pattern | None = None  # on the error message
    limit: int | None = None

    @classmethod
    def of_args(cls, args) -> Selection:
        try:
            grep = re.compile(args.grep) if args.grep else None
        except re.error as exc:
            raise BadFilter(f"--grep {args.grep!r}: {exc}") from None
        if args.limit is not None and args.limit < 1:
            raise BadFilter("--limit must be at least 1")
        return cls(args.stage, args.exception, args.origin_topic, args.partition,
                   parse_time(args.since) if args.since else None,
                   parse_time(args.until) if args.until else None, args.key, grep, args.limit)

    def matches(self, letter: Letter) -> bool:
        origin = letter.origin if self.origin_topic is not None or self.partition is not None else None
        return ((self.stage is None or letter.error("stage") == self.stage)
                and (self.exception is None or letter.error("exception") == self.exception)
                and (self.origin_topic is None or (origin is not None and origin[0] == self.origin_topic))
                and (self.partition is None or (origin is not None and origin[1] == self.partition))
                and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
                and (self.until_ms is None or letter.timestamp_ms < self.until_ms)
                and (self.key is None or (letter.key or b"").decode("utf-8", "replace") == self.key)
                and (self.grep is None or self.grep.search(letter.error("message")) is not None))

    def pick(self, letters: Iterable[Letter]) -> Iterator[Letter]:
        """The matching letters, as they come, up to `limit`."""
        chosen = 0
        for letter in letters:
            if self.matches(letter):
                yield letter
                chosen += 1
                if self.limit is not None and chosen >= self.limit:
                    return
