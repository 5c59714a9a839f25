"""The command line of `processor dlq`: argparse only, so that `processor run` parses its own
arguments before any heavy import (cli.py)."""

from __future__ import annotations

SHOW_LIMIT = 10


def add_dlq_parser(commands) -> None:
    dlq = commands.add_parser("dlq", help="inspect the dead-letter topic")
    actions = dlq.add_subparsers(dest="action", required=True)
    for name, text in (("stats", "counts by stage, exception and origin"),
                       ("list", "one line per dead letter"),
                       ("show", f"dead letters whole, decoded (the first {SHOW_LIMIT} unless --limit)")):
        action = actions.add_parser(name, help=text)
        action.add_argument("-c", "--config", required=True, help="the YAML config file")
        action.add_argument("--topic", help="another dead-letter topic than the config's")
        add_filter_arguments(action)
        if name == "stats":
            action.add_argument("--json", action="store_true", help="JSON instead of a table")
    replay = actions.add_parser("replay", help="send dead letters back to their origin, exactly once")
    replay.add_argument("-c", "--config", required=True, help="the YAML config file")
    replay.add_argument("--topic", help="another dead-letter topic than the config's")
    add_filter_arguments(replay)
    replay.add_argument("--to", help="this topic instead of each letter's origin topic")
    replay.add_argument("--id", help="the replay's name: run again with it to go on after a stop "
                                     "(default: a new one, printed)")
    replay.add_argument("--dry-run", action="store_true", help="print what would be sent, send nothing")
    replay.add_argument("--rate", type=float, help="at most this many dead letters per second")
    replay.add_argument("--include-foreign", action="store_true",
                        help="also records without the processor's headers (needs --to)")


def add_filter_arguments(parser) -> None:
    parser.add_argument("--stage", choices=["deserialize", "transform", "serialize", "produce"])
    parser.add_argument("--exception", help="the exception's class name, e.g. Poison")
    parser.add_argument("--origin-topic", help="the input topic the record came from")
    parser.add_argument("--partition", type=int, help="the input partition it came from")
    parser.add_argument("--since", help="dead-lettered at or after (ISO 8601, UTC by default, or ms)")
    parser.add_argument("--until", help="dead-lettered before (ISO 8601, UTC by default, or ms)")
    parser.add_argument("--key", help="the record's key, as text")
    parser.add_argument("--grep", help="a regular expression searched in the error message")
    parser.add_argument("--limit", type=int, help="at most this many")
