"""Finding the records whose outputs Kafka refuses, so they become dead letters.

The broker refuses whole produce requests (a record over the topic's `max.message.bytes`, a
null key to a compacted topic, a policy violation): every record of the request fails, the
transaction must abort, and nothing names the input at fault. So the inputs of an aborted
transaction become suspect and are processed again in transactions of at most `cap` inputs,
halved at each refusal and doubled at each commit (a bisection): a transaction of one input
that is refused names its culprit, which is then dead-lettered (stage `produce`) without
producing its outputs. A culprit whose dead letter is refused too gets a smaller dead letter
(see `deadletter.DROPPED`). Once every suspect partition has committed past its suspect
range, transactions are as large as configured again.
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException

from processor.deadletter import DROPPED, Failure
from processor.kafka import FatalError

log = logging.getLogger("processor.refusals")
Where = tuple[str, int, int]  # an input record: topic, partition, offset

# errors of a produce request that are about its records and will come again for them
# (INVALID_MSG is the broker's CORRUPT_MESSAGE)
REFUSED = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG,
           KafkaError.INVALID_MSG_SIZE, KafkaError.RECORD_LIST_TOO_LARGE,
           KafkaError.POLICY_VIOLATION, KafkaError.INVALID_TIMESTAMP,
           KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION}
# errors `produce()` raises at once for one record (the client refuses it before sending)
REFUSED_AT_ONCE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError._UNKNOWN_TOPIC,
                   KafkaError._UNKNOWN_PARTITION, KafkaError._INVALID_ARG}


class Refusals:
    def __init__(self) -> None:
        self.cap: int | None = None  # inputs per transaction while suspects remain
        self.suspect: dict[tuple[str, int], int] = {}  # partition -> last suspect offset
        self.culprits: dict[Where, Failure] = {}  # inputs to dead-letter instead of producing
        self.shrink: dict[Where, int] = {}  # inputs whose dead letter must be this much smaller

    def limit(self, max_batch: int) -> int:
        return max_batch if self.cap is None else min(self.cap, max_batch)

    def refused(self, error: KafkaError, suspects: dict[tuple[str, int], tuple[int, int]],
                inputs: int, dead_letter_refused: bool) -> None:
        """A transaction holding `inputs` inputs (first and last offset per partition in
        `suspects`) aborted because Kafka refused one of its records."""
        for tp, (_, last) in suspects.items():
            self.suspect[tp] = max(self.suspect.get(tp, -1), last)
        if inputs == 0:
            return
        if inputs > 1:
            self.cap = max(1, inputs // 2)
            log.debug("Kafka refused a record of a transaction of %d inputs (%s): processing "
                      "them again %d at a time to find it", inputs, error.str(), self.cap)
            return
        self.cap = 1
        [(topic, partition)] = suspects
        where = (topic, partition, suspects[(topic, partition)][0])
        if dead_letter_refused:
            level = self.shrink.get(where, 0) + 1
            if level >= len(DROPPED):
                raise FatalError(f"the dead-letter topic refuses even the smallest dead letter of "
                                 f"{topic} [{partition}] @{where[2]}: {error.str()}")
            self.shrink[where] = level
            log.warning("the dead letter of %s [%d] @%d was refused (%s): writing it without %s",
                        *where, error.str(), DROPPED[level].replace(",", ", "))
        else:
            self.culprits[where] = Failure("produce", KafkaException(error))
            log.warning("Kafka refused an output of %s [%d] @%d: %s", *where, error.str())

    def refused_at_once(self, where: Where, error: KafkaError) -> None:
        """One of a record's several outputs was refused before sending, after others were
        produced: the record must come again and go to the dead-letter topic alone."""
        self.culprits[where] = Failure("produce", KafkaException(error))

    def committed(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """Inputs before `next_offsets` are committed: forget them, and widen transactions."""
        if not (self.suspect or self.culprits or self.shrink):
            return
        for known in (self.culprits, self.shrink):
            for where in [w for w in known if w[2] < next_offsets.get(w[:2], 0)]:
                del known[where]
        for tp in [tp for tp, last in self.suspect.items() if next_offsets.get(tp, 0) > last]:
            del self.suspect[tp]
        self.cap = None if not self.suspect else self.cap * 2

    def forget(self) -> None:
        """Partitions were reassigned: whoever processes them next finds out again."""
        self.cap = None
        self.suspect.clear()
        self.culprits.clear()
        self.shrink.clear()
