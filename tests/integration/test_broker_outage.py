"""The processor rides out a broker restart, and gives up clearly when the broker stays away."""

from __future__ import annotations

import signal
import time

import pytest

from examples.orders import make_samples
from localkafka import free_port
from localkafka.clients import create_topics, unique_name, wait_for
from processor.engine import STOP_SECONDS
from tests.conftest import Pipe
from tests.feeder import Feeder
from tests.processes import write_config

pytestmark = pytest.mark.kafka


def private_pipe(broker, tmp_path, **config) -> Pipe:
    topics = [unique_name(label) for label in ("in", "out", "dlq")]
    create_topics(broker.bootstrap, topics, partitions=3)
    app_id = unique_name("app")
    path = write_config(tmp_path / "config.yaml", broker.bootstrap, input_topic=topics[0],
                        output_topic=topics[1], dead_letter_topic=topics[2], app_id=app_id, **config)
    return Pipe(broker.bootstrap, *topics, app_id, path)



@pytest.mark.parametrize("hard", [False, True], ids=["stop-start", "kill-9"])
def test_survives_a_broker_restart_mid_stream(private_broker, tmp_path, processors, hard):
    p = private_pipe(private_broker, tmp_path)
    samples = make_samples(40_000, poison_per_kind=0.005, seed=9)
    feeder = Feeder(p.bootstrap, p.input, samples, seconds=12)  # a live stream, however fast we are
    proc = processors(p.config, "survivor")
    wait_for(lambda: p.committed_total() > 5_000, 60, "processing under way")

    assert not feeder.done(), "the stream ended before the restart: feed it longer"
    private_broker.restart(hard=hard)
    feeder.finish()

    wait_for(lambda: not proc.running() or p.committed_all(), 150, "all inputs committed")
    assert proc.running(), proc.log()[-3000:]
    assert proc.terminate() == 0, proc.log()[-3000:]
    verdict = p.verify(samples)
    assert verdict.ok, verdict


def test_exits_non_zero_when_the_broker_stays_away(private_broker, tmp_path, processors):
    p = private_pipe(private_broker, tmp_path, unreachable_timeout_ms=8000)
    samples = make_samples(20_000, poison_per_kind=0.0, seed=10)
    p.feed(samples)
    proc = processors(p.config, "abandoned")
    wait_for(lambda: p.committed_total() > 0, 60, "processing under way")

    private_broker.stop()

    code = proc.proc.wait(90)
    assert code == 1
    assert "unreachable" in proc.log(), proc.log()[-2000:]


def test_sigterm_while_the_broker_is_down_ends_within_the_stop_bound(private_broker, tmp_path, processors):
    p = private_pipe(private_broker, tmp_path)  # the default unreachable bound: 120 s
    samples = make_samples(40_000, poison_per_kind=0.0, seed=11)
    feeder = Feeder(p.bootstrap, p.input, samples, seconds=30)
    proc = processors(p.config, "stranded")
    wait_for(lambda: p.committed_total() > 2_000, 60, "processing under way")
    feeder.stop()
    private_broker.kill()

    stopped = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    code = proc.proc.wait(60)
    took = time.monotonic() - stopped
    print(f"\nSIGTERM with the broker down: exit {code} after {took:.1f}s")
    assert took < STOP_SECONDS + 10, proc.log()[-3000:]  # below the 45 s grace period
    if code == 1:
        [line] = proc.errors()
        assert line.startswith("stopping: gave up stopping cleanly"), line
    else:
        assert code == 0 and proc.errors() == [], proc.log()[-3000:]


def test_sigterm_while_kafka_is_away_at_start_with_stores_is_a_clean_stop(tmp_path, processors):
    """Nothing answers at the bootstrap address: the changelog topics cannot be prepared."""
    config = write_config(tmp_path / "away.yaml", f"127.0.0.1:{free_port()}", input_topic="in",
                          output_topic="out", dead_letter_topic="dlq", app_id=unique_name("away"),
                          transform="tests.transforms:count_per_key", output_value={"format": "json"},
                          input_codec={"key": {"format": "string"}, "value": {"format": "json"}},
                          state={"dir": str(tmp_path / "state"), "stores": {"counts": {}}})
    proc = processors(config, "away")
    wait_for(lambda: "cannot prepare the changelog topics" in proc.log() or not proc.running(), 60,
             "the processor asking for its changelog topics")
    stopped = time.monotonic()
    code = proc.terminate()
    took = time.monotonic() - stopped
    print(f"\nSIGTERM while Kafka is away at start: exit {code} after {took:.1f}s")
    assert code == 0 and proc.errors() == [] and "Traceback" not in proc.log(), proc.log()[-3000:]
    assert took < STOP_SECONDS, proc.log()[-3000:]
    assert "stopped while Kafka did not answer" in proc.log()
