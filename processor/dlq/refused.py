"""Dead letters the target topic refuses, found one by one, so that a replay goes on without them.

Kafka refuses a whole produce request for one record in it (a null key to a compacted topic,
a record over the topic's `max.message.bytes`): the transaction cannot commit, and every
letter of the request reports the refusal. So the letters that reported one become suspects
and go again alone, one per transaction; a letter refused alone is refused for good. It is
reported on a line of its own and skipped (it stays in the dead-letter topic), and the
replay goes on. Transactions that keep failing with no letter to blame end the replay.
"""

from __future__ import annotations

import sys

from confluent_kafka import KafkaError, Message

from processor.refusals import REFUSED

MAX_BLAMELESS_ABORTS = 5


class RefusedLetters:
    def __init__(self) -> None:
        self.suspects: dict[str, str] = {}  # dead letter ("dlq [0] @7") -> why its request was refused
        self.refused: set[str] = set()
        self.sent: list[str] = []  # by the open transaction
        self.reported: set[str] = set()  # refused in the open transaction
        self.blameless_aborts = 0  # in a row

    def delivered(self, where: str, error: KafkaError | None, msg: Message) -> None:
        """A record's `on_delivery` (reports of failed records only; they carry no headers, so
        each record's report is told which dead letter it is)."""
        if error is not None and error.code() in REFUSED:
            self.suspects[where] = f"{msg.topic()!r} refuses it: {error.str()}"
            self.reported.add(where)

    def per_transaction(self, usual: int) -> int:
        return 1 if self.suspects else usual

    def skip(self, where: str) -> bool:
        return where in self.refused

    def refuse(self, where: str, why: str) -> None:
        """A letter refused for good: said once, skipped from now on."""
        self.refused.add(where)
        self.suspects.pop(where, None)
        print(f"dead letter {where} not replayed: {why} (it stays in the dead-letter topic)", file=sys.stderr)

    def began(self) -> None:
        self.sent.clear()
        self.reported.clear()

    def committed(self) -> None:
        for where in self.sent:
            self.suspects.pop(where, None)
        self.blameless_aborts = 0

    def aborted(self) -> bool:
        """After an abort: a letter sent alone and refused is refused for good (a transaction
        can fail for other reasons: the one after a refusal may, as the producer recovers).
        Whether the replay is hopeless: transactions that fail again and again with no
        refusal reported."""
        if len(self.sent) == 1 and self.sent[0] in self.reported:
            self.refuse(self.sent[0], self.suspects[self.sent[0]])
        if self.reported:
            self.blameless_aborts = 0
        else:
            self.blameless_aborts += 1
        return self.blameless_aborts >= MAX_BLAMELESS_ABORTS
