"""The relay's position and config, without a broker or a database."""

from __future__ import annotations

from threading import Event
from types import SimpleNamespace

import pytest

from processor.config import ConfigError, load_config
from processor.outbox.command import main
from processor.outbox.position import Position
from processor.outbox.settings import RelayConfig


def test_a_position_survives_its_encoding_and_moves_batch_by_batch():
    first = Position(None, "10:12:10")
    moved = first.after(41, 5).after(57, 3)
    assert Position.decode(moved.encode()) == moved == Position(None, "10:12:10", 57, 8)
    assert moved.next("12:15:13") == Position("10:12:10", "12:15:13", 0, 8)


def write(tmp_path, text: str):
    path = tmp_path / "relay.yaml"
    path.write_text(text)
    return path


BASE = "app_id: shop\nkafka: {bootstrap_servers: 'localhost:9092'}\n"


def test_the_route_names_the_row_type_not_an_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("ENV_NAME", "prod")
    config = load_config(write(tmp_path, BASE + "outbox:\n  dsn: postgresql://u:s3cret@db/shop\n"
                                                "  route: '${ENV_NAME}.events.${aggregatetype}'\n"),
                         RelayConfig)
    assert config.outbox.route == "prod.events.${aggregatetype}"
    assert config.progress_topic == "shop-outbox-progress" and config.transactional_id == "shop-outbox"
    assert "s3cret" in config.secrets()  # the DSN's password is redacted from the logs


@pytest.mark.parametrize("outbox, problem", [
    ("{}", "outbox.dsn: required key is missing"),
    ("{dsn: x, route: 'a.$${aggregateid}'}", "outbox.route: ${aggregateid} is not a column a route can name"),
    ("{dsn: x, table: 'Drop Table'}", "outbox.table: String should match pattern"),
    ("{dsn: x, batch_rows: 0}", "outbox.batch_rows: Input should be greater than or equal to 1"),
])
def test_bad_relay_configs_are_named(tmp_path, outbox, problem):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, BASE + f"outbox: {outbox}\n"), RelayConfig)
    assert any(str(p).startswith(problem) for p in caught.value.problems), caught.value.problems


def test_a_producer_override_exactly_once_cannot_live_with_is_refused(tmp_path, capsys):
    path = write(tmp_path, "app_id: shop\nkafka: {bootstrap_servers: 'localhost:9092', "
                           "producer: {enable.idempotence: false}}\noutbox: {dsn: x}\n")
    assert main(SimpleNamespace(config=path, create_table=False, check=False), Event()) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "config error: kafka.producer.enable.idempotence must stay True for exactly-once"]
