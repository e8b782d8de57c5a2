"""Schema service settings: secrets redacted, bad values refused at start-up with the key named."""

from __future__ import annotations

import os
import subprocess

import pytest

from schema_service.config import MigrationSettings, Settings, redact_url
from schema_service.errors import ConfigError
from servicekit.procs import BIN
from servicekit.settings import build


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:**********@db:5432/app"),
        (
            "postgresql://app@db/app?password=s3cret&sslmode=require",
            "postgresql://app@db/app?password=**********&sslmode=require",
        ),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("postgresql://app:@/app?host=/run/pg", "postgresql://app:**********@/app?host=/run/pg"),
    ],
)
def test_passwords_never_print(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "s3cret" not in repr(Settings(database_url=url))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"readiness_interval_s": 0},
            "Config 'readiness_interval_s' (--readiness-interval, env "
            "SCHEMA_SERVICE_READINESS_INTERVAL_S) must be greater than 0, got 0",
        ),
        ({"max_concurrent_rpcs": 0}, "Config 'max_concurrent_rpcs' (--max-concurrent-rpcs"),
        ({"port": 70000}, "Config 'port' (--port, env SCHEMA_SERVICE_PORT) must be at most 65535, got 70000"),
        (
            {"database_url": "mysql://x"},
            "Config 'database_url' (--database-url, env DATABASE_URL) must start with postgresql://",
        ),
        (
            {"max_message_bytes": 1024},
            "Config 'metrics.max_batch_bytes' (env SCHEMA_SERVICE_METRICS_MAX_BATCH_BYTES) "
            "is 16777216: it must be below the transport limit max_message_bytes (1024)",
        ),
    ],
)
def test_bad_values_are_refused_naming_the_key(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        build(Settings, **values)
    assert str(error.value).startswith(message), str(error.value)
    assert "mysql://x" not in str(error.value)  # a URL is never echoed: it may hold a password


def test_flags_win_over_the_environment_over_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "SCHEMA_SERVICE_PORT", "METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    defaults = build(Settings)
    assert (defaults.database_url, defaults.port, defaults.migration.lock_timeout_s) == (None, 50052, 5.0)
    monkeypatch.setenv("SCHEMA_SERVICE_PORT", "6000")
    monkeypatch.setenv("SCHEMA_SERVICE_MIGRATION_LOCK_TIMEOUT_S", "2")
    monkeypatch.setenv("SCHEMA_SERVICE_METRICS_RETENTION_DAYS", "7")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cret@db/app")
    settings = build(Settings, migration=build(MigrationSettings))
    assert (settings.port, settings.migration.lock_timeout_s, settings.metrics.retention_days) == (6000, 2.0, 7)
    assert settings.dsn == "postgresql://app:s3cret@db/app" and "s3cret" not in repr(settings)
    assert build(Settings, port="7000").port == 7000
    with pytest.raises(
        ConfigError,
        match=r"Config 'lock_timeout_s' \(--lock-timeout, env "
        r"SCHEMA_SERVICE_MIGRATION_LOCK_TIMEOUT_S\) must be greater than 0",
    ):
        build(MigrationSettings, lock_timeout_s="0")


def test_malformed_port_variable_is_a_usage_error() -> None:
    env = {**os.environ, "SCHEMA_SERVICE_PORT": "fifty"}
    result = subprocess.run(
        [str(BIN / "schema-service"), "serve", "--help"], env=env, capture_output=True, text=True, timeout=60
    )
    started = subprocess.run(
        [str(BIN / "schema-service"), "serve", "--database-url", "postgresql://x@127.0.0.1:1/x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert started.returncode == 2
    assert "--port" in started.stderr and "fifty" in started.stderr
