"""Which database a command works on: the one named, or the embedded one only when asked for (--embedded)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from servicekit.procs import BIN

ROOT = Path(__file__).resolve().parents[2]
NO_DATABASE = "no database given: set DATABASE_URL or pass --database-url URL"


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [str(BIN / "schema-service"), *args]
    return subprocess.run(command, cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["status", "migrate", "verify", "repair", "baseline --version 1", "serve"])
def test_without_a_url_a_command_says_so_and_starts_no_database(command: str, tmp_path: Path) -> None:
    """A DBA who forgot DATABASE_URL gets exit 2 and one line, not `version 0 ... pending` from a throwaway
    PostgreSQL started in the current folder."""
    args = [*command.split(), *(["--insecure-dev"] if command == "serve" else [])]
    done = run(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if not line.startswith("{")]  # serve's JSON: its warning
    assert NO_DATABASE in line and "--embedded" in line
    assert not (tmp_path / ".data").exists()


@pytest.mark.embedded_path
@pytest.mark.timeout(120)
def test_embedded_is_used_when_asked_for(tmp_path: Path) -> None:
    data_dir = ROOT / ".data" / "test-embedded"  # shared with test_embedded.py: initdb once per checkout
    done = run("status", "--embedded", "--data-dir", str(data_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("version ")
    ignored = run("status", "--embedded", "--database-url", "postgresql://u@127.0.0.1:1/x", cwd=tmp_path)
    assert ignored.returncode == 2 and "127.0.0.1:1, database 'x'" in ignored.stderr  # a URL wins
