"""Config loading: substitution, overrides, and one precise line per problem from `check`."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from processor.cli import main
from processor.config import ConfigError, load_config

VALID = textwrap.dedent("""\
    app_id: orders-app
    kafka:
      bootstrap_servers: ${BOOT:-127.0.0.1:9092}
    input:
      topics: [orders]
      value: {format: avro, schema: schemas/order.avsc}
    output:
      topic: out
      value: {format: avro, schema: schemas/order_enriched.avsc}
    dead_letter: {topic: dlq}
    transform: examples.enrich:transform
""")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def check(tmp_path: Path, text: str, capsys) -> tuple[int, list[str]]:
    code = main(["check", "-c", str(write(tmp_path, text))])
    return code, capsys.readouterr().err.strip().splitlines()


def test_valid_config_with_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("BOOT", raising=False)
    config = load_config(write(tmp_path, VALID))
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.group_id == "orders-app"
    assert config.processing.commit_interval_ms == 100
    assert config.transactional_id.startswith("orders-app-")


@pytest.mark.parametrize("protocol, static, session", [("classic", "pod-3", 10000), ("consumer", None, None)])
def test_group_settings_by_protocol(tmp_path, monkeypatch, protocol, static, session):
    from processor.kafka import consumer_settings
    monkeypatch.setenv("PROCESSOR__INSTANCE_ID", "pod-3")
    monkeypatch.setenv("PROCESSOR__KAFKA__GROUP_PROTOCOL", protocol)
    settings = consumer_settings(load_config(write(tmp_path, VALID)))
    assert settings["group.protocol"] == protocol
    assert settings.get("group.instance.id") == static  # static members only with classic
    assert settings.get("session.timeout.ms") == session  # the broker's under KIP-848
    monkeypatch.setenv("PROCESSOR__KAFKA__STATIC_MEMBERSHIP", "true")
    assert consumer_settings(load_config(write(tmp_path, VALID)))["group.instance.id"] == "pod-3"


def test_env_substitution_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOT", "broker:9093")
    monkeypatch.setenv("PROCESSOR__PROCESSING__COMMIT_INTERVAL_MS", "250")
    monkeypatch.setenv("PROCESSOR__INPUT__TOPICS", '["a", "b"]')
    monkeypatch.setenv("PROCESSOR__INSTANCE_ID", "pod-3")
    config = load_config(write(tmp_path, VALID))
    assert config.kafka.bootstrap_servers == "broker:9093"
    assert config.processing.commit_interval_ms == 250
    assert config.input.topics == ["a", "b"]
    assert config.transactional_id == "orders-app-pod-3"


def test_dollar_dollar_is_a_literal_dollar(tmp_path, monkeypatch):
    monkeypatch.setenv("SUFFIX", "7")
    config = load_config(write(tmp_path, VALID.replace("${BOOT:-127.0.0.1:9092}", "h$$${SUFFIX}:1")))
    assert config.kafka.bootstrap_servers == "h$7:1"


def test_secrets_are_not_shown(tmp_path, monkeypatch):
    monkeypatch.setenv("KAFKA_PASSWORD", "hunter2")
    text = VALID.replace("  bootstrap_servers: ${BOOT:-127.0.0.1:9092}\n",
                         "  bootstrap_servers: b:9092\n  security_protocol: SASL_SSL\n"
                         "  sasl: {username: svc, password: '${KAFKA_PASSWORD}'}\n")
    config = load_config(write(tmp_path, text))
    assert config.kafka.sasl.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())


@pytest.mark.parametrize("text, expected", [
    (VALID.replace("app_id: orders-app", "app_id: orders-app\nbogus: 1"), "bogus: unknown key"),
    (VALID.replace("topic: out", "topic: out\n  partitions: 3"), "output.partitions: unknown key"),
    (VALID.replace("dead_letter: {topic: dlq}", "dead_letter: {}"), "dead_letter.topic: required key is missing"),
    (VALID + "processing: {commit_interval_ms: soon}\n", "processing.commit_interval_ms: Input should be a valid integer"),
    (VALID + "processing: {commit_interval_ms: 0}\n", "processing.commit_interval_ms: Input should be greater than 0"),
    (VALID.replace("${BOOT:-127.0.0.1:9092}", "${NO_SUCH_VARIABLE_X}"),
     "kafka.bootstrap_servers: environment variable NO_SUCH_VARIABLE_X is not set"),
    (VALID.replace("examples.enrich:transform", "no_such_module:transform"),
     "transform: cannot import module 'no_such_module'"),
    (VALID.replace("examples.enrich:transform", "examples.enrich:nothing"),
     "transform: module 'examples.enrich' has no attribute 'nothing'"),
    (VALID.replace("examples.enrich:transform", "not a spec"), "transform: String should match pattern"),
    (VALID.replace("schemas/order.avsc", "schemas/missing.avsc"),
     "input.value.schema: schema file not found: schemas/missing.avsc"),
    (VALID.replace("{format: avro, schema: schemas/order.avsc}", "{format: avro}"),
     "input.value: format avro needs a schema"),
    (VALID.replace("topic: out", "topic: out put"), "output.topic: String should match pattern"),
    (VALID.replace("app_id: orders-app", "app_id: [unclosed"), "invalid YAML at line 2, column 6"),
    ("- a list\n", "the top level must be a mapping"),
    (VALID.replace("  bootstrap_servers: ${BOOT:-127.0.0.1:9092}",
                   "  bootstrap_servers: x\n  consumer: {isolation.level: read_uncommitted}"),
     "kafka.consumer: kafka.consumer.isolation.level must stay read_committed"),
    (VALID.replace("  bootstrap_servers: ${BOOT:-127.0.0.1:9092}",
                   "  bootstrap_servers: x\n  group_protocol: consumer\n  consumer: {session.timeout.ms: 6000}"),
     "kafka: kafka.consumer.session.timeout.ms cannot be set with group_protocol consumer"),
    (VALID.replace("  bootstrap_servers: ${BOOT:-127.0.0.1:9092}",
                   "  bootstrap_servers: x\n  group_protocol: consumer\n  consumer: {partition.assignment.strategy: range}"),
     "kafka.consumer.partition.assignment.strategy cannot be set with group_protocol consumer"),
    (VALID.replace("  bootstrap_servers: ${BOOT:-127.0.0.1:9092}",
                   "  bootstrap_servers: x\n  consumer: {group.protocol: consumer}"),
     "set kafka.group_protocol rather than kafka.consumer.group.protocol"),
    (VALID.replace("  bootstrap_servers: ${BOOT:-127.0.0.1:9092}",
                   "  bootstrap_servers: x\n  group_protocol: cooperative"),
     "kafka.group_protocol: Input should be 'classic' or 'consumer'"),
])
def test_bad_config_gives_exit_2_and_a_precise_line(tmp_path, capsys, text, expected):
    code, lines = check(tmp_path, text, capsys)
    assert code == 2
    assert any(expected in line for line in lines), lines
    assert not any("Traceback" in line for line in lines)


LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" if i else "l0: &l0 [lol]\n"
                 for i in range(10))


@pytest.mark.timeout(20)  # a guard: each case ends in milliseconds, and must not explode
@pytest.mark.parametrize("text, expected", [
    (VALID + "tags: &r [*r]\n", "tags[0] refers back to a value that holds it (an alias inside its own anchor)"),
    (VALID + "deep: " + "[" * 5000 + "]" * 5000 + "\n", "invalid YAML at line 12, column 56: nested deeper than 50 levels"),
    (VALID + LAUGHS, "expands to more than 100,000 values (aliases of aliases?)"),
    (VALID + "x: [" + ", ".join(["*a"] * 101) + "]\na: &a 1\n", "more than 100 aliases"),
    (VALID + "1: one\n", "1: keys must be strings (quote it)"),
    (VALID.replace("dead_letter: {topic: dlq}", "dead_letter: {topic: dlq, 7: x}"),
     "dead_letter.7: keys must be strings"),
])
def test_hostile_yaml_is_one_line_and_exit_2(tmp_path, capsys, text, expected):
    code, lines = check(tmp_path, text, capsys)
    assert code == 2 and len(lines) == 1 and expected in lines[0], lines


def test_a_file_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_bytes((VALID + "# caf\xe9\n").encode("latin-1"))
    assert main(["check", "-c", str(path)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"{path}: not UTF-8 (byte 0xe9 at line 12)"]


def test_an_override_that_is_not_json_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PROCESSOR__INPUT__TOPICS", "[bad")
    code, lines = check(tmp_path, VALID, capsys)
    assert code == 2 and lines == [
        "environment override PROCESSOR__INPUT__*: not valid JSON (Expecting value: line 1 column 2 (char 1))"]


def test_a_transform_that_exits_on_import_is_a_problem(tmp_path, capsys, monkeypatch):
    (tmp_path / "exits_on_import.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, lines = check(tmp_path, VALID.replace("examples.enrich:transform", "exits_on_import:transform"), capsys)
    assert code == 2 and lines == [
        "transform: importing module 'exits_on_import' failed: SystemExit: 0"]


@pytest.mark.parametrize("section, expected", [
    ("  consumer: {no.such.setting: 1}", "kafka.consumer: librdkafka refuses the settings: "
                                         "No such configuration property: \"no.such.setting\""),
    ("  producer: {linger.ms: banana}", "kafka.producer: librdkafka refuses the settings: "
                                        "Invalid value for configuration property \"queue.buffering.max.ms\""),  # linger.ms's real name
])
def test_check_asks_librdkafka_about_raw_settings(tmp_path, capsys, section, expected):
    code, lines = check(tmp_path, VALID.replace("  bootstrap_servers: ${BOOT:-127.0.0.1:9092}",
                                                "  bootstrap_servers: x\n" + section), capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), lines


def test_a_transaction_timeout_librdkafka_cannot_hold_is_refused(tmp_path, capsys):
    code, lines = check(tmp_path, VALID + "processing: {transaction_timeout_ms: 3000000000}\n", capsys)
    assert code == 2 and lines == ["processing.transaction_timeout_ms: Input should be less than or "
                                   "equal to 2147483647"], lines


def test_check_refuses_a_metrics_port_in_use_and_a_host_that_does_not_resolve(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, lines = check(tmp_path, VALID + f"metrics: {{host: 127.0.0.1, port: {port}}}\n", capsys)
        assert code == 2 and lines == [f"metrics.port: cannot listen on 127.0.0.1:{port}: Address already in use"]
    code, lines = check(tmp_path, VALID + "metrics: {host: no-such-host.invalid}\n", capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("metrics.host: cannot resolve 'no-such-host.invalid'")


def test_invalid_schema_file(tmp_path, capsys):
    bad = tmp_path / "bad.avsc"
    bad.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    code, lines = check(tmp_path, VALID.replace("schemas/order.avsc", str(bad)), capsys)
    assert code == 2
    assert lines == [f"input.value.schema: {bad} is not a valid Avro schema: UnknownType: nope"]


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    text = VALID.replace("app_id: orders-app", "app_id: orders-app\nextra: 1").replace(
        "dead_letter: {topic: dlq}", "dead_letter: {}")
    code, lines = check(tmp_path, text, capsys)
    assert code == 2 and len(lines) == 2


def test_missing_file_via_the_console_script(tmp_path):
    result = subprocess.run([sys.executable, "-m", "processor", "check", "-c", str(tmp_path / "nope.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"config file not found: {tmp_path / 'nope.yaml'}"


def test_config_error_lists_problems(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "app_id: x\n"))
    paths = {p.path for p in caught.value.problems}
    assert {"kafka", "input", "output", "dead_letter", "transform"} <= paths


def test_the_public_api_is_at_the_top():
    import processor
    from processor import Output, Poison, Record, Transient, dependency
    from processor.resilience import dependency as home
    assert (Output.__name__, Poison.__name__, Record.__name__, Transient.__name__) == \
        ("Output", "Poison", "Record", "Transient")
    assert dependency is home and sorted(processor.__all__) == sorted(
        ["Output", "Poison", "Record", "Timer", "Transient", "dependency", "Saga", "Step", "Command", "Ended"])
    from processor import Saga, Timer
    assert (Saga.__module__, Timer.__module__) == ("processor.saga", "processor.transform")


def test_check_validates_the_state_section(tmp_path, capsys):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    cases = {
        f"state: {{dir: {blocked}/state, stores: {{counts: {{}}}}}}\n":
            f"state.dir: cannot write to {blocked}/state/",  # <state.dir>/<instance_id>: Not a directory
        "state: {stores: {'bad name': {}}}\n": "state.stores.bad name.[key]: String should match pattern",
        "state: {stores: {counts: {ttl_ms: 0}}}\n": "state.stores.counts.ttl_ms: Input should be greater than 0",
        "state: {stores: {counts: {ttl_ms: 9223372036854775807}}}\n":
            "state.stores.counts.ttl_ms: Input should be less than or equal to 3153600000000",
        f"state: {{dir: {blocked.parent}, stores: {{counts: {{}}}}}}\ninstance_id: a-file\n":
            f"state.dir: cannot write to {blocked}: File exists",
        "state: {stores: {counts: {}}}\nprocessing: {concurrency: 4}\n":
            "state stores and timers need processing.concurrency 1",
        "state: {timers: true}\nprocessing: {concurrency: 4}\n":
            "state stores and timers need processing.concurrency 1",
        "state: {stores: {__timers: {}}}\n": "state: store names starting with __ are the processor's own",
    }
    for section, expected in cases.items():
        code, lines = check(tmp_path, VALID + section, capsys)
        assert code == 2 and len(lines) == 1 and lines[0].startswith(expected), (section, lines)
    code, lines = check(tmp_path, VALID + f"state: {{dir: {tmp_path}/ok, stores: {{counts: {{ttl_ms: 1000}}}}}}\n", capsys)
    assert code == 0, lines


@pytest.fixture
def fresh_saga_module():
    """The saga transform's module imported afresh, and forgotten after (a process defines its
    sagas once: SAGAS is process-wide)."""
    yield
    from processor.saga import SAGAS  # noqa: PLC0415
    SAGAS.pop("check-transfer", None)
    sys.modules.pop("tests.saga_transform", None)


def test_check_says_what_a_saga_needs_of_the_state_section(tmp_path, capsys, fresh_saga_module):
    saga_app = VALID.replace("examples.enrich:transform", "tests.saga_transform:transform")
    code, lines = check(tmp_path, saga_app + f"state: {{dir: {tmp_path}/s}}\n", capsys)
    assert code == 2 and lines == [
        "state.stores: saga 'check-transfer' keeps its sagas in store 'sagas': declare it",
        "state.timers: saga 'check-transfer' needs timers: set it to true"], lines
    code, lines = check(tmp_path, saga_app + f"state: {{dir: {tmp_path}/s, timers: true, stores: {{sagas: {{}}}}}}\n",
                        capsys)
    assert code == 0, lines
