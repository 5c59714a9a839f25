"""`processor dlq stats|list|show -c FILE [filters]`: the dead-letter topic of a config.

Exit 0 (also when no dead letter matches: it says so), 1 when Kafka does not answer, 2 for a
bad config, filter or an unknown topic, with one line.
"""

from __future__ import annotations

import json
import sys

from confluent_kafka import KafkaException

from processor.codecs import build_codec
from processor.config import ConfigError, load_config
from processor.dlq.letters import UnknownTopic, read_letters
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
    if args.action == "show" and selection.limit is None:
        selection = Selection(**{**selection.__dict__, "limit": SHOW_LIMIT})
    try:
        letters = selection.pick(read_letters(client_settings(config), topic))
    except UnknownTopic as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except KafkaException as exc:
        print(f"cannot read {topic!r}: {kafka_error(exc).str()}", file=sys.stderr)
        return EXIT_KAFKA
    if args.action == "stats":
        counts = stats(letters, topic)
        print(json.dumps(counts, indent=2) if args.json else stats_table(counts))
        return EXIT_OK
    if not letters:
        print(f"no dead letter in {topic} matches")
        return EXIT_OK
    if args.action == "list":
        for letter in letters:
            print(line(letter))
        return EXIT_OK
    codec = build_codec(config.input.value)
    print("\n\n".join(show(letter, topic, codec, config.input.value.format) for letter in letters))
    return EXIT_OK
