"""What `processor dlq stats`, `list` and `show` print."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from processor.codecs import Codec
from processor.dlq.letters import Letter

MESSAGE_CHARS = 120


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def stats(letters: Iterable[Letter], topic: str) -> dict:
    """Counts by stage, exception and origin, and the first and last dead-lettering times
    (one pass: the letters are not kept)."""
    total = foreign = 0
    first = last = None
    stages: Counter = Counter()
    exceptions: Counter = Counter()
    origins: Counter = Counter()
    for letter in letters:
        total += 1
        first = letter.timestamp_ms if first is None else min(first, letter.timestamp_ms)
        last = letter.timestamp_ms if last is None else max(last, letter.timestamp_ms)
        if letter.foreign:
            foreign += 1
            continue
        stages[letter.error("stage")] += 1
        exceptions[letter.error("exception")] += 1
        origins[f"{letter.error('topic')} [{letter.error('partition')}]"] += 1
    return {"topic": topic, "dead_letters": total, "foreign": foreign,
            "first": _iso(first) if first is not None else None, "last": _iso(last) if last is not None else None,
            "by_stage": dict(stages.most_common()), "by_exception": dict(exceptions.most_common()),
            "by_origin": dict(origins.most_common())}


def stats_table(counts: dict) -> str:
    lines = [f"{counts['dead_letters']} dead letters in {counts['topic']}"
             + (f", {counts['foreign']} without the processor's headers" if counts["foreign"] else "")
             + (f"; first {counts['first']}, last {counts['last']}" if counts["first"] else "")]
    for title, key in (("stage", "by_stage"), ("exception", "by_exception"), ("origin", "by_origin")):
        if counts[key]:
            width = max(len(name) for name in counts[key])
            lines.append(f"\nby {title}:")
            lines += [f"  {name:{width}s} {n:>10,d}" for name, n in counts[key].items()]
    return "\n".join(lines)


def line(letter: Letter) -> str:
    """One dead letter on one line: where it is, when, where it came from, why."""
    where = f"{letter.partition}@{letter.offset}"
    if letter.foreign:
        return f"{where:>10s}  {letter.when}  (no processor headers: written by something else)"
    topic, partition, offset = letter.origin
    message = letter.error("message").splitlines()[0] if letter.error("message") else ""
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS - 3] + "..."
    return (f"{where:>10s}  {letter.when}  {topic} [{partition}] @{offset}  {letter.error('stage'):11s} "
            f"{letter.error('exception')}: {message}")


def show(letter: Letter, topic: str, decode: Codec | None, codec_name: str) -> str:
    """The whole dead letter: its origin and error, key, value decoded with the input codec
    where it can be, headers, stack trace."""
    out = [f"dead letter {topic} [{letter.partition}] @{letter.offset}, written {letter.when}"]
    if letter.foreign:
        out.append("  written by something else: no __processor.errors.* headers")
    else:
        topic_, partition, offset = letter.origin
        out += [f"  origin:    {topic_} [{partition}] @{offset} (timestamp {letter.error('timestamp')})",
                f"  stage:     {letter.error('stage')}, after {letter.error('attempts') or '1'} attempt(s), "
                f"app {letter.error('app_id')}",
                f"  error:     {letter.error('exception')}: {letter.error('message')}"]
        if letter.error("dropped"):
            out.append(f"  dropped:   {letter.error('dropped')} (the dead letter was too large whole)")
    out.append(f"  key:       {letter.key!r}")
    out.append(f"  value:     {_value(letter.value, decode, codec_name)}")
    for name, value in letter.own_headers:
        out.append(f"  header:    {name} = {value!r}")
    if letter.error("stacktrace"):
        out.append("  stacktrace:")
        out += [f"    {row}" for row in letter.error("stacktrace").rstrip().splitlines()]
    return "\n".join(out)


def _value(value: bytes | None, decode: Codec | None, codec_name: str) -> str:
    if value is None or decode is None:
        return repr(value)
    try:
        decoded = decode.decode(value)
    except Exception as exc:  # noqa: BLE001 - poison of stage deserialize, typically
        return f"{value[:200]!r}{'...' if len(value) > 200 else ''} (not {codec_name}: {exc})"
    try:
        return json.dumps(decoded, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        return repr(decoded)
