"""Bounded chaos runs in CI; `python -m tests.chaos.harness`, `python -m tests.chaos.booking`
and `python -m tests.chaos.outbox` run the long ones."""

from __future__ import annotations

import pytest

from tests.chaos.booking import run as run_booking_chaos
from tests.chaos.harness import Chaos
from tests.chaos.outbox import run as run_outbox_chaos

pytestmark = pytest.mark.kafka


# the consumer protocol's run (~110 s: every kill waits out the broker's 45 s session) is long
@pytest.mark.parametrize("protocol", ["classic", pytest.param("consumer", marks=pytest.mark.long)])
def test_bounded_chaos_keeps_exactly_once(tmp_path, protocol):
    # fed over 30 s: the processors are fast enough to finish a pre-filled input before
    # the faults come
    summary = Chaos(tmp_path, records=40_000, seed=3, faults=10, feed_seconds=30,
                    group_protocol=protocol).run()
    print(summary)
    assert summary.ok, summary
    assert sum(summary.faults.values()) >= 5, summary


def test_bounded_stateful_chaos_keeps_every_count_exact(tmp_path):
    summary = Chaos(tmp_path, records=30_000, seed=5, faults=8, feed_seconds=25, stateful=True).run()
    print(summary)
    assert summary.ok, summary
    assert sum(summary.faults.values()) >= 4, summary


def test_bounded_booking_chaos_settles_every_booking_once(tmp_path):
    # every process killed at least once and a broker restart, mid-stream (fed over 30 s)
    summary = run_booking_chaos(tmp_path, count=2_000, seed=3, faults=6, feed_seconds=30)
    print(summary)
    assert summary.ok, summary
    assert sum(summary.faults.values()) == 6 and summary.verdict.results["CONFIRMED"] > 0, summary


def test_bounded_outbox_chaos_publishes_every_committed_row_once(tmp_path):
    # each fault once (kill -9, SIGTERM, a second relay, a database crash, a hard broker
    # restart) while 5,000 transactions are written
    assert run_outbox_chaos(tmp_path, transactions=5_000, faults=5, seed=3) == 0
