"""The relay's config file: Kafka as for `processor run`, the outbox table, metrics, logging."""

from __future__ import annotations

import string
from typing import Annotated, ClassVar

from pydantic import Field, SecretStr, field_validator

from processor.config import CommandConfig, Strict, TopicName

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


class RelayConfig(CommandConfig):
    TEMPLATE_NAMES: ClassVar[frozenset[str]] = frozenset({"aggregatetype"})  # the route's, not variables

    outbox: OutboxConfig

    @property
    def transactional_id(self) -> str:
        """The same for every relay of this outbox: a new one fences the one before."""
        return f"{self.app_id}-outbox"

    @property
    def progress_topic(self) -> str:
        return self.outbox.progress_topic or f"{self.app_id}-outbox-progress"

    def own_secrets(self) -> list[SecretStr | None]:
        """The DSN, and its password alone (a library's message may quote it)."""
        from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415 - only the relay needs psycopg

        try:
            password = conninfo_to_dict(self.outbox.dsn.get_secret_value()).get("password")
        except Exception:  # noqa: BLE001 - a DSN libpq cannot parse: the connection will say so
            password = None
        return [self.outbox.dsn, SecretStr(str(password)) if password else None]
