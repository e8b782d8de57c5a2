"""docs/configuration.md is generated from the settings models: it must match them, and the check can fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
GENERATOR = [sys.executable, str(ROOT / "scripts" / "gen_config_docs.py")]


def test_the_reference_matches_the_models() -> None:
    checked = subprocess.run([*GENERATOR, "--check"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert checked.returncode == 0, checked.stderr


def test_a_stale_reference_fails_the_check(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert "| `failover.breaker_failures` | integer (≥ 0) | 5 |" in current
    stale.write_text(
        current.replace(
            "| `failover.breaker_failures` | integer (≥ 0) | 5 |", "| `failover.breaker_failures` | integer (≥ 0) | 3 |"
        )
    )
    checked = subprocess.run([*GENERATOR, "--check", "--path", str(stale)], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1
    assert "out of date: run python scripts/gen_config_docs.py" in checked.stderr and "+| `failover." in checked.stderr


def test_every_key_flag_and_variable_is_in_the_reference() -> None:
    from gateway_service.config import ServeSettings
    from schema_service.config import MetricsSettings, MigrationSettings, Settings, UsageSettings
    from servicekit.security import Security
    from servicekit.settings import env_name, extra

    text = (ROOT / "docs" / "configuration.md").read_text()
    for model in (ServeSettings, Settings, MigrationSettings, MetricsSettings, UsageSettings, Security):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no docstring"
            if name in ("migration", "metrics", "usage", "security"):
                continue  # groups of their own, each field listed under its own variable
            assert f"`{env_name(model, name)}`" in text
            if extra(info).get("flag"):
                assert f"`{extra(info)['flag']}`" in text
    assert "README.md" not in text and "docs/configuration.md" in (ROOT / "README.md").read_text()
