"""`processor run -c FILE`, `processor check -c FILE [--connect]`, `processor dlq ...`,
`processor outbox -c FILE`."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import threading
import traceback


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT set the returned event; installed before the heavy imports, so a
    signal during start-up also ends in a clean stop."""
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stopping.set())
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks on demand, for operators
    return stopping


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="processor",
                                     description="Exactly-once Kafka stream processor.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="process until SIGTERM or SIGINT")
    run.add_argument("-c", "--config", required=True, help="the YAML config file")
    check = commands.add_parser("check", help="validate the config, transform and schemas")
    check.add_argument("-c", "--config", required=True, help="the YAML config file")
    check.add_argument("--connect", action="store_true",
                       help="also check that the brokers answer and the topics exist")
    from processor.dlq.arguments import add_dlq_parser  # noqa: PLC0415 - argparse only
    add_dlq_parser(commands)
    outbox = commands.add_parser("outbox", help="publish a PostgreSQL outbox table to Kafka "
                                 "exactly once, until SIGTERM or SIGINT")
    outbox.add_argument("-c", "--config", required=True, help="the relay's YAML config file")
    once = outbox.add_mutually_exclusive_group()
    once.add_argument("--create-table", action="store_true",
                      help="create the outbox table (if missing) and exit")
    once.add_argument("--check", action="store_true",
                      help="check the config and the table (exit 2: one line), and exit")
    args = parser.parse_args(argv)
    if args.command == "dlq":
        from processor.dlq.command import main as dlq  # noqa: PLC0415
        return dlq(args)
    stopping = _stop_on_signals() if args.command in ("run", "outbox") else threading.Event()
    if args.command == "outbox":
        from processor.outbox.command import main as relay  # noqa: PLC0415 - after the handlers
        code = relay(args, stopping)
        logging.shutdown()
        if code == 1:
            os._exit(code)  # as `run`: a Kafka call may still be blocked in another thread
        return code
    from processor import app  # noqa: PLC0415 - after the signal handlers, see _stop_on_signals

    if args.command == "run":
        code = app.run(args.config, stopping)
        if code == app.EXIT_FATAL:
            # exit at once: destroying clients with a call still blocked in another thread
            # aborts the interpreter (SIGABRT); the open transaction is the broker's to abort
            logging.shutdown()
            os._exit(code)
        return code
    problems = app.check(args.config, args.connect)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return app.EXIT_CONFIG
    print(f"{args.config}: OK")
    return app.EXIT_OK


def entry() -> None:
    """The console script (and `python -m processor`): exit once the command is done, even if
    the transform started threads that are not daemons (Python would wait for them for ever
    after the stop, and a watchdog would kill the process blaming Kafka)."""
    try:
        code = main()
    except SystemExit as exc:  # argparse's usage errors and --help
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:  # noqa: BLE001 - said as Python would, then the same exit
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
