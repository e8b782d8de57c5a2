"""The plan: which files are pending, given the files and the history; problems found before anything runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from schema_service.migrate.errors import ChecksumMismatch, OutOfOrder
from schema_service.migrate.files import MigrationFile
from schema_service.migrate.history import HistoryRow, current_version


@dataclass(frozen=True)
class Plan:
    current_version: int
    pending: list[MigrationFile]
    problems: list[str] = field(default_factory=list)
    mismatches: list[ChecksumMismatch] = field(default_factory=list)
    out_of_order: list[MigrationFile] = field(default_factory=list)


def mismatch(file: MigrationFile, row: HistoryRow) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{file.filename} was changed after it was applied: checksum recorded {row.checksum}, file now "
        f"{file.checksum}; restore it, or run `schema-service repair` to accept the new checksum",
        filename=file.filename,
        extra={"recorded_checksum": row.checksum, "file_checksum": file.checksum},
    )


def build_plan(
    files: list[MigrationFile], rows: list[HistoryRow], *, target: int | None = None, allow_out_of_order: bool = False
) -> Plan:
    applied = {row.version: row for row in rows if row.success}
    current = current_version(rows)
    problems: list[str] = []
    mismatches = [
        mismatch(f, applied[f.version])
        for f in files
        if f.version in applied and applied[f.version].checksum != f.checksum
    ]
    problems.extend(m.message for m in mismatches)
    known = {f.version for f in files}
    problems.extend(
        f"version {v} ({applied[v].name}) is recorded as applied but has no file" for v in applied if v not in known
    )
    problems.extend(
        f"version {row.version} ({row.name}) failed at {row.applied_at:%Y-%m-%d %H:%M:%S}: "
        f"{(row.error or '').splitlines()[0] if row.error else 'unknown error'}"
        for row in rows
        if not row.success
    )
    pending = [f for f in files if f.version not in applied and (target is None or f.version <= target)]
    late = [f for f in pending if f.version < current]
    problems.extend(
        f"gap: {f.filename} is not applied but the applied version is {current}"
        + ("" if allow_out_of_order else " (refused without --allow-out-of-order)")
        for f in late
    )
    return Plan(current, pending, problems, mismatches, [] if allow_out_of_order else late)


def refuse_unsafe(plan: Plan) -> None:
    """Raise the first reason not to run anything: a changed applied file, or a file out of order."""
    if plan.mismatches:
        raise plan.mismatches[0]
    if plan.out_of_order:
        first = plan.out_of_order[0]
        raise OutOfOrder(
            f"{first.filename} (version {first.version}) is older than the applied version "
            f"{plan.current_version}; run with --allow-out-of-order to apply it anyway",
            filename=first.filename,
        )
