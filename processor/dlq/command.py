"""`processor dlq stats|list|show|replay -c FILE [filters]`: the dead-letter topic of a config.

Exit 0 (also when no dead letter matches: it says so), 1 when Kafka does not answer, 2 for a
bad config, filter or an unknown topic, with one line.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Iterator

from confluent_kafka import KafkaException

from processor.codecs import build_codec
from processor.config import ConfigError, load_config
from processor.dlq.letters import Letter, UnknownTopic, read_letters, topic_exists
from processor.dlq.replay import Replay, ReplayError
from processor.dlq.report import line, show, stats, stats_table
from processor.dlq.arguments import SHOW_LIMIT
from processor.dlq.select import BadFilter, Selection
from processor.kafka import client_settings, kafka_error

EXIT_OK, EXIT_KAFKA, EXIT_USAGE = 0, 1, 2


def main(args) -> int:
    try:
        config = load_config(args.config)
        selection = Selection.of_args(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except BadFilter as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    topic = args.topic or config.dead_letter.topic
    if args.action == "replay":
        return replay(args, config, topic, selection)
    if args.action == "show" and selection.limit is None:
        selection = Selection(**{**selection.__dict__, "limit": SHOW_LIMIT})
    try:
        return _report(args, config, topic, selection.pick(read_letters(client_settings(config), topic)))
    except UnknownTopic as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KafkaException as exc:
        print(f"cannot read {topic!r}: {kafka_error(exc).str()}", file=sys.stderr)
        return EXIT_KAFKA


def _report(args, config, topic: str, letters: Iterator[Letter]) -> int:
    """Print as the letters come: a topic of millions is never held in memory (`show` holds
    its `--limit`)."""
    if args.action == "stats":
        counts = stats(letters, topic)
        print(json.dumps(counts, indent=2) if args.json else stats_table(counts))
        return EXIT_OK
    if args.action == "list":
        listed = 0
        for letter in letters:
            print(line(letter))
            listed += 1
    else:
        codec = build_codec(config.input.value)
        shown = [show(letter, topic, codec, config.input.value.format) for letter in letters]
        print("\n\n".join(shown))
        listed = len(shown)
    if not listed:
        print(f"no dead letter in {topic} matches")
    return EXIT_OK


def replay(args, config, topic: str, selection: Selection) -> int:
    if args.include_foreign and not args.to:
        print("--include-foreign needs --to: records without the processor's headers have no origin",
              file=sys.stderr)
        return EXIT_USAGE
    if args.rate is not None and args.rate <= 0:
        print("--rate must be positive", file=sys.stderr)
        return EXIT_USAGE
    settings = client_settings(config)
    replay_id = args.id or f"replay-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(2)}"
    job = Replay(settings, config.app_id, topic, replay_id, selection, args.to, args.include_foreign,
                 args.rate, progress=_progress if sys.stderr.isatty() else None)
    try:
        for name in {topic, *([args.to] if args.to else [])}:
            if not topic_exists(settings, name):
                print(f"topic {name!r} does not exist (or this client may not describe it)", file=sys.stderr)
                return EXIT_USAGE
        if args.dry_run:
            planned = 0
            for letter, (target, partition) in job.plan(read_letters(settings, topic)):
                print(f"{line(letter)}\n{'':12s}-> {target}{'' if partition is None else f' [{partition}]'}")
                planned += 1
            print(f"dry run: {planned} dead letters would be replayed" if planned else
                  f"no dead letter in {topic} matches")
            return EXIT_OK
        summary = job.run()
    except KafkaException as exc:
        print(f"replay {replay_id!r} stopped: {kafka_error(exc).str()} (run again with --id {replay_id})",
              file=sys.stderr)
        return EXIT_KAFKA
    except ReplayError as exc:
        print(f"replay {replay_id!r} stopped: {exc}", file=sys.stderr)
        return EXIT_KAFKA
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if not summary.read:
        print(f"no dead letter in {topic} to replay: replay {replay_id!r} is at the end")
        return EXIT_OK
    print(summary)
    if not summary.replayed and not summary.refused:
        print(f"no dead letter in {topic} matches")
    return EXIT_KAFKA if summary.refused else EXIT_OK  # not all of it could be replayed


def _progress(done: int, total: int) -> None:
    print(f"\r  {done:,} of ~{total:,} dead letters read", end="", file=sys.stderr, flush=True)
