"""The saga library without a broker: each path of a three-step saga (all done, a step
declined, a step timed out, a compensation resent until acknowledged), what it ignores, and
its counts. The booking example against the real broker, with kill -9: tests/chaos."""

from __future__ import annotations

import itertools

import pytest
from confluent_kafka import TopicPartition

from processor.saga import SAGAS, Command, Ended, Saga, SagaGauges, Step
from processor.metrics import Metrics
from processor.transform import Output, Record
from tests.messages import message
from tests.unit.test_timers import timer_stores

_names = itertools.count()


def command(c: Command) -> Output:
    return Output({"id": c.saga_id, "step": c.step, "action": c.action, "command_id": c.command_id},
                  key=c.saga_id, topic="commands")


def ended(end: Ended) -> Output:
    return Output({"id": end.saga_id, "status": end.status, "reason": end.reason}, topic="results")


class Trip:
    """A three-step saga over in-memory stores, on a clock the test moves."""

    def __init__(self, tmp_path, monkeypatch):
        self.now = [1_000_000]
        for module in ("processor.saga", "processor.state.timers"):
            monkeypatch.setattr(f"{module}.wall_ms", lambda: self.now[0])
        self.stores = timer_stores(tmp_path, "sagas")
        self.stores.timers.clock_ms = lambda: self.now[0]
        self.stores.assigned([TopicPartition("in", 0)])
        assert self.stores.catch_up(1.0)
        self.saga = Saga(f"trip{next(_names)}", "sagas",
                         [Step(name, command, command, timeout_ms=5_000) for name in ("hotel", "flight", "car")],
                         on_end=ended, retry_ms=1_000, max_retry_ms=4_000)
        self.record_of = Record.of_app("app", self.stores)
        self.offsets = itertools.count()

    def call(self, method, *args, **kwargs) -> list[dict]:
        record = self.record_of("t1", None, message("in", 0, next(self.offsets), b"t1", b""))
        outputs = method(record, *args, **kwargs)
        self.stores.record_ended(True)
        return [out.value for out in outputs]

    def start(self):
        return self.call(self.saga.start, "t1", {"guests": 2})

    def reply(self, step: str, action: str = "do", ok: bool = True):
        return self.call(self.saga.on_reply, "t1", f"t1/{step}/{action}", ok)

    def later(self, ms: int) -> list[tuple[dict, list]]:
        """Move the clock; fire what came due (as the engine does: removal first)."""
        self.now[0] += ms
        fired = []
        for timer in self.stores.timers.due(100):
            self.stores.timers.remove(timer)
            outputs = self.saga.on_timer(timer)
            self.stores.record_ended(True)
            fired += [(out.value, out.headers) for out in outputs]
        return fired

    def counts(self) -> dict[str, int]:
        return self.saga.counts(self.stores.partition("sagas", 0))


def steps_of(outputs) -> list[tuple]:
    return [(o["step"], o["action"]) if "step" in o else (o["status"], o["reason"]) for o in outputs]


@pytest.fixture
def trip(tmp_path, monkeypatch):
    made = Trip(tmp_path, monkeypatch)
    yield made
    SAGAS.pop(made.saga.name)


def test_every_step_done_confirms_and_its_timers_go(trip):
    assert steps_of(trip.start()) == [("hotel", "do")]
    assert steps_of(trip.reply("hotel")) == [("flight", "do")]
    assert steps_of(trip.reply("flight")) == [("car", "do")]
    assert steps_of(trip.reply("car")) == [("CONFIRMED", None)]
    assert trip.later(60_000) == []  # no timer left behind
    assert trip.counts() == {"confirmed": 1}


def test_a_declined_step_compensates_those_done_in_reverse_order(trip):
    trip.start()
    trip.reply("hotel")
    trip.reply("flight")
    assert steps_of(trip.reply("car", ok=False)) == [("flight", "compensate")]
    assert trip.counts() == {"compensating:flight": 1}
    assert steps_of(trip.reply("flight", "compensate")) == [("hotel", "compensate")]
    assert steps_of(trip.reply("hotel", "compensate")) == [("CANCELLED", "car declined")]
    assert trip.counts() == {"cancelled": 1}


def test_the_first_step_declined_cancels_at_once(trip):
    trip.start()
    assert steps_of(trip.reply("hotel", ok=False)) == [("CANCELLED", "hotel declined")]


def test_a_step_timed_out_is_compensated_too_and_compensations_are_resent_until_acknowledged(trip):
    trip.start()
    trip.reply("hotel")
    assert trip.later(4_999) == []
    fired = trip.later(1)  # the flight's reply is overdue: it may still be reserved late
    assert steps_of([value for value, _ in fired]) == [("flight", "compensate")]
    assert fired[0][1][-1][0] == "saga.timer"
    assert steps_of(trip.reply("flight", "do")) == []  # the late reply changes nothing now
    resent = [steps_of([value])[0] for value, _ in trip.later(1_000) + trip.later(2_000) + trip.later(4_000)]
    assert resent == [("flight", "compensate")] * 3  # after 1 s, 2 s, 4 s (backing off)
    assert trip.later(3_999) == [] and len(trip.later(1)) == 1  # at most max_retry_ms apart
    assert steps_of(trip.reply("flight", "compensate", ok=False)) == []  # not done: resent later
    assert steps_of(trip.reply("flight", "compensate")) == [("hotel", "compensate")]
    assert steps_of(trip.reply("hotel", "compensate")) == [("CANCELLED", "flight timed out")]
    assert trip.later(60_000) == []


def test_repeats_and_strays_are_ignored(trip):
    trip.start()
    assert trip.start() == []  # the same request again
    assert trip.reply("flight") == []  # a reply to a command never sent
    trip.reply("hotel")
    assert trip.reply("hotel") == []  # the same reply again
    trip.reply("flight")
    trip.reply("car")
    assert trip.reply("car") == [] and trip.start() == []  # after the end


def test_the_gauge_shows_sagas_by_state_and_the_stuck_ones(trip):
    trip.start()
    trip.call(trip.saga.start, "t2", None)
    trip.reply("hotel")
    metrics = Metrics()
    gauges = SagaGauges(trip.stores, metrics.sagas)
    gauges.refresh()

    def shown(state):
        return metrics.registry.get_sample_value("processor_sagas", {"saga": trip.saga.name, "state": state})
    assert (shown("running:hotel"), shown("running:flight"), shown("stuck")) == (1, 1, 0)
    trip.now[0] += trip.saga.stuck_after_ms + 1
    gauges.refresh()
    assert shown("stuck") == 2 and shown("compensating:car") == 0


def test_a_saga_needs_steps_with_distinct_names():
    with pytest.raises(ValueError, match="no steps"):
        Saga("empty", "sagas", [], on_end=ended)
    with pytest.raises(ValueError, match="same name"):
        Saga("twice", "sagas", [Step("a", command, command), Step("a", command, command)], on_end=ended)


def test_counts_that_expired_while_a_saga_waited_do_not_fail_its_next_move(trip):
    trip.start()
    trip.stores.partition("sagas", 0).delete(f"{trip.saga.name}/#counts")  # gone with the store's ttl_ms
    assert steps_of(trip.reply("hotel")) == [("flight", "do")]
    assert trip.counts() == {"running:flight": 1}


def test_saga_ids_that_look_like_the_sagas_own_keys_are_sagas_like_any_other(trip):
    """A client picks the id: "#counts" once took the place of the counts (the gauges failed
    on every start)."""
    for saga_id in ("#counts", "@started/0000000000000/x", "%#counts"):
        outputs = trip.call(trip.saga.start, saga_id, None)
        assert steps_of(outputs) == [("hotel", "do")] and outputs[0]["id"] == saga_id
    assert trip.counts() == {"running:hotel": 3}
    metrics = Metrics()
    SagaGauges(trip.stores, metrics.sagas).refresh()
    assert metrics.registry.get_sample_value("processor_sagas", {"saga": trip.saga.name, "state": "running:hotel"}) == 3
    assert steps_of(trip.call(trip.saga.on_reply, "#counts", "#counts/hotel/do", True)) == [("flight", "do")]
    assert trip.counts() == {"running:hotel": 2, "running:flight": 1}


def test_the_gauge_catches_up_when_the_stream_goes_idle(trip):
    """The last sagas' ends come within the refresh interval of the one before: the gauge
    still shows them once the interval has passed, with no commit to come."""
    now = [0.0]
    metrics = Metrics()
    gauges = SagaGauges(trip.stores, metrics.sagas, clock=lambda: now[0])

    def shown(state):
        return metrics.registry.get_sample_value("processor_sagas", {"saga": trip.saga.name, "state": state})
    trip.start()
    gauges.after_commit([])
    assert shown("running:hotel") == 1
    now[0] = 1.0
    trip.reply("hotel", ok=False)
    gauges.after_commit([])  # within 5 s of the last refresh
    assert (shown("running:hotel"), shown("cancelled")) == (1, 0)
    now[0] = 5.0
    gauges.between()  # the loop turns on, idle
    assert (shown("running:hotel"), shown("cancelled")) == (0, 1)
