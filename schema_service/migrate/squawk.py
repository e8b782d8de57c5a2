"""Running Squawk (PyPI `squawk-cli`) for `lint`: finding the binary and reading its JSON report.

Without a readable report lint would pass files unchecked, so a missing or failing squawk is an
error (FAILED_PRECONDITION: the deployment lacks a working squawk), never an empty result.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from schema_service.errors import MigrationError

SQUAWK_ENV = "SCHEMA_SERVICE_SQUAWK"
# The runner sets lock_timeout and statement_timeout for every file; the bigint rules flag every
# small counter (our keys are bigint or uuid).
SQUAWK_EXCLUDED = (
    "require-lock-timeout",
    "require-statement-timeout",
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
)


class SquawkMissing(MigrationError):
    """The squawk binary is not installed."""

    reason = "SQUAWK_MISSING"


class SquawkFailed(MigrationError):
    """Squawk could not start or gave no readable report."""

    reason = "SQUAWK_FAILED"


def squawk_binary() -> str:
    """`SCHEMA_SERVICE_SQUAWK` if set, else squawk next to this Python, else on PATH."""
    configured = os.environ.get(SQUAWK_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise SquawkMissing(f"squawk not found at {SQUAWK_ENV}={configured}")
        return configured
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if found is None:
        raise SquawkMissing("squawk not found: pip install squawk-cli")
    return found


async def squawk_report(paths: list[Path], *, in_transaction: bool) -> list[dict[str, Any]]:
    """Squawk's JSON report items for the files (lines and columns counted from 0)."""
    args = [squawk_binary(), "--reporter", "json", "--exclude", ",".join(SQUAWK_EXCLUDED)]
    if in_transaction:
        args.append("--assume-in-transaction")
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, *map(str, paths), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
    except OSError as exc:
        raise SquawkFailed(f"squawk could not be started ({args[0]}): {exc}") from exc
    out, err = await proc.communicate()
    try:
        # Squawk exits 1 when it finds something, so only its report tells success from failure.
        items = json.loads(out)
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise unreadable(proc.returncode, err or out)
    return items


def unreadable(returncode: int | None, output: bytes) -> SquawkFailed:
    detail = output.decode(errors="replace").strip()[:500]
    return SquawkFailed(f"squawk gave no readable report (exit {returncode}): {detail}")
