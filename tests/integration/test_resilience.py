"""A transform that charges a flaky payment gateway: no loss, no double charge, no flood."""

from __future__ import annotations

import json
import random
import time

import pytest

from examples.gateway import Faults, Gateway
from examples.orders import make_samples
from localkafka.clients import produce, read_all, wait_for

pytestmark = pytest.mark.kafka

RESILIENCE = {"payment-gateway": {
    "retry": {"attempts": 8, "base_delay_ms": 20, "max_delay_ms": 500},
    "breaker": {"failure_rate": 0.6, "window": 20, "minimum_calls": 10, "open_ms": 2000,
                "half_open_calls": 2, "slow_call_ms": 5000},
    "bulkhead": 8, "rate_limit": 300, "rate_burst": 20}}
PROCESSING = {"concurrency": 8, "record_deadline_ms": 10000, "retry_backoff_ms": 500}


@pytest.fixture
def gateway(request):
    g = Gateway(request.param if hasattr(request, "param") else Faults(), seed=5).start()
    yield g
    g.stop()


def charge_pipe(pipe, **overrides):
    config = {"transform": "examples.charge:transform", "output_value": {"format": "json"},
              "resilience": RESILIENCE, "processing": PROCESSING, **overrides}
    return pipe(partitions=3, **config)


def run_until_committed(p, processors, gateway, instance="charger", timeout=240):
    proc = processors(p.config, instance, env={"GATEWAY_URL": gateway.url, "GATEWAY_TIMEOUT_S": "0.5"})
    wait_for(lambda: not proc.running() or p.committed_all(), timeout, "all inputs committed")
    return proc


def assert_charged_and_output_once(p, gateway, samples):
    good = sorted(s.order_id for s in samples if s.stage is None)
    charged = gateway.ledger.orders_charged()
    assert sorted(charged) == good, "each good order is charged exactly once"
    outputs = [json.loads(r.value)["order_id"] for r in read_all(p.bootstrap, p.output)]
    assert sorted(outputs) == good, "each good order has exactly one output"
    return outputs


def good_and_refused(count: int, seed: int):
    return [s for s in make_samples(count, poison_per_kind=0.01, seed=seed)
            if s.kind in ("good", "refused")]


@pytest.mark.parametrize("gateway", [Faults(rate=0.2, timeout_s=1.0)], indirect=True)
def test_twenty_percent_transient_faults_charge_every_order_once(pipe, processors, gateway):
    p = charge_pipe(pipe)
    samples = good_and_refused(1_500, seed=21)
    produce(p.bootstrap, p.input, [(s.key, s.value) for s in samples])
    proc = run_until_committed(p, processors, gateway)
    assert proc.terminate() == 0, proc.log()[-3000:]

    assert gateway.ledger.failed > 100  # the faults really happened
    assert_charged_and_output_once(p, gateway, samples)
    dead = read_all(p.bootstrap, p.dead_letter)
    assert sorted(r.key.decode() for r in dead) == sorted(s.order_id for s in samples if s.stage)


def test_gateway_down_opens_the_breaker_pauses_and_recovers(pipe, processors, gateway):
    p = charge_pipe(pipe)
    samples = good_and_refused(3_000, seed=22)
    produce(p.bootstrap, p.input, [(s.key, s.value) for s in samples[:500]])
    proc = processors(p.config, "charger", env={"GATEWAY_URL": gateway.url})
    wait_for(lambda: len(gateway.ledger.charges) > 100, 60, "charging under way")
    down_from = time.monotonic()
    gateway.down(30)
    produce(p.bootstrap, p.input, [(s.key, s.value) for s in samples[500:]])
    wait_for(lambda: "-> OPEN" in proc.log(), 30, "the breaker opening")

    wait_for(lambda: not proc.running() or p.committed_all(), 180, "all inputs committed")
    assert proc.terminate() == 0, proc.log()[-3000:]
    log = proc.log()
    assert "consumption paused" in log and "consumption resumed" in log
    assert "HALF_OPEN -> CLOSED" in log
    # while down, the breaker lets only a few probes through (2 per 2-second open period,
    # plus the calls in flight when it opened); 8 workers retrying every <=0.5 s would send 480+
    during_outage = [t for t in gateway.ledger.requests if down_from <= t <= down_from + 30]
    assert len(during_outage) < 200, len(during_outage)
    assert_charged_and_output_once(p, gateway, samples)
    dead = read_all(p.bootstrap, p.dead_letter)
    assert {r.headers["__processor.errors.stage"] for r in dead} <= {b"transform"}
    assert len(dead) == sum(1 for s in samples if s.stage), "nothing dead-lettered for the outage"


@pytest.mark.serial  # times measured where the requests arrive: CPUs shared with other tests bunch them
def test_request_rate_stays_within_the_limit(pipe, processors, gateway):
    limited = {"payment-gateway": {**RESILIENCE["payment-gateway"], "rate_limit": 50, "rate_burst": 5}}
    p = charge_pipe(pipe, resilience=limited)
    samples = good_and_refused(400, seed=23)
    produce(p.bootstrap, p.input, [(s.key, s.value) for s in samples])
    proc = run_until_committed(p, processors, gateway)
    assert proc.terminate() == 0
    assert gateway.ledger.max_requests_in(1.0) <= 50 + 5
    assert_charged_and_output_once(p, gateway, samples)


@pytest.mark.parametrize("gateway", [Faults(rate=0.05, slow_rate=0.3, slow_s=0.1)], indirect=True)
def test_kill_9_mid_batch_never_charges_twice(pipe, processors, gateway):
    p = charge_pipe(pipe)
    samples = good_and_refused(3_000, seed=24)
    produce(p.bootstrap, p.input, [(s.key, s.value) for s in samples])
    rng = random.Random(24)
    for _ in range(3):
        proc = processors(p.config, "charger", env={"GATEWAY_URL": gateway.url})
        before = len(gateway.ledger.charges)
        wait_for(lambda: len(gateway.ledger.charges) > before + 50 or p.committed_all(), 60,
                 "charging under way")
        wait_for(lambda: rng.random() < 0.3, 5, "a random moment", interval=0.05)
        proc.kill()
    proc = run_until_committed(p, processors, gateway)
    assert proc.terminate() == 0, proc.log()[-3000:]
    assert gateway.ledger.replays > 0, "the kills should have left charges to replay"
    assert_charged_and_output_once(p, gateway, samples)
    assert p.committed_total() == len(samples)
