"""What state (and anything else that must move with the transaction) is told of it."""

from __future__ import annotations

from confluent_kafka import TopicPartition


class Hooks:
    """Told of transaction boundaries, of each record's end (`kept`: it went into the
    transaction; else it was dead-lettered; the pipeline tells its stores itself of the
    records it produced) and of partition changes (`lost`: they may be another member's
    already). Assigned partitions may be `held` back until `catch_up` (work done between
    polls) says they are ready; `between` transactions, they may look at committed state
    (also while the stream is idle). Override what you need."""

    def begun(self) -> None: ...
    def record_ended(self, kept: bool) -> None: ...
    def before_commit(self, offsets: list[TopicPartition]) -> None: ...
    def after_commit(self, offsets: list[TopicPartition]) -> None: ...
    def aborted(self) -> None: ...
    def assigned(self, partitions: list[TopicPartition]) -> None: ...
    def revoked(self, partitions: list[TopicPartition], lost: bool) -> None: ...
    def held(self) -> set[tuple[str, int]]: return set()
    def catch_up(self, seconds: float) -> list[tuple[str, int]]: return []
    def between(self) -> None: ...  # every loop turn without an open transaction
