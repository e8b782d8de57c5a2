"""Settings of the schema service: command-line flags, then environment, then defaults.

Validated at start-up; the database password prints as `**********`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from servicekit.security import Security

DEFAULT_PORT = 50052
# Layouts of migration folders (schema_service.migrate.layouts; `--format`).
FileFormat = Literal["native", "dbmate", "golang-migrate", "flyway"]
PACKAGE_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class ConfigError(ValueError):
    """A setting is missing or invalid; the message names it."""


def redact_url(url: str) -> str:
    """The URL with its password (in the authority or a `password=` parameter) replaced by `**********`."""
    parts = urlsplit(url)
    if parts.password is not None:
        userinfo, host = parts.netloc.rsplit("@", 1)
        parts = parts._replace(netloc=f"{userinfo.split(':', 1)[0]}:**********@{host}")
    if parts.query:
        query = [(k, "**********" if k.lower() == "password" else v) for k, v in parse_qsl(parts.query, True)]
        parts = parts._replace(query=urlencode(query, safe="*/"))
    return urlunsplit(parts)


@dataclass(frozen=True)
class MigrationSettings:
    """How migrations run (see README "Migrations").

    The timeouts, waits and retries can be set from the environment as
    `SCHEMA_SERVICE_MIGRATION_<FIELD>` (upper case, e.g. SCHEMA_SERVICE_MIGRATION_LOCK_TIMEOUT_S=2).
    """

    migrations_dir: Path = PACKAGE_MIGRATIONS
    migrate_on_start: bool = True
    # Where VerifySchema builds its scratch database when the service's own role may not create one.
    scratch_url: str | None = field(default=None, repr=False)
    lock_timeout_s: float = field(default_factory=lambda: _migration_env("lock_timeout_s", 5.0))
    statement_timeout_s: float = field(default_factory=lambda: _migration_env("statement_timeout_s", 600.0))
    lock_wait_s: float = field(default_factory=lambda: _migration_env("lock_wait_s", 300.0))
    allow_out_of_order: bool = False
    # A lock_timeout is retried this many times, waiting lock_retry_backoff_s, then twice that, ...
    lock_retries: int = field(default_factory=lambda: int(_migration_env("lock_retries", 3, minimum=0)))
    lock_retry_backoff_s: float = field(default_factory=lambda: _migration_env("lock_retry_backoff_s", 0.5))
    # How often a waiting replica polls pg_try_advisory_lock.
    lock_poll_s: float = field(default_factory=lambda: _migration_env("lock_poll_s", 0.1))
    # The files' layout: native, dbmate, golang-migrate or flyway (`--format`; schema_service.migrate.layouts).
    file_format: FileFormat = "native"


def _migration_env(name: str, default: float, *, minimum: float = 1e-9) -> float:
    """`SCHEMA_SERVICE_MIGRATION_<NAME>` as a number, else the default; a bad value is a ConfigError."""
    key = f"SCHEMA_SERVICE_MIGRATION_{name.upper()}"
    raw = env_str(key)
    if raw is None:
        return default
    try:
        value = int(raw) if isinstance(default, int) else float(raw)
    except ValueError:
        raise ConfigError(f"Config '{key}' must be a {type(default).__name__}, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"Config '{key}' must be " + (">= 0" if minimum == 0 else "> 0"))
    return value


@dataclass(frozen=True)
class MetricsSettings:
    """Limits and housekeeping of the metrics store (see README "Metrics").

    Each field can be set from the environment as `SCHEMA_SERVICE_METRICS_<FIELD>` (upper case).
    """

    max_batch_metrics: int = 10_000
    # Below the transport's 64 MiB so an oversized batch gets a named INVALID_ARGUMENT, not a transport error.
    max_batch_bytes: int = 16 * 1024 * 1024
    max_in_flight_batches: int = 16
    admission_wait_s: float = 0.2
    stream_window: int = 8
    retention_days: int = 30
    max_time_ahead_s: float = 86_400.0
    partitions_ahead_days: int = 2
    idempotency_window_s: float = 7 * 86_400.0
    housekeeping_interval_s: float = 60.0
    baseline_window_s: float = 86_400.0
    baseline_min_samples: int = 30
    anomaly_z_score: float = 4.0

    @classmethod
    def from_env(cls) -> MetricsSettings:
        """Defaults overridden by `SCHEMA_SERVICE_METRICS_*` variables; a malformed value is a ConfigError."""
        values: dict[str, int | float] = {}
        for f in fields(cls):
            raw = env_str(f"SCHEMA_SERVICE_METRICS_{f.name.upper()}")
            if raw is None:
                continue
            try:
                values[f.name] = int(raw) if f.type == "int" else float(raw)
            except ValueError:
                raise ConfigError(f"Config 'SCHEMA_SERVICE_METRICS_{f.name.upper()}' must be a {f.type}") from None
        return cls(**values)  # type: ignore[arg-type]

    def validate(self, max_message_bytes: int) -> MetricsSettings:
        """Every limit positive, and a batch's byte limit below the transport's message limit."""
        for f in fields(self):
            if getattr(self, f.name) <= 0:
                raise ConfigError(f"Config 'metrics.{f.name}' must be > 0")
        if self.max_batch_bytes >= max_message_bytes:
            raise ConfigError(
                f"Config 'metrics.max_batch_bytes' ({self.max_batch_bytes}) must be below "
                f"the transport limit max_message_bytes ({max_message_bytes})"
            )
        return self


@dataclass(frozen=True)
class Settings:
    """Everything `schema-service serve` needs."""

    database_url: str | None = field(default=None, repr=False)
    data_dir: Path = Path(".data/postgres")
    embedded_database: str = "app"
    host: str = "[::]"
    port: int = DEFAULT_PORT
    metrics_port: int = 0  # Prometheus /metrics; 0: not served
    shutdown_grace_s: float = 20.0
    readiness_interval_s: float = 2.0
    log_level: str = "INFO"
    # Largest gRPC message: a full batch (max_batch_bytes, 16 MiB) and 1 MiB to spare; larger is refused unread.
    max_message_bytes: int = 17 * 1024 * 1024
    # Bounds what concurrent large requests can hold in memory (each up to max_message_bytes).
    max_concurrent_rpcs: int = 128
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings.from_env)
    security: Security = field(default_factory=Security)

    def __repr__(self) -> str:
        url = redact_url(self.database_url) if self.database_url else None
        return f"Settings(database_url={url!r}, data_dir={str(self.data_dir)!r}, port={self.port})"

    def validate(self) -> Settings:
        for name in ("port", "metrics_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"Config '{name}' must be 0-65535, got {getattr(self, name)}")
        if self.database_url is not None and not self.database_url.startswith(("postgres://", "postgresql://")):
            raise ConfigError("Config 'database_url' must start with postgresql:// or postgres://")
        if not self.migration.migrations_dir.is_dir():
            raise ConfigError(f"Config 'migrations_dir' is not a directory: {self.migration.migrations_dir}")
        if self.shutdown_grace_s < 0:
            raise ConfigError("Config 'shutdown_grace_s' must be >= 0")
        if self.readiness_interval_s <= 0:
            raise ConfigError(f"Config 'readiness_interval_s' must be > 0, got {self.readiness_interval_s}")
        if self.max_concurrent_rpcs <= 0:
            raise ConfigError(f"Config 'max_concurrent_rpcs' must be > 0, got {self.max_concurrent_rpcs}")
        scratch = self.migration.scratch_url
        if scratch is not None and not scratch.startswith(("postgres://", "postgresql://")):
            raise ConfigError("Config 'scratch_url' must start with postgresql:// or postgres://")
        self.metrics.validate(self.max_message_bytes)
        return self


def env_str(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None
