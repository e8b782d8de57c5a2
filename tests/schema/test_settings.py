"""Schema service settings: secrets redacted, bad values refused at start-up with the key named."""

from __future__ import annotations

import os
import subprocess

import pytest

from schema_service.config import ConfigError, Settings, redact_url
from servicekit.procs import BIN


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://app:s3cret@db:5432/app", "postgresql://app:**********@db:5432/app"),
        ("postgresql://app@db/app?password=s3cret&sslmode=require", "postgresql://app@db/app?password=**********&sslmode=require"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
        ("postgresql://app:@/app?host=/run/pg", "postgresql://app:**********@/app?host=/run/pg"),
    ],
)
def test_passwords_never_print(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "s3cret" not in repr(Settings(database_url=url))


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        (Settings(readiness_interval_s=0), "readiness_interval_s"),
        (Settings(max_concurrent_rpcs=0), "max_concurrent_rpcs"),
        (Settings(port=70000), "port"),
        (Settings(database_url="mysql://x"), "database_url"),
    ],
)
def test_bad_values_are_refused_naming_the_key(settings: Settings, key: str) -> None:
    with pytest.raises(ConfigError, match=f"'{key}'"):
        settings.validate()


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
