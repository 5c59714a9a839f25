"""The relay's config file: Kafka as for `processor run`, the outbox table, metrics, logging."""

from __future__ import annotations

import os
import socket
import string
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from processor.config import (ENV_PREFIX, KafkaConfig, LoggingConfig, MetricsConfig, Strict,
                              TopicName)

Identifier = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$")]


class OutboxConfig(Strict):
    dsn: SecretStr = Field(description="libpq connection string or URL of the database")
    table: Identifier = "outbox"
    route: str = Field(default="outbox.${aggregatetype}",
                       description="the topic of a row; ${aggregatetype} is the row's")
    progress_topic: TopicName | None = None  # <app_id>-outbox-progress
    batch_rows: int = Field(default=5000, ge=1, le=100_000, description="rows per Kafka transaction")
    poll_interval_ms: int = Field(default=100, ge=1, le=60_000)
    database_unreachable_timeout_ms: int = Field(default=60_000, ge=1000)
    transaction_timeout_ms: int = Field(default=60_000, ge=1000, le=2**31 - 1)
    replication_factor: int = Field(default=-1, ge=-1, description="of the progress topic")

    @field_validator("route")
    @classmethod
    def _only_aggregatetype(cls, route: str) -> str:
        template = string.Template(route)
        if not template.is_valid():
            raise ValueError("not a valid template: write ${aggregatetype} for the row's type")
        unknown = sorted(set(template.get_identifiers()) - {"aggregatetype"})
        if unknown:
            raise ValueError(f"${{{unknown[0]}}} is not a column a route can name (only ${{aggregatetype}})")
        return route


class RelayConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      extra="forbid", case_sensitive=False, frozen=True)

    TEMPLATE_NAMES: ClassVar[frozenset[str]] = frozenset({"aggregatetype"})  # the route's, not variables

    app_id: str = Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=200)
    instance_id: str = Field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname(),
                             pattern=r"^[A-Za-z0-9._-]+$")
    kafka: KafkaConfig
    outbox: OutboxConfig
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (env_settings, init_settings)  # PROCESSOR__* overrides win over the file

    @property
    def transactional_id(self) -> str:
        """The same for every relay of this outbox: a new one fences the one before."""
        return f"{self.app_id}-outbox"

    @property
    def progress_topic(self) -> str:
        return self.outbox.progress_topic or f"{self.app_id}-outbox-progress"

    def secrets(self) -> list[str]:
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - only the relay needs psycopg

        try:
            password = conninfo_to_dict(self.outbox.dsn.get_secret_value()).get("password")
        except Exception:  # noqa: BLE001 - a DSN libpq cannot parse: the connection will say so
            password = None
        found = [self.outbox.dsn, SecretStr(str(password)) if password else None, self.kafka.sasl.password if self.kafka.sasl else None,
                 self.kafka.ssl.key_password if self.kafka.ssl else None]
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]
