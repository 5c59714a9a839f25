"""The YAML config file: pydantic models, `${VAR}` substitution and PROCESSOR__* overrides.

`load_config` turns every problem into a `ConfigError` holding one `Problem` per field, so
`processor check` can print one readable line each.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from processor.configfile import ConfigFileError, read_yaml

ENV_PREFIX = "PROCESSOR__"
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
RawValue = str | int | float | bool
TopicName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")]


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodecConfig(Strict):
    format: Literal["bytes", "string", "json", "avro"] = "bytes"
    schema_path: Path | None = Field(default=None, alias="schema")
    wire_format: Literal["schemaless", "confluent"] = "schemaless"
    schema_id: int | None = Field(default=None, ge=0, le=2**31 - 1)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _avro_needs_schema(self) -> CodecConfig:
        if self.format == "avro" and self.schema_path is None:
            raise ValueError("format avro needs a schema (a path to an .avsc file)")
        if self.format != "avro" and self.schema_path is not None:
            raise ValueError(f"schema is only for format avro, not {self.format}")
        if self.wire_format == "confluent" and self.schema_id is None:
            raise ValueError("wire_format confluent needs schema_id")
        return self


class SaslConfig(Strict):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    username: str
    password: SecretStr


class SslConfig(Strict):
    ca_location: Path | None = None
    certificate_location: Path | None = None
    key_location: Path | None = None
    key_password: SecretStr | None = None


# what the group coordinator decides under the consumer protocol: librdkafka refuses them
BROKER_SIDE_WITH_CONSUMER_PROTOCOL = {"session.timeout.ms", "heartbeat.interval.ms",
                                      "partition.assignment.strategy", "group.protocol.type"}


class KafkaConfig(Strict):
    bootstrap_servers: str = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl: SaslConfig | None = None
    ssl: SslConfig | None = None
    consumer: dict[str, RawValue] = {}
    producer: dict[str, RawValue] = {}
    unreachable_timeout_ms: int = Field(default=120_000, ge=1000)
    group_protocol: Literal["classic", "consumer"] = "classic"
    # static membership (group.instance.id = instance_id): on by default with the classic
    # protocol, off with the consumer protocol (see kafka.py for why)
    static_membership: bool | None = None

    @property
    def static(self) -> bool:
        return self.group_protocol == "classic" if self.static_membership is None else self.static_membership

    @model_validator(mode="after")
    def _sasl_when_needed(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and self.sasl is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs a sasl section")
        return self

    @model_validator(mode="after")
    def _group_settings_fit_the_protocol(self) -> KafkaConfig:
        for name, instead in (("group.protocol", "kafka.group_protocol"),
                              ("group.instance.id", "instance_id and kafka.static_membership")):
            if name in self.consumer:
                raise ValueError(f"set {instead} rather than kafka.consumer.{name}")
        if self.group_protocol == "consumer":
            refused = sorted(set(self.consumer) & BROKER_SIDE_WITH_CONSUMER_PROTOCOL)
            if refused:
                raise ValueError(f"kafka.consumer.{refused[0]} cannot be set with group_protocol "
                                 f"consumer: the broker's group settings decide it (KIP-848)")
        return self


class InputConfig(Strict):
    topics: list[TopicName] = Field(min_length=1)
    group_id: str | None = None
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    key: CodecConfig = CodecConfig()
    value: CodecConfig = CodecConfig()


class OutputConfig(Strict):
    topic: TopicName
    key: CodecConfig = CodecConfig()
    value: CodecConfig = CodecConfig()


class DeadLetterConfig(Strict):
    topic: TopicName
    stacktrace_max_bytes: int = Field(default=8192, ge=0)


class ProcessingConfig(Strict):
    commit_interval_ms: int = Field(default=100, gt=0)
    max_batch_records: int = Field(default=100_000, gt=0)
    transaction_timeout_ms: int = Field(default=60000, ge=1000, le=2**31 - 1)  # librdkafka's int
    concurrency: int = Field(default=1, ge=1, le=256)
    record_deadline_ms: int = Field(default=15000, ge=1)
    retry_backoff_ms: int = Field(default=1000, ge=0)

    @model_validator(mode="after")
    def _well_within_timeout(self) -> ProcessingConfig:
        if self.commit_interval_ms * 2 > self.transaction_timeout_ms:
            raise ValueError("commit_interval_ms must be at most half of transaction_timeout_ms")
        if self.record_deadline_ms * 2 > self.transaction_timeout_ms:
            raise ValueError("record_deadline_ms must be at most half of transaction_timeout_ms")
        return self


class RetryConfig(Strict):
    attempts: int = Field(default=5, ge=1)
    base_delay_ms: int = Field(default=100, ge=0)
    max_delay_ms: int = Field(default=5000, ge=0)
    transient: list[Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*[.:][A-Za-z_]\w*$")]] = []


class BreakerConfig(Strict):
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    slow_call_ms: int = Field(default=10000, gt=0)
    slow_call_rate: float = Field(default=1.0, gt=0, le=1)
    window: int = Field(default=20, ge=1)
    minimum_calls: int = Field(default=10, ge=1)
    open_ms: int = Field(default=10000, gt=0)
    half_open_calls: int = Field(default=3, ge=1)


class DependencyConfig(Strict):
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    bulkhead: int | None = Field(default=None, ge=1, description="max concurrent calls")
    rate_limit: float | None = Field(default=None, gt=0, description="calls per second")
    rate_burst: int = Field(default=1, ge=1)


MAX_TTL_MS = 100 * 365 * 86_400_000  # 100 years: expiry times stay far inside their 8 bytes


class StoreConfig(Strict):
    ttl_ms: int | None = Field(default=None, gt=0, le=MAX_TTL_MS,
                               description="an entry expires this long after its last write (leave it out: never)")


class StateConfig(Strict):
    dir: Path = Path("./state")
    replication_factor: int = Field(default=-1, ge=-1, description="of the changelog topics; -1: the broker's default")
    stores: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")], StoreConfig] = {}
    timers: bool = Field(default=False, description="durable timers (a changelog topic of their own)")

    @model_validator(mode="after")
    def _own_names(self) -> StateConfig:
        reserved = sorted(name for name in self.stores if name.startswith("__"))
        if reserved:
            raise ValueError(f"store names starting with __ are the processor's own: {reserved[0]!r}")
        return self


class MetricsConfig(Strict):
    enabled: bool = True
    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)


class LoggingConfig(Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class CommandConfig(BaseSettings):
    """What the config file of every command has (`run`, `outbox`): names, Kafka, metrics,
    logs; `PROCESSOR__*` environment overrides win over the file."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      extra="forbid", case_sensitive=False, frozen=True)

    app_id: str = Field(pattern=r"^[A-Za-z0-9._-]+$", max_length=200)
    instance_id: str = Field(default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname(),
                             pattern=r"^[A-Za-z0-9._-]+$")
    kafka: KafkaConfig
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):
        return (env_settings, init_settings)  # PROCESSOR__* overrides win over the file

    def secrets(self) -> list[str]:
        """The secret values of this config, for redaction wherever text leaves the process."""
        found = [self.kafka.sasl.password if self.kafka.sasl else None,
                 self.kafka.ssl.key_password if self.kafka.ssl else None, *self.own_secrets()]
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]

    def own_secrets(self) -> list[SecretStr | None]:
        return []


class Config(CommandConfig):
    input: InputConfig
    output: OutputConfig
    dead_letter: DeadLetterConfig
    transform: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    processing: ProcessingConfig = ProcessingConfig()
    resilience: dict[str, DependencyConfig] = {}
    state: StateConfig = StateConfig()

    @model_validator(mode="after")
    def _state_is_sequential(self) -> Config:
        if (self.state.stores or self.state.timers) and self.processing.concurrency > 1:
            raise ValueError("state stores and timers need processing.concurrency 1 (records of a "
                             "partition must see each other's writes in order)")
        return self

    @property
    def group_id(self) -> str:
        return self.input.group_id or self.app_id

    @property
    def transactional_id(self) -> str:
        return f"{self.app_id}-{self.instance_id}"


def substitute_env(node: Any, env: dict[str, str], path: str, problems: list[Problem],
                   kept: frozenset[str] = frozenset()) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string of the parsed YAML; `$$` is `$`.
    `${NAME}` for a name in `kept` stays as written (a template the config itself fills)."""
    if isinstance(node, dict):
        return {k: substitute_env(v, env, f"{path}.{k}" if path else str(k), problems, kept)
                for k, v in node.items()}
    if isinstance(node, list):
        return [substitute_env(v, env, f"{path}[{i}]", problems, kept) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in kept and default is None:
            return match.group(0)
        if name in env:
            return env[name]
        if default is not None:
            return default
        problems.append(Problem(path, f"environment variable {name} is not set"))
        return ""

    return _VAR.sub(replace, node)


def _describe(error: dict) -> Problem:
    path = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return Problem(path, "unknown key")
    if error["type"] == "missing":
        return Problem(path, "required key is missing")
    reason = error["msg"].removeprefix("Value error, ")
    return Problem(path, reason)


def load_config(path: str | Path, model: type[CommandConfig] = Config) -> Any:
    """The config file at `path` as `model` (the processor's `Config`, or the outbox relay's)."""
    path = Path(path)
    try:
        raw = read_yaml(path)
    except ConfigFileError as exc:
        raise ConfigError([Problem("", str(exc))]) from None
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", f"{path}: the top level must be a mapping of keys")])
    problems: list[Problem] = []
    data = substitute_env(raw, dict(os.environ), "", problems, getattr(model, "TEMPLATE_NAMES", frozenset()))
    if problems:
        raise ConfigError(problems)
    try:
        return model(**data)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors()]) from None
    except SettingsError as exc:  # a PROCESSOR__* variable that is not valid JSON, say
        raise ConfigError([Problem("", f"environment override {_settings_reason(exc)}")]) from None


def _settings_reason(exc: SettingsError) -> str:
    """`PROCESSOR__INPUT__*: not valid JSON (...)` out of pydantic-settings' message."""
    field = re.search(r'field "(\w+)"', str(exc))
    where = f"{ENV_PREFIX}{field.group(1).upper()}__*" if field else ENV_PREFIX + "*"
    cause = exc.__cause__
    return f"{where}: not valid JSON ({cause})" if cause is not None else f"{where}: {exc}"
