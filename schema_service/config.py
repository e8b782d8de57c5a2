"""Settings of the schema service: command-line flags, then the environment, then the defaults (pydantic-settings).

Three frozen models, each default written once here: Settings (`serve`), MigrationSettings
(`SCHEMA_SERVICE_MIGRATION_*`, shared by `serve` and the migration commands) and MetricsSettings
(`SCHEMA_SERVICE_METRICS_*`). Validated at start-up: a bad value stops it with exit code 2 and
one line naming the setting, its flag and its variable. Database URLs are SecretStr: they print
as `**********` (redact_url shows one with only its password hidden).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AfterValidator, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.addresses import PORT_RANGE, host_port_problem
from servicekit.concurrency import Limits
from servicekit.security import Security
from servicekit.settings import ServiceSettings, invalid, setting

PACKAGE_MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Layouts of migration folders (schema_service.migrate.layouts; `--format`).
FileFormat = Literal["native", "dbmate", "golang-migrate", "flyway"]


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


def _postgres_url(url: SecretStr | None) -> SecretStr | None:
    if url is None:
        return url
    if not url.get_secret_value().startswith(("postgres://", "postgresql://")):
        raise ValueError("must start with postgresql:// or postgres://")
    problem = address_problem(url.get_secret_value())
    if problem:
        raise ValueError(problem)
    return url


def address_problem(url: str) -> str | None:
    """What is wrong with the servers a URL names (each host of a multi-host URL, and `port=`), naming the host
    but never the password: caught here, a port `:abc` or `:99999` or a bad IPv6 address is one line at start-up
    instead of a traceback from deep inside asyncpg (or, under `serve`, a readiness that never comes)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # urllib's words: "Invalid IPv6 URL", "'zz::1' does not appear to be an IPv4 ..."
        return f"has a malformed host: {exc}"
    ports = [port for value in parse_qs(parts.query).get("port", []) for port in value.split(",")]
    for host in filter(None, parts.netloc.rpartition("@")[2].split(",")):
        problem = host_port_problem(host)
        if problem:
            return f"host {problem}"
    bad = [port for port in ports if not (port.isdigit() and 0 < int(port) < 65536)]
    return f"port={bad[0]}: {PORT_RANGE}" if bad else None


def _directory(path: Path) -> Path:
    if not path.is_dir():
        raise ValueError(f"is not a directory: {path}")
    return path


PostgresUrl = Annotated[SecretStr | None, AfterValidator(_postgres_url)]
Seconds = Annotated[float, Field(gt=0)]


class MigrationSettings(ServiceSettings):
    """How migrations run (see "Migrations"); the migration commands and `serve` share them."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_SERVICE_MIGRATION_")

    migrations_dir: Annotated[Path, AfterValidator(_directory)] = setting(
        PACKAGE_MIGRATIONS,
        flag="--migrations-dir",
        env="SCHEMA_SERVICE_MIGRATIONS_DIR",
        metavar="DIR",
        shown="the packaged schema_service/migrations",
    )
    """Folder of NNN_name.sql migrations, or of another tool's files (--format, env
    SCHEMA_SERVICE_MIGRATIONS_FORMAT)."""
    file_format: FileFormat = setting(
        "native", flag="--format", env="SCHEMA_SERVICE_MIGRATIONS_FORMAT", metavar="FORMAT"
    )
    """Layout of the migration files: native, or dbmate's, golang-migrate's or Flyway's as they are."""
    migrate_on_start: bool = setting(True, flag="--no-migrate", const=False)
    """`serve` applies pending migrations at start; --no-migrate leaves it to a Job, and readiness then waits until
    the schema reaches the newest packaged migration."""
    scratch_url: PostgresUrl = setting(None, flag="--scratch-url", env="SCHEMA_SERVICE_SCRATCH_URL", metavar="URL")
    """Server where verify and VerifySchema build their scratch database when the service's own role may not
    create one."""
    lock_timeout_s: Seconds = setting(5.0, flag="--lock-timeout", metavar="S")
    """lock_timeout of each migration statement."""
    statement_timeout_s: Seconds = setting(600.0, flag="--statement-timeout", metavar="S")
    """statement_timeout of each migration statement."""
    lock_wait_s: Seconds = setting(300.0, flag="--lock-wait", metavar="S")
    """How long to wait for the migration lock another replica holds."""
    allow_out_of_order: bool = setting(False, flag="--allow-out-of-order", const=True)
    """Apply files older than the applied version."""
    wait_for_database: bool = setting(False, flag="--wait-for-database", const=True)
    """migrate: while the database cannot be reached yet (nothing listens, the name does not resolve, PostgreSQL
    is starting up), retry within --lock-wait, printing a line each time, instead of exiting 2 at once; the
    manifests' init container passes it, so a pod starting beside its PostgreSQL waits instead of crash-looping."""
    lock_retries: Annotated[int, Field(ge=0)] = 3
    """A statement that hits lock_timeout is retried this many times, waiting lock_retry_backoff_s, then twice that,
    ..."""
    lock_retry_backoff_s: Seconds = 0.5
    """The first wait before a lock_timeout retry."""
    lock_poll_s: Seconds = 0.1
    """How often a waiting replica polls pg_try_advisory_lock."""

    @property
    def scratch_dsn(self) -> str | None:
        return self.scratch_url.get_secret_value() if self.scratch_url else None


class MetricsSettings(ServiceSettings):
    """Limits and housekeeping of the metrics store (see "Metrics")."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_SERVICE_METRICS_")

    max_batch_metrics: Annotated[int, Field(gt=0)] = 10_000
    """Metrics per batch."""
    max_batch_bytes: Annotated[int, Field(gt=0)] = 16 * 1024 * 1024
    """Bytes per batch; below the transport's message limit so an oversized batch gets a named INVALID_ARGUMENT,
    not a transport error."""
    max_in_flight_batches: Annotated[int, Field(gt=0)] = 16
    """Batches written at once before RESOURCE_EXHAUSTED."""
    admission_wait_s: Seconds = 0.2
    """How long a batch may wait for a slot."""
    stream_window: Annotated[int, Field(gt=0)] = 8
    """Unacknowledged batches per StreamMetrics stream."""
    retention_days: Annotated[int, Field(gt=0)] = 30
    """Partitions older than this are dropped."""
    max_time_ahead_s: Seconds = 86_400.0
    """How far in the future a metric's time may lie."""
    partitions_ahead_days: Annotated[int, Field(gt=0)] = 2
    """Daily partitions created ahead."""
    idempotency_window_s: Seconds = 7 * 86_400.0
    """How long request ids are remembered."""
    housekeeping_interval_s: Seconds = 60.0
    """Partitions, retention, baselines and anomalies run this often."""
    baseline_window_s: Seconds = 86_400.0
    """Window of the rolling baselines."""
    baseline_min_samples: Annotated[int, Field(gt=0)] = 30
    """Samples needed before a baseline is used."""
    anomaly_z_score: Seconds = 4.0
    """Distance from the mean, in standard deviations, that makes an anomaly."""
    query_timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    """Statement timeout of one QueryMetrics, ListBaselines or ListAnomalies (at most 300 s); a longer query is
    cancelled by PostgreSQL (UNAVAILABLE, DATABASE_CONFLICT)."""
    max_abs_value: Annotated[float, Field(gt=0, le=1e150)] = 1e100
    """Largest magnitude of a value; larger ones are refused naming the field. Sums, averages and the squares behind
    standard deviations of such values stay below float8's 1.8e308, so no aggregate or baseline overflows (SQLSTATE
    22003); at most 1e150, whose square still fits."""


class UsageSettings(ServiceSettings):
    """Limits and housekeeping of the usage ledger (see docs "Usage ledger")."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_SERVICE_USAGE_")

    max_batch_records: Annotated[int, Field(gt=0, le=10_000)] = 1_000
    """Records per RecordUsage batch."""
    max_time_ahead_s: Seconds = 3_600.0
    """How far in the future a record's start_time may lie."""
    retention_months: Annotated[int, Field(gt=0)] = 25
    """Monthly partitions that ended more than this many months ago are dropped (two years and a month by default:
    the ledger is what invoices are checked against)."""
    partitions_ahead_months: Annotated[int, Field(ge=0)] = 1
    """Monthly partitions created ahead."""
    query_timeout_s: Seconds = 10.0
    """Statement timeout of one QueryUsage; a longer query is cancelled (UNAVAILABLE, DATABASE_CONFLICT)."""
    max_query_days: Annotated[int, Field(gt=0)] = 400
    """Longest time range one QueryUsage may cover."""


# A WriteMetrics call may hold up to max_message_bytes (17 MiB) while it arrives: 8 per caller is 136 MiB.
LIMITS = Limits(max_calls=96, max_calls_per_caller=8, max_streams=32, max_streams_per_caller=4)
SchemaSecurity = Security.with_limits("SchemaSecurity", LIMITS)


class Settings(ServiceSettings):
    """Everything `schema-service serve` needs."""

    model_config = SettingsConfigDict(env_prefix="SCHEMA_SERVICE_")

    database_url: PostgresUrl = setting(None, flag="--database-url", env="DATABASE_URL", metavar="URL")
    """PostgreSQL URL; without one, a command stops with exit 2 unless given --embedded."""
    embedded: bool = setting(False, flag="--embedded", const=True)
    """Without a database URL, use the embedded PostgreSQL under --data-dir, started on demand (make run passes it).
    Without either, every command but lint stops with exit 2 rather than work on a throwaway database."""
    data_dir: Path = setting(Path(".data/postgres"), flag="--data-dir", metavar="DIR")
    """Data folder of the embedded PostgreSQL (with --embedded)."""
    embedded_database: str = "app"
    """The database the service uses inside the embedded PostgreSQL."""
    host: str = setting("[::]", flag="--host")
    """Listen address."""
    port: int = setting(50052, flag="--port", metavar="PORT", ge=0, le=65535)
    """Listen port (0 picks one)."""
    metrics_port: int = setting(0, flag="--metrics-port", env="METRICS_PORT", metavar="PORT", ge=0, le=65535)
    """Prometheus /metrics port on all interfaces (the manifests use 9464); 0 turns it off."""
    shutdown_grace_s: float = setting(20.0, flag="--shutdown-grace", metavar="S", ge=0)
    """Seconds in-flight calls get after SIGTERM."""
    readiness_interval_s: Seconds = setting(2.0, flag="--readiness-interval", metavar="S")
    """Seconds between the database checks behind readiness."""
    max_message_bytes: Annotated[int, Field(gt=0)] = setting(17 * 1024 * 1024, flag="--max-message-bytes", metavar="N")
    """Largest gRPC message in or out: a full batch (SCHEMA_SERVICE_METRICS_MAX_BATCH_BYTES, 16 MiB) and 1 MiB to
    spare; larger is refused unread."""
    max_concurrent_rpcs: Annotated[int, Field(gt=0)] = setting(128, flag="--max-concurrent-rpcs", metavar="N")
    """gRPC's own cap on calls in progress (grpc.aio's maximum_concurrent_rpcs), Health and reflection included;
    past it gRPC refuses with RESOURCE_EXHAUSTED before reading a message. Callers' calls meet --max-calls first."""
    migration: MigrationSettings = Field(default_factory=MigrationSettings)
    """SCHEMA_SERVICE_MIGRATION_* (below)."""
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    """SCHEMA_SERVICE_METRICS_* (below)."""
    usage: UsageSettings = Field(default_factory=UsageSettings)
    """SCHEMA_SERVICE_USAGE_* (below)."""
    security: Security = Field(default_factory=SchemaSecurity)
    """TLS, callers and the rest of the security flags both services share (servicekit.security)."""

    @model_validator(mode="after")
    def _batches_fit_in_a_message(self) -> Settings:
        if self.metrics.max_batch_bytes >= self.max_message_bytes:
            raise invalid(
                "metrics.max_batch_bytes",
                f"is {self.metrics.max_batch_bytes}: it must be below the transport limit max_message_bytes "
                f"({self.max_message_bytes})",
            )
        return self

    @property
    def dsn(self) -> str | None:
        return self.database_url.get_secret_value() if self.database_url else None
