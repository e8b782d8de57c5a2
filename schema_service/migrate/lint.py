"""Lint migration files: Squawk (PyPI `squawk-cli`) plus our own rules, which Squawk cannot know.

Our rules (errors unless noted):
  transaction-control              BEGIN/COMMIT/ROLLBACK in a transactional file, also inside a PL/pgSQL
                                   DO block (the runner owns the transaction)
  non-transactional-statement      CONCURRENTLY, VACUUM and the like in a transactional file
  no-transaction-not-rerunnable    a statement of a no-transaction file that cannot safely run twice
  if-not-exists-assumes-columns    CREATE TABLE IF NOT EXISTS, then statements that rely on the table's columns
  unsafe-sql                       SQL that reaches outside the database (COPY ... PROGRAM, server files,
                                   large-object files, ALTER SYSTEM; see migrate/unsafe.py) without its
                                   `-- migrate: allow-unsafe <kind>` header line; with it, a warning
  invalid-file                     bad file name, unknown header directive or syntax error

Squawk runs with `--assume-in-transaction` on transactional files (see schema_service.migrate.squawk;
a missing or failing squawk raises SquawkMissing / SquawkFailed, FAILED_PRECONDITION). Left out on purpose:
require-lock-timeout / require-statement-timeout (the runner sets both for every file) and
prefer-bigint-over-int / -smallint (they flag every small counter; our keys are bigint or uuid).
Transactional files need no IF NOT EXISTS guards: they run once and are recorded, and drift is
caught by `verify`, not hidden by guards.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pglast
from pglast import ast, enums
from pglast.visitors import referenced_relations

from schema_service.config import FileFormat
from schema_service.migrate import reading
from schema_service.migrate.errors import MigrationFileError
from schema_service.migrate.files import MigrationFile, migration_paths, read_file
from schema_service.migrate.squawk import squawk_report, unreadable
from schema_service.migrate.statements import (
    Statement,
    is_transaction_control,
    line_column,
    non_transactional_reason,
    parse,
    sql_only,
    unsafe_message,
    unsafe_uses,
)

Severity = Literal["warning", "error"]


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    column: int
    rule: str
    message: str
    severity: Severity

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: [{self.rule}] {self.message}"


async def lint_dir(directory: Path, file_format: FileFormat = "native") -> list[Finding]:
    """All findings for the migration files of a directory, sorted by file and line."""
    findings: list[Finding] = []
    files: list[MigrationFile] = []
    for path in migration_paths(directory, file_format):
        try:
            files.append(read_file(path, file_format))
        except MigrationFileError as exc:
            findings.append(Finding(path.name, exc.line or 1, 1, "invalid-file", exc.message, "error"))
    for file in files:
        findings.extend(lint_file(file))
    findings.extend(await run_squawk([f for f in files if f.transactional], in_transaction=True))
    findings.extend(await run_squawk([f for f in files if not f.transactional], in_transaction=False))
    return sorted(findings, key=lambda f: (f.file, f.line, f.column, f.rule))


def lint_file(file: MigrationFile) -> list[Finding]:
    """Our rules for one file."""
    try:
        statements = parse(file)
    except MigrationFileError as exc:
        return [Finding(file.filename, exc.line or 1, exc.column or 1, "invalid-file", exc.message, "error")]
    found: list[Finding | None] = []
    for statement in statements:
        for rule, message, severity in _statement_rules(file, statement):
            line, column = line_column(file.sql, statement.start)
            found.append(Finding(file.filename, line, column, rule, message, severity))
    found.extend(_assumed_columns(file, statements))
    found.extend(_unsafe(file, statements))
    if file.transactional:
        found.extend(_transaction_control_in_do(file, statement) for statement in statements)
    return [finding for finding in found if finding is not None]


def _statement_rules(file: MigrationFile, statement: Statement) -> list[tuple[str, str, Severity]]:
    node = statement.node
    if file.transactional:
        if is_transaction_control(node):
            return [
                (
                    "transaction-control",
                    "transaction control in a transactional file: the runner wraps "
                    "the file in one transaction; remove it",
                    "error",
                )
            ]
        reason = non_transactional_reason(node)
        if reason:
            return [
                (
                    "non-transactional-statement",
                    f"{reason} cannot run inside a transaction: move it to a file with `-- migrate: no-transaction`",
                    "error",
                )
            ]
        return []
    verdict = rerunnable(node)
    if verdict is None:
        return []
    return [("no-transaction-not-rerunnable", verdict[0], verdict[1])]


def _unsafe(file: MigrationFile, statements: list[Statement]) -> list[Finding]:
    """Unsafe SQL: an error, as migrate refuses it; allowed by the header, still shown for review."""
    found = []
    for statement, use in unsafe_uses(statements):
        line, column = line_column(file.sql, statement.start)
        if use.kind in file.options.allowed_unsafe:
            message = f"{use.what} reaches outside the database, allowed by `-- migrate: allow-unsafe {use.kind}`"
            found.append(Finding(file.filename, line, column, "unsafe-sql", message, "warning"))
        else:
            found.append(Finding(file.filename, line, column, "unsafe-sql", unsafe_message(use), "error"))
    return found


_PLPGSQL_TXN = ("PLpgSQL_stmt_commit", "PLpgSQL_stmt_rollback")


def _transaction_control_in_do(file: MigrationFile, statement: Statement) -> Finding | None:
    """A COMMIT/ROLLBACK in a PL/pgSQL DO block of a transactional file, at its own line."""
    if not isinstance(statement.node, ast.DoStmt):
        return None
    try:
        tree = pglast.parse_plpgsql(statement.text)
    except pglast.Error:  # another language, or PL/pgSQL that PostgreSQL itself will report at migrate
        return None
    lines = sorted(_plpgsql_lines(tree, _PLPGSQL_TXN))
    if not lines:
        return None
    bodies = [arg.arg.sval for arg in statement.node.args or () if getattr(arg, "defname", "") == "as"]
    body_at = file.sql.find(bodies[0], statement.start) if bodies else -1
    line, column = line_column(file.sql, statement.start)
    if body_at >= 0:
        line, column = line_column(file.sql, body_at)[0] + lines[0] - 1, 1
    message = (
        "COMMIT/ROLLBACK inside a DO block ends the runner's transaction (2D000 invalid transaction "
        "termination at migrate): remove it, or move the block to a file with `-- migrate: no-transaction`"
    )
    return Finding(file.filename, line, column, "transaction-control", message, "error")


def _plpgsql_lines(tree: Any, kinds: tuple[str, ...]) -> Iterator[int]:
    """Line numbers of the PL/pgSQL statements of the given kinds anywhere in a parsed tree."""
    if isinstance(tree, list):
        for item in tree:
            yield from _plpgsql_lines(item, kinds)
    elif isinstance(tree, dict):
        for key, value in tree.items():
            if key in kinds and isinstance(value, dict):
                yield int(value.get("lineno", 1))
            yield from _plpgsql_lines(value, kinds)


def rerunnable(node: Any) -> tuple[str, Severity] | None:
    """None when running the statement twice is safe; else why not (a resumed file may repeat it)."""
    if isinstance(node, ast.IndexStmt):
        if not node.idxname:
            return "name the index: an unnamed index is built again on every rerun", "error"
        return None if node.if_not_exists else ("use CREATE INDEX ... IF NOT EXISTS", "error")
    if isinstance(node, ast.DropStmt):
        return None if node.missing_ok else ("use DROP ... IF EXISTS", "error")
    if isinstance(node, (ast.CreateStmt, ast.CreateSchemaStmt, ast.CreateExtensionStmt, ast.CreateSeqStmt)):
        return None if node.if_not_exists else ("use IF NOT EXISTS", "error")
    if isinstance(node, (ast.CreateFunctionStmt, ast.ViewStmt, ast.CreateTrigStmt)):
        return None if node.replace else ("use CREATE OR REPLACE", "error")
    if isinstance(node, ast.AlterTableStmt):
        return _alter_table_rerunnable(node)
    if isinstance(node, ast.AlterEnumStmt):
        return _alter_enum_rerunnable(node)
    if isinstance(node, ast.InsertStmt):
        conflict = node.onConflictClause
        nothing = conflict is not None and conflict.action == enums.OnConflictAction.ONCONFLICT_NOTHING
        return None if nothing else ("an INSERT runs twice on resume: add ON CONFLICT DO NOTHING", "error")
    if isinstance(node, (ast.DoStmt, ast.UpdateStmt, ast.DeleteStmt)):
        return "cannot prove this statement is re-runnable; make sure running it twice is harmless", "warning"
    if isinstance(node, _ALWAYS_RERUNNABLE):
        return None
    return f"{type(node).__name__} is not known to be re-runnable; move it to a transactional file", "error"


_ALWAYS_RERUNNABLE = (
    ast.VacuumStmt,
    ast.ReindexStmt,
    ast.ClusterStmt,
    ast.VariableSetStmt,
    ast.CheckPointStmt,
    ast.CommentStmt,
    ast.GrantStmt,
    ast.SelectStmt,
    ast.RefreshMatViewStmt,
)

_IDEMPOTENT_ALTERS = {
    enums.AlterTableType.AT_SetNotNull,
    enums.AlterTableType.AT_DropNotNull,
    enums.AlterTableType.AT_ColumnDefault,
    enums.AlterTableType.AT_AlterColumnType,
    enums.AlterTableType.AT_ValidateConstraint,
    enums.AlterTableType.AT_SetStatistics,
}


def _alter_enum_rerunnable(node: Any) -> tuple[str, Severity] | None:
    if node.oldVal is not None:
        return "ALTER TYPE ... RENAME VALUE fails once renamed; move it to a transactional file", "error"
    return None if node.skipIfNewValExists else ("use ALTER TYPE ... ADD VALUE IF NOT EXISTS", "error")


def _alter_table_rerunnable(node: Any) -> tuple[str, Severity] | None:
    for cmd in node.cmds or ():
        guarded = cmd.missing_ok and cmd.subtype in (
            enums.AlterTableType.AT_AddColumn,
            enums.AlterTableType.AT_DropColumn,
            enums.AlterTableType.AT_DropConstraint,
        )
        if not guarded and cmd.subtype not in _IDEMPOTENT_ALTERS:
            return f"ALTER TABLE {cmd.subtype.name} cannot run twice; guard it with IF [NOT] EXISTS or move it", "error"
    return None


def _assumed_columns(file: MigrationFile, statements: list[Statement]) -> list[Finding]:
    """CREATE TABLE IF NOT EXISTS skips silently when the table exists with other columns; later
    statements in the file that rely on the table then work on a table that may lack them."""
    found = []
    guarded: dict[str, Statement] = {}
    for statement in statements:
        node = statement.node
        if isinstance(node, ast.CreateStmt) and node.if_not_exists and node.relation and node.relation.relname:
            guarded[node.relation.relname] = statement
            continue
        if _only_adds_guarded_columns(node) or _needs_no_columns(node):
            continue
        for name in sorted(_relnames(statement) & guarded.keys()):
            line, column = line_column(file.sql, statement.start)
            message = (
                f"relies on the columns of {name}, created with IF NOT EXISTS at line "
                f"{line_column(file.sql, guarded[name].start)[0]}: an existing {name} with other columns "
                "is skipped silently; drop IF NOT EXISTS (the file runs once) or move this to another file"
            )
            found.append(Finding(file.filename, line, column, "if-not-exists-assumes-columns", message, "error"))
    return found


def _only_adds_guarded_columns(node: Any) -> bool:
    cmds = (node.cmds or ()) if isinstance(node, ast.AlterTableStmt) else ()
    return bool(cmds) and all(c.subtype == enums.AlterTableType.AT_AddColumn and c.missing_ok for c in cmds)


# ALTER TABLE commands that work on any table whatever its columns.
_COLUMN_FREE_ALTERS = {
    enums.AlterTableType.AT_EnableRowSecurity,
    enums.AlterTableType.AT_DisableRowSecurity,
    enums.AlterTableType.AT_ForceRowSecurity,
    enums.AlterTableType.AT_NoForceRowSecurity,
    enums.AlterTableType.AT_ChangeOwner,
    enums.AlterTableType.AT_SetRelOptions,
    enums.AlterTableType.AT_ResetRelOptions,
    enums.AlterTableType.AT_ReplaceRelOptions,
    enums.AlterTableType.AT_SetLogged,
    enums.AlterTableType.AT_SetUnLogged,
    enums.AlterTableType.AT_EnableTrig,
    enums.AlterTableType.AT_EnableAlwaysTrig,
    enums.AlterTableType.AT_EnableReplicaTrig,
    enums.AlterTableType.AT_EnableTrigAll,
    enums.AlterTableType.AT_EnableTrigUser,
    enums.AlterTableType.AT_DisableTrig,
    enums.AlterTableType.AT_DisableTrigAll,
    enums.AlterTableType.AT_DisableTrigUser,
}


def _needs_no_columns(node: Any) -> bool:
    """RLS switches, owner and storage options, and triggers without `UPDATE OF` or WHEN (which name
    columns) depend on no column of the table."""
    if isinstance(node, ast.AlterTableStmt):
        return bool(node.cmds) and all(c.subtype in _COLUMN_FREE_ALTERS for c in node.cmds or ())
    if isinstance(node, ast.CreateTrigStmt):
        return not node.columns and node.whenClause is None
    return False


# COMMENT ON COLUMN t.x / CONSTRAINT c ON t name the table in a list of strings, not a RangeVar,
# so pglast's referenced_relations() does not see them; the table is the next-to-last name.
_COMMENT_ON_TABLE_PARTS = {enums.ObjectType.OBJECT_COLUMN, enums.ObjectType.OBJECT_TABCONSTRAINT}


def _relnames(statement: Statement) -> set[str]:
    """Unqualified names of the tables a statement relies on."""
    node = statement.node
    if isinstance(node, ast.CommentStmt) and node.objtype in _COMMENT_ON_TABLE_PARTS:
        names = [getattr(part, "sval", "") for part in node.object or ()]
        return {names[-2]} if len(names) >= 2 else set()
    return {name.rsplit(".", 1)[-1] for name in referenced_relations(statement.text)}


async def run_squawk(files: list[MigrationFile], *, in_transaction: bool) -> list[Finding]:
    """Squawk's findings for the files, as warnings or errors by its level.

    Squawk reads SQL only: a file with psql parts (pg_dump's meta-commands and COPY rows) is given to
    it as a copy with those parts blanked, under the same name and with the same line numbers.
    """
    if not files:
        return []
    with tempfile.TemporaryDirectory(prefix="schema-lint-") as scratch:
        paths = [_squawk_path(file, Path(scratch)) for file in files]
        items = await squawk_report(paths, in_transaction=in_transaction)
    try:
        return [_squawk_finding(item) for item in items]
    except (KeyError, TypeError, ValueError) as exc:
        raise unreadable(None, str(items)[:500].encode()) from exc


def _squawk_path(file: MigrationFile, scratch: Path) -> Path:
    try:
        text = sql_only(file, parse(file))
    except MigrationFileError:  # reported by our rules; squawk reports its own view of it
        return file.path
    if text == reading.read_bounded(file.path).decode("utf-8"):
        return file.path
    copy = scratch / file.filename
    copy.write_text(text)
    return copy


def _squawk_finding(item: dict[str, Any]) -> Finding:
    message = item.get("message", "")
    if item.get("help"):
        message += f" ({item['help']})"
    severity: Severity = "error" if str(item.get("level", "")).lower() == "error" else "warning"
    # Squawk's JSON reporter counts lines and columns from 0.
    return Finding(
        Path(item["file"]).name,
        int(item["line"]) + 1,
        int(item["column"]) + 1,
        f"squawk:{item['rule_name']}",
        message,
        severity,
    )
