"""The commands of `schema-service` over the database: migrate, status, verify, lint, repair, baseline, usage.

Exit codes: 0 success, 1 the command found or hit a problem (failed migration, drift, lint
error, changed file), 2 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Coroutine
from dataclasses import asdict
from pathlib import Path
from typing import Any

from schema_service import database
from schema_service.config import MigrationSettings, Settings
from schema_service.drift.repair import RepairPlan
from schema_service.errors import SchemaServiceError
from schema_service.migrate.events import (
    Event,
    LockWaiting,
    MigrationFinished,
    MigrationStarted,
    PlanReady,
    StatementFinished,
)
from schema_service.usage.report import add_usage_args, usage_report
from servicekit.settings import add_flags, from_command_line

AddDatabaseArgs = Callable[[argparse.ArgumentParser], None]


def register(commands: Any, add_database_args: AddDatabaseArgs) -> None:
    """Add the migration subcommands to the `schema-service` parser."""
    migrate = commands.add_parser("migrate", help="apply pending migrations")
    add_database_args(migrate)
    migrate.add_argument("--target", type=int, metavar="VERSION", help="stop after this version (default: the newest)")
    migrate.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    timeouts = ("lock_timeout_s", "statement_timeout_s", "lock_wait_s")
    add_flags(migrate, MigrationSettings, ("allow_out_of_order", "wait_for_database", *timeouts))
    migrate.set_defaults(handler=_sync(_migrate))
    status = commands.add_parser("status", help="applied version, history, pending files, lock holder")
    add_database_args(status)
    status.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    status.set_defaults(handler=_sync(_status))
    verify = commands.add_parser("verify", help="diff the live schema against the migrations")
    add_database_args(verify)
    verify.add_argument("--json", action="store_true", help="print the differences as JSON instead of text")
    add_flags(verify, MigrationSettings, ("scratch_url",))
    verify.add_argument(
        "--ignore-grants",
        action="store_true",
        help="leave privileges out of the comparison (when other tools grant on the side)",
    )
    verify.add_argument(
        "--plan-repair", action="store_true", help="print the SQL that brings the database back to the migrations"
    )
    verify.add_argument(
        "--write",
        metavar="NNN_NAME.SQL",
        help="with --plan-repair: write the plan as this migration file in the migrations folder (indexes, built "
        "CONCURRENTLY, go to the next version's file); default: print it",
    )
    verify.set_defaults(handler=_sync(_verify))
    lint = commands.add_parser("lint", help="squawk and our rules over the migration files")
    add_flags(lint, MigrationSettings, ("migrations_dir", "file_format"))  # the files only: no database
    lint.add_argument("--json", action="store_true", help="print the findings as JSON instead of text")
    lint.set_defaults(handler=_sync(_lint))
    repair = commands.add_parser("repair", help="accept changed checksums, forget failed attempts")
    add_database_args(repair)
    repair.set_defaults(handler=_sync(_repair))
    baseline = commands.add_parser("baseline", help="adopt a database created by other means")
    add_database_args(baseline)
    baseline.add_argument("--version", type=int, required=True, help="record files up to this version as applied")
    baseline.set_defaults(handler=_sync(_baseline))
    imported = commands.add_parser(
        "import-history", help="take over dbmate's, golang-migrate's or Flyway's history (runs nothing)"
    )
    add_database_args(imported)
    imported.set_defaults(handler=_sync(_import_history))
    usage = commands.add_parser("usage", help="spend and tokens from the usage ledger, grouped, as a table")
    add_flags(
        usage, Settings, ("database_url", "embedded", "data_dir")
    )  # not the migration flags: --format is the output's
    add_usage_args(usage)
    usage.set_defaults(handler=_sync(_usage))


def _sync(
    command: Callable[[argparse.Namespace, Settings, str], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """Run an async command; domain errors print to stderr and exit 1, an unreachable database or a bad setting 2."""

    def run(args: argparse.Namespace) -> int:
        settings = from_command_line(Settings, args)
        dsn = ""

        async def main() -> int:
            nonlocal dsn
            if args.command != "lint":
                dsn = await database.resolve_dsn(settings)
            if settings.migration.wait_for_database and args.command == "migrate":
                await database.wait_until_reachable(dsn, settings.migration.lock_wait_s, _say)
            return await command(args, settings, dsn)

        try:
            return asyncio.run(main())
        except SchemaServiceError as exc:
            print(f"schema-service {args.command}: {exc.message}", file=sys.stderr)
            return 1
        except BrokenPipeError:  # an OSError too: before the database's
            return _reader_went_away()
        except database.DATABASE_FAILURES as exc:  # the connection itself: the commands map what the server refused
            print(f"schema-service {args.command}: cannot connect to {database.unreachable(dsn, exc)}", file=sys.stderr)
            return 2

    return run


def _say(line: str) -> None:
    print(line, flush=True)


def _reader_went_away() -> int:
    """stdout's reader closed early (`| head`): stop quietly, as `cat` does. stdout is pointed at
    /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a command killed by the closed pipe


async def _migrate(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from schema_service.migrate import RunOptions, migrate

    options = RunOptions(settings=settings.migration, target=args.target, dry_run=args.dry_run)
    async for event in migrate(dsn, options):
        print(progress_line(event), flush=True)
    return 0


def progress_line(event: Event) -> str:
    """One human line per event: file, statement k of n, duration."""
    if isinstance(event, PlanReady):
        lines = [f"at version {event.current_version}; {len(event.items)} pending"]
        lines += [
            f"  {i.version} {i.name} sha256:{i.checksum[:12]} "
            f"{'transactional' if i.transactional else 'no-transaction'}, {i.statement_count} statements"
            for i in event.items
        ]
        return "\n".join(lines)
    if isinstance(event, LockWaiting):
        holder = event.holder
        who = f"{holder.application_name} (pid {holder.backend_pid}, {holder.client_addr})" if holder else "unknown"
        return f"waiting for the migration lock held by {who}"
    if isinstance(event, MigrationStarted):
        mode = "in one transaction" if event.transactional else "no transaction"
        return f"applying {event.filename} ({event.statement_count} statements, {mode})"
    if isinstance(event, StatementFinished):
        state = "skipped (finished by an earlier run)" if event.resumed else f"done in {event.duration_s:.3f} s"
        return f"  statement {event.index} of {event.count} {state}"
    if isinstance(event, MigrationFinished):
        return f"applied {event.filename} in {event.duration_s:.3f} s"
    return f"done: at version {event.current_version}, {event.applied_count} applied"


async def _status(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from schema_service.migrate.ops import status

    report = await status(dsn, settings.migration)
    if args.json:
        print(json.dumps(asdict(report), default=str, indent=2))
        return 1 if report.problems else 0
    print(f"version {report.current_version}")
    for row in report.applied:
        state = "ok" if row.success else "FAILED"
        print(
            f"  {row.version} {row.name} {state} {row.applied_at:%Y-%m-%d %H:%M:%S} "
            f"{row.execution_ms} ms by {row.applied_by}"
        )
    for item in report.pending:
        print(f"  {item.version} {item.name} pending")
    if report.lock_holder:
        print(f"lock held by {report.lock_holder.application_name} (pid {report.lock_holder.backend_pid})")
    for problem in report.problems:
        print(f"problem: {problem}")
    return 1 if report.problems else 0


async def _verify(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from schema_service.drift.verify import verification

    scratch_url = settings.migration.scratch_dsn
    report = await verification(
        dsn, settings.migration, scratch_url=scratch_url, grants=not args.ignore_grants, plan_repair=args.plan_repair
    )
    differences = report.differences
    if report.repair is not None:
        return _repair_plan(args, settings.migration.migrations_dir, report.repair)
    if args.json:
        print(
            json.dumps(
                {
                    "matches": not differences,
                    "differences": [asdict(d) for d in differences],
                    "scratch_settings": report.settings,
                },
                indent=2,
            )
        )
        return 1 if differences else 0
    if report.settings:
        print(f"scratch database built with the live database's settings: {'; '.join(report.settings)}")
    for difference in differences:
        print(difference)
    print("schema matches the migrations" if not differences else f"{len(differences)} differences")
    return 1 if differences else 0


def _repair_plan(args: argparse.Namespace, migrations_dir: Path, repair: RepairPlan) -> int:
    """Print the plan, or write it as the next migration file(s); exit 1 when there was drift."""
    files = {"transactional": repair.transactional_sql()}
    if repair.concurrent:
        files["no-transaction"] = repair.concurrent_sql()
    if not args.write:
        print("\n".join(files.values()), end="")
        return 1 if repair.statements or repair.concurrent or repair.decide else 0
    first = migrations_dir / Path(args.write).name
    match = re.match(r"^(\d+)_(.+)\.sql$", first.name)
    if match is None:
        print(f"schema-service verify: --write {args.write}: name it <version>_<description>.sql", file=sys.stderr)
        return 2
    paths = [first]
    if repair.concurrent:
        paths.append(first.with_name(f"{int(match[1]) + 1:0{len(match[1])}d}_{match[2]}_indexes.sql"))
    for path in paths:
        if path.exists():
            print(f"schema-service verify: --write: {path} exists already", file=sys.stderr)
            return 2
    for path, text in zip(paths, files.values(), strict=True):
        path.write_text(text)
        print(f"wrote {path}")
    return 0


async def _lint(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from schema_service.migrate.lint import lint_dir

    findings = await lint_dir(settings.migration.migrations_dir, settings.migration.file_format)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding)
    return 1 if any(f.severity == "error" for f in findings) else 0


async def _repair(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from schema_service.migrate.ops import repair

    actions = await repair(dsn, settings.migration)
    for action in actions:
        print(action)
    print("nothing to repair" if not actions else f"{len(actions)} repaired")
    return 0


async def _baseline(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from schema_service.migrate.ops import baseline

    files = await baseline(dsn, settings.migration, args.version)
    for file in files:
        print(f"recorded {file.filename} as applied")
    print(f"baselined at version {args.version}")
    return 0


async def _import_history(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    from schema_service.migrate.imported import import_history

    imported = await import_history(dsn, settings.migration)
    for file in imported.files:
        print(f"recorded {file.filename} as applied")
    print(f"imported {len(imported.files)} applied versions from {imported.source}")
    return 0


async def _usage(args: argparse.Namespace, settings: Settings, dsn: str) -> int:
    pool = await database.create_pool(dsn)
    try:
        print(await usage_report(pool, args, settings.usage))
    finally:
        await pool.close()
    return 0
