"""Which database a command works on: the one named, or the embedded one only when asked for (--embedded); and a
URL that names no reachable server is one line saying which and why, exit 2."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from schema_service import embedded
from schema_service.__main__ import main
from servicekit.procs import BIN, free_port
from tests.tcpproxy import TcpProxy

ROOT = Path(__file__).resolve().parents[2]
NO_DATABASE = "no database given: set DATABASE_URL or pass --database-url URL"
COMMANDS = ["status", "migrate", "verify", "repair", "baseline --version 1", "serve --insecure-dev"]


@pytest.fixture(autouse=True)
def _in_a_fresh_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No DATABASE_URL, a folder of our own (where an embedded PostgreSQL would appear), and the root logger back
    as it was after main() pointed it at stderr."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a command printed to stderr (serve's JSON log lines aside)."""
    (line,) = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("{")]
    return line


@pytest.mark.parametrize("command", COMMANDS)
def test_without_a_url_a_command_says_so_and_starts_no_database(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DBA who forgot DATABASE_URL gets exit 2 and one line, not `version 0 ... pending` from a throwaway
    PostgreSQL started in the current folder."""
    assert main(command.split()) == 2
    line = one_line(capsys)
    assert NO_DATABASE in line and "--embedded" in line
    assert not (tmp_path / ".data").exists()


@pytest.mark.embedded_path
@pytest.mark.timeout(120)
def test_embedded_is_used_when_asked_for(tmp_path: Path) -> None:
    data_dir = ROOT / ".data" / "test-embedded"  # shared with test_embedded.py: initdb once per checkout
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [str(BIN / "schema-service"), "status", "--embedded", "--data-dir", str(data_dir)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("version ")


WITHOUT_PGSERVER = (
    "import sys; sys.modules['pgserver'] = None; from schema_service.__main__ import main; sys.exit(main())"
)


@pytest.mark.parametrize("command", ["status", "migrate", "serve --insecure-dev"])
def test_embedded_without_the_extra_is_one_line_naming_it(command: str, tmp_path: Path) -> None:
    """pgserver is the `embedded` extra, not in the image: --embedded without it says so, starts nothing."""
    argv = [sys.executable, "-c", WITHOUT_PGSERVER, *command.split(), "--embedded", "--data-dir", "pg"]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert line == f"schema-service: {embedded.NOT_INSTALLED}"
    assert "pip install 'llm-platform[embedded]'" in line
    assert not (tmp_path / "pg").exists()


def test_a_url_wins_over_embedded(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--embedded", "--database-url", "postgresql://u@127.0.0.1:1/x"]) == 2
    assert "cannot connect to PostgreSQL at 127.0.0.1:1, database 'x': Connection refused" in one_line(capsys)


MALFORMED = {
    "postgresql://u:pw-not-printed@127.0.0.1:abc/db": "host 127.0.0.1:abc: the port must be a number from 1 to 65535",
    "postgresql://u:pw-not-printed@127.0.0.1:99999/db": "host 127.0.0.1:99999: the port must be",
    "postgresql://u:pw-not-printed@h1:5432,h2:x/db": "host h2:x: the port must be",
    "postgresql://u:pw-not-printed@h1/db?port=5432,0": "port=0: the port must be",
    "postgresql://u:pw-not-printed@[::1/db": "has a malformed host: Invalid IPv6 URL",
    "postgresql://u:pw-not-printed@[zz::1]:5432/db": "has a malformed host: 'zz::1' does not appear to be an IPv4",
}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_malformed_url_is_one_line_naming_the_host(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Not a traceback from inside asyncpg (37-57 lines), nor under `serve` a readiness that never comes."""
    for url, words in MALFORMED.items():
        assert main([*command.split(), "--database-url", url]) == 2
        line = one_line(capsys)
        assert line.startswith("schema-service: Config 'database_url' (--database-url, env DATABASE_URL) ")
        assert words in line and "pw-not-printed" not in line, line


def test_a_host_that_does_not_resolve_says_so_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--database-url", "postgresql://u@no-such-host.invalid:5432/db"]) == 2
    line = one_line(capsys)
    assert line.startswith("schema-service status: cannot connect to PostgreSQL at no-such-host.invalid:5432")
    assert "Unknown error" not in line


async def _migrate(dsn: str, *flags: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(BIN / "schema-service"),
        "migrate",
        "--database-url",
        dsn,
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@pytest.mark.timeout(60)
async def test_migrate_waits_for_a_database_that_is_starting(empty_db: str) -> None:
    """The init container's case: PostgreSQL not listening yet. With --wait-for-database migrate says what it
    waits for, and applies the migrations once the server is there (here: once the proxy to it listens)."""
    proxy, through = await TcpProxy.for_database(empty_db)
    await proxy.cut()
    proc = await _migrate(through, "--wait-for-database", "--lock-wait", "50")
    assert proc.stdout is not None
    first = (await proc.stdout.readline()).decode()
    assert (
        first.startswith(f"waiting for PostgreSQL at 127.0.0.1:{proxy.port}, database ")
        and "Connection refused" in first
    )
    assert "s left of --lock-wait)" in first
    await proxy.restore()
    out, err = await proc.communicate()
    await proxy.cut()
    assert proc.returncode == 0, err
    assert out.decode().strip().endswith("applied")


@pytest.mark.timeout(60)
async def test_the_wait_ends_with_the_lock_wait_budget() -> None:
    proc = await _migrate(f"postgresql://u@127.0.0.1:{free_port()}/db", "--wait-for-database", "--lock-wait", "1")
    out, err = await proc.communicate()
    assert proc.returncode == 2 and out.decode().startswith("waiting for PostgreSQL at 127.0.0.1:")
    assert err.decode().count("\n") == 1 and "Connection refused" in err.decode()
